"""A real gunicorn whose broker or Redis is refused or hung: requests still answer, and what a sale
decided reaches the factory once the broker is back (the outbox sweep)."""

import json
import urllib.error
import urllib.request

import pytest

from factory import services as factory_services
from inventory.models import Product, Restock
from testsupport.data import make_api_client, make_product
from testsupport.processes import HungServer, System, closed_port_url, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Well under gunicorn's 30 s worker timeout, after which the client would get a 500 for a committed
# sale: the bound on the client's patience, not a performance threshold.
CLIENT_WAIT_SECONDS = 20


@pytest.fixture(scope="module")
def system(django_db_setup, django_db_blocker):
    from celery import current_app

    running = System(broker_url=current_app.conf.broker_url)
    running.flush_broker()
    try:
        running.start_factory("--production-seconds", "1", "--seed", "7")
        running.start_worker()
        yield running
    finally:
        running.stop()


def web_with(system, **env):
    """(Re)start the web server with these variables changed; the worker keeps the real broker."""
    saved = dict(system.env)
    system.env.update(env)
    try:
        return system.start_web()
    finally:
        system.env.clear()
        system.env.update(saved)


def call(system, key, path, body=None):
    request = urllib.request.Request(  # noqa: S310 - local
        system.web_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_WAIT_SECONDS) as response:  # noqa: S310 - local
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("broker", ["refused", "hung"])
def test_a_sale_selling_out_three_skus_answers_while_the_broker_is_away_and_its_restocks_arrive_after(
    system, broker, settings
):
    skus = ["OUTAGE-A", "OUTAGE-B", "OUTAGE-C"]
    for sku in skus:
        make_product(sku, on_hand=1, reorder_point=0, reorder_quantity=10)
    _, key = make_api_client()

    with HungServer() as hung:
        web_with(system, CELERY_BROKER_URL=hung.url() if broker == "hung" else closed_port_url())
        status, body = call(system, key, "/api/v1/sales/", {"items": [{"sku": sku, "quantity": 1} for sku in skus]})
        refused_status, refused = call(system, key, "/api/v1/sales/", {"items": [{"sku": skus[0], "quantity": 1}]})

    assert status == 201, body
    assert [line["sku"] for line in body["lines"]] == skus
    assert refused_status == 409 and refused["code"] == "out_of_stock"
    assert set(Product.objects.filter(sku__in=skus).values_list("on_hand", flat=True)) == {0}
    restocks = list(Restock.objects.filter(product__sku__in=skus).order_by("pk"))
    assert [(r.product.sku, r.status) for r in restocks] == [(sku, "pending") for sku in skus]

    # The broker is back (the worker never lost it): the sweep sends what the web could not.
    web_with(system)
    settings.OUTBOX_RESEND_AFTER_SECONDS = 0
    factory_services.reconcile()

    def ordered_once():
        orders = system.factory_get("/_sim/orders")["results"]
        counts = [sum(o["reference"] == r.reference for o in orders) for r in restocks]
        return counts if counts == [1, 1, 1] else None

    wait_until(ordered_once, timeout=60, what="one factory order per restock")

    def all_placed():  # the worker records the factory's answer a moment after the factory has the order
        return not Restock.objects.filter(pk__in=[r.pk for r in restocks], status="pending").exists()

    wait_until(all_placed, timeout=30, what="every restock placed")
    assert ordered_once() == [1, 1, 1]  # and still one order each


def test_with_redis_hung_authenticated_requests_still_answer(system):
    make_product("HUNG-REDIS", on_hand=5)
    _, key = make_api_client()

    with HungServer() as hung:
        web_with(system, REDIS_URL=hung.url())
        listed = call(system, key, "/api/v1/restocks/")
        sold = call(system, key, "/api/v1/sales/", {"items": [{"sku": "HUNG-REDIS", "quantity": 1}]})
        listed_again = call(system, key, "/api/v1/restocks/")
    web_with(system)

    assert listed[0] == 200 and listed_again[0] == 200
    assert sold[0] == 201, sold
    assert Product.objects.get(sku="HUNG-REDIS").on_hand == 4
