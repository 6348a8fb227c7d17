"""Refused callbacks are counted per window: one alert each window, carrying the previous window's count."""

import types
from datetime import UTC, datetime

import pytest
import redis
from django.conf import settings

from factory import refusals
from notifications.models import Alert

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_counters():
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


def at(monkeypatch, seconds):
    monkeypatch.setattr(refusals, "time", types.SimpleNamespace(time=lambda: seconds))


def test_one_alert_per_window_and_the_next_one_counts_the_last(monkeypatch):
    window = settings.CALLBACK_REFUSAL_WINDOW_SECONDS
    start = 1_000 * window
    at(monkeypatch, start)
    for n in range(7):
        refusals.callback_refused(problem="missing signature headers", address=f"192.0.2.{n}")

    assert Alert.objects.filter(kind="forged_callback").count() == 1
    # The window is a clock-aligned bucket: the alert says when it ends, not "the next 300 s".
    end = datetime.fromtimestamp(start + window, tz=UTC).strftime("%H:%M:%S UTC")
    assert f"Further refusals until {end} are counted" in Alert.objects.get(kind="forged_callback").text

    at(monkeypatch, start + window)
    refusals.callback_refused(problem="signature does not match", address="192.0.2.1")

    alerts = list(Alert.objects.filter(kind="forged_callback").order_by("pk"))
    assert len(alerts) == 2
    assert alerts[1].context["refused_in_previous_window"] == 7
    assert "7 callback(s) were refused" in alerts[1].text


def test_an_address_over_its_refusals_is_throttled_and_others_are_not():
    for _ in range(settings.CALLBACK_REFUSALS_PER_ADDRESS):
        refusals.callback_refusals_check("192.0.2.1")
        refusals.callback_refused(problem="missing signature headers", address="192.0.2.1")

    with pytest.raises(refusals.CallbackRefusalsThrottled) as refused:
        refusals.callback_refusals_check("192.0.2.1")
    refusals.callback_refusals_check("192.0.2.2")
    assert int(refused.value.headers["Retry-After"]) <= settings.CALLBACK_REFUSAL_WINDOW_SECONDS
