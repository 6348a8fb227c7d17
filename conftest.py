from types import SimpleNamespace

import pytest
import redis

from testsupport.data import make_api_client


def pytest_configure(config):
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.mysql":
        raise pytest.UsageError(
            f"Tests need MariaDB/MySQL (row locks do nothing on {engine}); run `make test` or set DATABASE_URL."
        )


@pytest.fixture
def api_client_and_key(db):
    return make_api_client()


@pytest.fixture
def client_app(api_client_and_key):
    """A DRF test client authenticated as an API client."""
    from rest_framework.test import APIClient

    client, key = api_client_and_key
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    http.api_client = client
    return http


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Per-process caches (SKU ids, API keys, throttle tokens, open circuit breakers) must not leak
    between tests whose rows were rolled back, nor the sweeps' last runs in Redis (an earlier test's
    factory.reconcile, minutes old, would page ops from the next notifications sweep), nor the
    per-address counters in Redis (every test's requests come from 127.0.0.1: callbacks refused by
    earlier tests would have this one's answered 429, depending on the order the tests ran in), nor the
    sale counts an earlier test left waiting in this process (the flusher thread would send them to
    whatever Redis this test points at, a hung one included, racing this test's requests to trip the
    redis breaker), nor the notification channels' adapters, pauses and outages (an adapter built for an
    earlier test's stand-in, or a channel it left paused, kept this test's alerts from Slack and FCM), nor
    /metrics' record of what it could not read (an earlier test's outage left open, this test's first failed
    read was taken for the same outage and logged nothing)."""
    from django.conf import settings

    from clients import auth, throttles
    from donutsite import dependencies, ratelimit, sale_counters, sweeps
    from inventory import selectors, services
    from notifications.channels import registry
    from ops import metrics

    selectors.forget_product_ids()
    services._short_products.clear()
    auth._cache.clear()
    throttles._batches.clear()
    for breaker in dependencies.breakers.values():
        breaker.close()
    sale_counters.counters_flush()
    redis.Redis.from_url(settings.REDIS_URL).delete(sweeps._key())
    ratelimit.forget_matching("*")
    registry.channels_forget()
    metrics._unreadable.clear()
    yield


@pytest.fixture
def queues():
    """The test broker's `factory` and `dead_letter` queues, empty before and after each test; yields a
    reader of the (task, args) waiting in one of them, oldest first."""
    from testsupport.queues import clear_queues, queued

    clear_queues()
    yield queued
    clear_queues()


@pytest.fixture
def broker_down():
    """Point the Celery app at a port where nothing listens, as if Redis were down."""

    import kombu.pools
    from celery import current_app

    def use(url):
        # broker_write_url, not broker_url: Celery lets the CELERY_BROKER_URL variable win over the latter.
        current_app.conf.broker_write_url = url
        current_app._pool = None  # Celery caches its connection and producer pools: drop both
        current_app.amqp._producer_pool = None
        kombu.pools.reset()

    use("redis://127.0.0.1:9/0")  # the discard port: nothing listens there
    yield SimpleNamespace(back=lambda: use(None))
    use(None)
