"""make run keeps the factory simulator's orders across restarts (var/factory-simulator.json); a new database
beside that file must not inherit them: its restocks are numbered from 1 again, and the simulator answered
`restock-1` with the old database's order (a 200 for an order long finished, or a 409 that dead-lettered it)."""

import json
import urllib.request

import pytest
from django.core.management import call_command

from factory.simulator import LegacyFactory
from inventory.models import Restock
from testsupport.data import make_product

pytestmark = pytest.mark.django_db


@pytest.fixture
def state(tmp_path):
    """A state file holding one order for `restock-1`, as an earlier make run on another database left it."""
    path = tmp_path / "factory-simulator.json"
    factory = LegacyFactory(state_file=path, log=None)
    url = factory.start()
    try:
        body = json.dumps(
            {"reference": "restock-1", "sku": "GLAZED", "quantity": 10, "callback_url": "http://127.0.0.1:9/cb"}
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - the local simulator
            f"{url}/v1/orders",
            data=body,
            headers={"Content-Type": "application/json", "X-Factory-Key": factory.api_key},
        )
        assert urllib.request.urlopen(request, timeout=5).status == 202  # noqa: S310
    finally:
        factory.stop()
    return path


def test_a_database_with_no_restock_sets_the_simulators_orders_aside(state, capsys):
    call_command("simulator_state_for_database", str(state))

    assert not state.exists(), "the next simulator starts with no orders"
    [aside] = state.parent.glob("factory-simulator.*.json")
    assert len(json.loads(aside.read_text())["orders"]) == 1, "kept aside, not deleted"
    assert "set aside" in capsys.readouterr().out


def test_a_database_with_restocks_keeps_them(state):
    Restock.objects.create(product=make_product("GLAZED", on_hand=0), quantity=10, reason="shortage")

    call_command("simulator_state_for_database", str(state))

    assert len(json.loads(state.read_text())["orders"]) == 1


def test_no_state_file_is_nothing_to_do(tmp_path):
    call_command("simulator_state_for_database", str(tmp_path / "factory-simulator.json"))

    assert list(tmp_path.iterdir()) == []
