"""A database that does not answer gives a quick 503 with Retry-After, never a 500: on the API (the DRF
handler) and on plain Django views (DatabaseUnavailableMiddleware). Other errors still answer 500."""

import runpy
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import path

from inventory.models import Product
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def database_down():
    """This thread's connection points at a port where nothing listens (connection refused at once)."""
    default = connections["default"]
    saved = {key: default.settings_dict[key] for key in ("HOST", "PORT")}
    default.close()
    default.settings_dict.update(HOST="127.0.0.1", PORT=9)
    try:
        yield
    finally:
        default.close()
        default.settings_dict.update(saved)


@contextmanager
def database_hung(*, read_timeout: float):
    """This thread's connection goes through a proxy to the database that, once the returned event is set,
    passes no more bytes either way: a server that is up and does not answer (hung, or the network
    dropping packets), not one that refuses. `read_timeout` scales the settings' bound down for the test."""
    default = connections["default"]
    saved = {key: default.settings_dict[key] for key in ("HOST", "PORT", "OPTIONS")}
    upstream = (saved["HOST"] or "127.0.0.1", int(saved["PORT"] or 3306))
    listener = socket.create_server(("127.0.0.1", 0))
    hung, closing, sockets = threading.Event(), threading.Event(), []

    def pipe(source, target):
        try:
            while data := source.recv(65536):
                while hung.is_set() and not closing.is_set():
                    time.sleep(0.02)
                target.sendall(data)
        except OSError:
            pass

    def serve():
        while not closing.is_set():
            try:
                near, _ = listener.accept()
            except OSError:
                return
            far = socket.create_connection(upstream)
            sockets.extend((near, far))
            threading.Thread(target=pipe, args=(near, far), daemon=True).start()
            threading.Thread(target=pipe, args=(far, near), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    default.close()
    options = dict(saved["OPTIONS"])
    bound = {name: min(options[name], read_timeout) for name in ("read_timeout", "write_timeout")}
    options.update(bound)
    default.settings_dict.update(HOST="127.0.0.1", PORT=listener.getsockname()[1], OPTIONS=options)
    try:
        default.ensure_connection()
        yield hung
    finally:
        closing.set()
        listener.close()
        for sock in sockets:
            sock.close()
        default.close()
        default.settings_dict.update(saved)


def product_count(request):
    return JsonResponse({"products": Product.objects.count()})


def broken(request):
    raise RuntimeError("a bug, not an outage")


urlpatterns = [path("count", product_count), path("broken", broken)]


def sell(client, key, idempotency_key="k-1"):
    return client.post(
        "/api/v1/sales/",
        {"items": [{"sku": "GLAZED", "quantity": 1}]},
        content_type="application/json",
        headers={"Authorization": f"Api-Key {key}", "Idempotency-Key": idempotency_key},
    )


@contextmanager
def database_hung_now():
    """database_hung, hung from the start, with its bound scaled down to 1 s."""
    with database_hung(read_timeout=1) as hung:
        hung.set()
        yield


@pytest.mark.parametrize("outage", [database_down, database_hung_now], ids=["refused", "hung"])
def test_a_sale_while_the_database_is_away_is_a_quick_503_and_the_same_key_then_sells_once(outage):
    """Refused, or up and silent (without a read timeout, a query on an open connection waits for ever and
    gunicorn kills the worker at 30 s with no answer): a 503 with Retry-After within the bound."""
    make_product("GLAZED", on_hand=5)
    _, key = make_api_client()
    client = Client(raise_request_exception=False)

    with outage():
        started = time.monotonic()
        response = sell(client, key)
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"
    assert elapsed < 3
    # Back up: the same key sells once.
    assert sell(client, key).status_code == 201
    assert Product.objects.get(sku="GLAZED").on_hand == 4


def test_the_database_connection_waits_for_an_answer_within_a_bound_below_gunicorns_timeout():
    options = connections["default"].settings_dict["OPTIONS"]
    assert options["read_timeout"] == options["write_timeout"] == settings.DATABASE_READ_TIMEOUT_SECONDS == 10
    gunicorn = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))  # the production server's settings
    assert options["read_timeout"] + options["connect_timeout"] < gunicorn["timeout"]


def test_the_admin_while_the_database_is_down_is_a_503_not_a_500(admin_user):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)

    with database_down():
        response = client.get("/admin/")

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"


@override_settings(ROOT_URLCONF=__name__)
def test_the_middleware_maps_database_errors_only():
    client = Client(raise_request_exception=False)
    assert client.get("/count").json() == {"products": 0}

    with database_down():
        assert client.get("/count").status_code == 503

    assert client.get("/broken").status_code == 500
