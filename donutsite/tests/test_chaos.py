"""Chaos: the whole system under load while things break, then the invariants (testsupport.chaos).

Real processes throughout: gunicorn, Celery workers and beat, the legacy-factory simulator, MariaDB and
Redis. Scenarios that kill Redis or MariaDB kill private servers of their own. Each scenario writes its
figures to test-output/chaos/<scenario>.json and prints them; `make chaos` runs them CHAOS_SCALE=5 times
bigger. docs/reliability.md has the latest figures and what each scenario proves.
"""

import os
import signal
import time
from collections import Counter

import pytest
from django.db import connection, connections
from django.utils import timezone

from testsupport.chaos import (
    SCALE,
    ChaosSystem,
    Load,
    MariaDbServer,
    RedisServer,
    catalogue_make,
    check_invariants,
    compose_worker_args,
    database_swapped,
    logs_dir,
    production_unreceived,
    record,
    scaled,
    settle,
)
from testsupport.processes import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

LOGS = logs_dir()
ALWAYS = {201, 409, "cut"}  # "cut": the client itself dropped the connection before the answer

FLAWLESS = {
    "error_rate": 0.0,
    "error_after_create_rate": 0.0,
    "rate_limit_rate": 0.0,
    "hang_rate": 0.0,
    "latency_ms": [0, 0],
    "callback_loss_rate": 0.0,
    "duplicate_callback_rate": 0.0,
    "partial_rate": 0.0,
    "cancel_rate": 0.0,
    "production_seconds": 1.0,
    "callback_retry_base_seconds": 0.5,
}


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer(LOGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def system(django_db_setup, django_db_blocker, redis_server):
    running = ChaosSystem(redis_server, log_dir=LOGS)
    try:
        running.start_factory("--seed", "1")
        running.ensure(webs=1, workers=2)
        yield running
    finally:
        running.stop()


class Shop:
    """One scenario: its catalogue, its clock, its own figures and expectations, and the common end:
    settle, check the invariants, record every figure, then fail on any violation."""

    def __init__(self, name: str, system: ChaosSystem, catalogue):
        self.name, self.system, self.catalogue = name, system, catalogue
        self.started = time.monotonic()
        self.figures: dict = {}
        self.problems: list[str] = []

    def expect(self, condition, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    def finish(self, load: Load, *, allowed=ALWAYS, settle_timeout: float = 90, then=None) -> dict:
        """`then()` runs once the system settled, for the scenario's own figures and expectations."""
        load.wait()
        # Settled also means what the factory finished has been received (a lost callback: the sweep polls).
        settled = settle(
            timeout=settle_timeout,
            also=lambda: not production_unreceived(self.system.factory_get("/_sim/orders")["results"]),
        )
        figures, violations = check_invariants(
            load,
            self.catalogue,
            factory_orders=self.system.factory_get("/_sim/orders")["results"],
            allowed_answers=allowed,
            settle_seconds=settled,
        )
        if then is not None:
            then()
        violations += self.problems
        figures = {
            "scenario": self.name,
            "scale": SCALE,
            **self.figures,
            **figures,
            "violations": violations,
            "factory_simulator": self.system.factory_get("/_sim/stats"),
            "scenario_seconds": round(time.monotonic() - self.started, 1),
        }
        record(self.name, figures)
        assert not violations, "\n".join(violations)
        return figures


def shop_open(name, system, seed, **catalogue):
    """A scenario's fresh start: no messages left from the last one, a new simulator, the usual processes."""
    system.forget_stopped()
    system.redis.forget_messages()
    system.start_factory("--seed", str(seed))
    system.factory_configure(**FLAWLESS)
    system.ensure(webs=1, workers=2)
    return Shop(name, system, catalogue_make(name[:2].upper() + str(seed), seed=seed, **catalogue))


def test_load_with_a_flaky_factory(system):
    shop = shop_open("load", system, seed=1)
    system.factory_configure(
        error_rate=0.2,
        error_after_create_rate=0.3,
        rate_limit_rate=0.1,
        latency_ms=[20, 300],
        callback_loss_rate=0.2,
        duplicate_callback_rate=0.2,
        partial_rate=0.1,
        cancel_rate=0.05,
    )
    load = Load(system.web_url, shop.catalogue, purchases=scaled(400), threads=16, seed=1).start()

    figures = shop.finish(load)

    assert figures["sales"] > 0 and figures["out_of_stock_409"] > 0 and figures["restocks_by_state"].get("fulfilled")


def test_workers_sigkilled_during_factory_calls(system):
    from inventory.models import Restock

    shop = shop_open("worker_sigkill", system, seed=2)
    system.factory_configure(latency_ms=[700, 1500])
    load = Load(system.web_url, shop.catalogue, purchases=scaled(200), duration=10 * SCALE, seed=2).start()

    def calls_in_flight():
        return Restock.objects.filter(status="pending", factory_order__claimed_at__isnull=False).count()

    kills = []
    for n in range(scaled(4)):
        wait_until(lambda: calls_in_flight() or load.done, timeout=30, what="a factory call in flight")
        in_flight = calls_in_flight()
        if not in_flight:
            break  # the load is over and nothing is in flight any more
        victim = system.running("worker-")[0]
        if n % 2 == 0:  # the whole worker, main process and pool, as the OOM killer or a lost node would
            system.processes[victim].kill(signal.SIGKILL)
            system.forget_stopped()
            system.start_worker_process()
            kills.append({"killed": "worker", "calls_in_flight": in_flight})
        else:  # only the pool processes: the main process notices and requeues their tasks at once
            children = system.pool_children(victim)
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            kills.append({"killed": f"{len(children)} pool processes", "calls_in_flight": in_flight})
        time.sleep(1)
    load.wait()
    system.factory_configure(latency_ms=[0, 0])
    shop.figures["kills"] = kills
    shop.expect(kills, "no worker was killed during a factory call")

    shop.finish(load)


def test_redis_restarted_mid_load(system, redis_server):
    from inventory.models import Restock

    shop = shop_open("redis_restart", system, seed=3)
    system.factory_configure(latency_ms=[300, 1000], error_rate=0.2)  # retries wait in Redis too
    load = Load(system.web_url, shop.catalogue, purchases=scaled(300), duration=8 * SCALE, seed=3).start()

    with system.supervised() as crashed:
        load.wait_for(0.3)
        # Workers busy elsewhere for 2 s, so restock messages queue up in Redis; then Redis dies with them.
        system.signal_all("worker-", signal.SIGSTOP)
        time.sleep(2)
        lost = redis_server.queued()
        redis_server.kill()  # no persistence: every queued and unacknowledged message is gone
        down = time.monotonic()
        system.signal_all("worker-", signal.SIGCONT)
        time.sleep(2)
        redis_server.start()
        back, back_at = time.monotonic(), timezone.now()
        waiting = Restock.objects.filter(status="pending").count()
        load.wait()
        settled = settle(timeout=90)
    attempts = load.attempts()
    shop.figures["redis"] = {
        "messages_lost": lost,
        "down_seconds": round(back - down, 1),
        "restocks_pending_when_redis_came_back": waiting,
        "requests_while_down": sum(down <= a["at"] < back for a in attempts),
        "sales_while_down": sum(down <= a["at"] < back and a["answer"] == 201 for a in attempts),
        "seconds_from_redis_back_to_settled": round(time.monotonic() - back, 1) if settled is not None else None,
        "processes_that_exited_and_were_restarted": crashed,
    }

    def then():
        shop.expect(lost, "no message was waiting in Redis when it died")
        shop.expect(Restock.objects.filter(placed_at__gt=back_at).exists(), "no order placed after Redis came back")
        shop.expect(len(system.running("worker-")) == 2 and system.running("beat"), "a process is missing")
        shop.expect(not crashed, f"a process exited on the broker loss: {crashed}")

    shop.finish(load, then=then)


def test_factory_down_then_redrive_fills_every_shelf(system):
    from factory.models import DeadLetter
    from inventory.models import Product, Restock
    from notifications.models import Alert

    shop = shop_open("factory_down", system, seed=5, on_hand=(2, 6), reorder_point=2, reorder_quantity=20)
    system.factory_configure(error_rate=1.0)
    load = Load(system.web_url, shop.catalogue, purchases=scaled(120), duration=4 * SCALE, seed=5).start()
    load.wait()

    failed_in = settle(timeout=90)
    failed = Restock.objects.filter(status="failed").count()
    dead_letter_alerts = Alert.objects.filter(kind="dead_letter", is_summary=False)
    while_down = shop.figures["while_down"] = {
        "seconds_until_every_restock_failed": failed_in,
        "restocks_failed": failed,
        "dead_letters": DeadLetter.objects.count(),
        "dead_letter_alerts_sent": dead_letter_alerts.count(),
        "dead_letter_alerts_grouped": sum(dead_letter_alerts.values_list("suppressed_count", flat=True)),
        "factory_degraded_alerts": Alert.objects.filter(kind="factory_degraded").count(),
        "shelves_empty": Product.objects.filter(sku__in=shop.catalogue.skus, on_hand=0).count(),
    }
    shop.expect(failed and while_down["dead_letters"] == failed, "every failed restock has one dead letter")
    shop.expect(while_down["dead_letter_alerts_sent"] == 1, "one dead-letter alert is sent, the rest grouped")

    system.factory_configure(error_rate=0.0)
    output = system.manage("redrive", "--all").stdout
    shop.figures["redrive"] = {
        "sent_again": output.count(": sent again"),
        "nothing_to_do": output.count(": nothing to do"),
        "already_sent_again": output.count(": already sent again"),  # a new need reopened its restock
    }

    def then():
        empty = list(Product.objects.filter(sku__in=shop.catalogue.skus, on_hand=0).values_list("sku", flat=True))
        shop.figures["redrive"]["shelves_empty_after"] = len(empty)
        shop.expect(not empty, f"shelves still empty after the redrive: {empty}")

    shop.finish(load, then=then)


def test_factory_hanging(system):
    from factory.models import FactoryAttempt

    shop = shop_open("factory_hang", system, seed=6, on_hand=(5, 15))
    system.factory_configure(hang_rate=0.35, hang_seconds=30, latency_ms=[0, 50])
    load = Load(system.web_url, shop.catalogue, purchases=scaled(150), duration=6 * SCALE, seed=6).start()
    load.wait()
    system.factory_configure(hang_rate=0.0)

    def then():
        timeout_ms = float(ChaosSystem.TIMING["FACTORY_TIMEOUT_SECONDS"]) * 1000
        longest = max(FactoryAttempt.objects.values_list("latency_ms", flat=True), default=0)
        timed_out = FactoryAttempt.objects.filter(error__icontains="timed out").count()
        answering = system.workers_answering()
        shop.figures["hangs"] = {
            "factory_calls_timed_out": timed_out,
            "longest_factory_call_ms": longest,
            "workers_answering_a_ping_after": len(answering),
        }
        shop.expect(timed_out, "the simulator hung no call")
        shop.expect(longest < timeout_ms + 1500, "a factory call outlived its timeout")
        shop.expect(len(answering) == len(system.running("worker-")), f"a worker is stuck: only {answering} answer")

    shop.finish(load, then=then)


def test_rolling_restart_under_load(system):
    shop = shop_open("rolling_restart", system, seed=7)
    system.ensure(webs=2, workers=2)
    system.factory_configure(latency_ms=[100, 600])
    load = Load(system.web_url, shop.catalogue, purchases=scaled(300), duration=12 * SCALE, seed=7).start()

    old = [name for pair in zip(system.running("web-"), system.running("worker-"), strict=True) for name in pair]
    restarts = []
    for n, name in enumerate(old, start=1):
        load.wait_for(n / (len(old) + 1))
        started = time.monotonic()
        if name.startswith("web-"):  # the new server takes connections before the old one drains
            system.start_web_server()
            code = system.processes[name].terminate()
        else:
            code = system.processes[name].terminate()
            system.start_worker_process()
        restarts.append({"process": name, "exit_code": code, "seconds": round(time.monotonic() - started, 1)})
    system.forget_stopped()
    shop.figures["restarts"] = restarts
    shop.expect(all(r["exit_code"] == 0 for r in restarts), "a process did not stop cleanly on SIGTERM")

    shop.finish(load, allowed=ALWAYS | {"reset", "refused"})


# A hang detector, not a timing threshold: how many requests took over 1 s (issue 11's figure) is reported in
# test-output/chaos/rush.json and recorded in docs/reliability.md, not asserted on a shared 2-core machine.
RUSH_REQUEST_BOUND_MS = 5000


def test_rush_with_the_broker_restarted(system, redis_server):
    """A video sends buyers: many SKUs with small stocks sell out one after another, the factory takes
    200 ms and sometimes fails, and Redis (broker, throttle, counters) dies and comes back mid-rush.
    The workers are the compose layout: a routine worker and a shortage-only urgent worker."""
    from inventory.models import Restock

    shop = shop_open("rush", system, seed=8, products=40, on_hand=(1, 5), reorder_point=0, reorder_quantity=6)
    for name in system.running("worker-"):
        system.processes[name].terminate()
    system.forget_stopped()
    layout = compose_worker_args()
    for role in ("worker", "urgent-worker"):
        system.start_worker_process(*layout[role], wait=False)
    for name in system.running("worker-"):
        system.processes[name].wait_ready()
    system.factory_configure(latency_ms=[200, 200], error_rate=0.1, error_after_create_rate=0.05)
    load = Load(system.web_url, shop.catalogue, purchases=scaled(500), threads=32, duration=15 * SCALE, seed=8).start()

    try:
        with system.supervised() as crashed:
            load.wait_for(0.4)
            redis_server.kill()  # no persistence: queued and unacknowledged messages are gone
            down = time.monotonic()
            time.sleep(2)
            redis_server.start()
            back = time.monotonic()
            load.wait()
            settled = settle(timeout=90)

        def then():
            shortages = list(Restock.objects.filter(product__sku__in=shop.catalogue.skus, reason="shortage"))
            orders = Counter(o["reference"] for o in system.factory_get("/_sim/orders")["results"])
            not_once = {r.reference: orders[r.reference] for r in shortages if orders[r.reference] != 1}
            attempts = load.attempts()
            answered_ms = [a["ms"] for a in attempts if isinstance(a["answer"], int)]
            while_down = [a["ms"] for a in attempts if down <= a["at"] < back and isinstance(a["answer"], int)]
            lead = {}
            for reason in ("shortage", "reorder_point"):
                waits = sorted(
                    (r.placed_at - r.created_at).total_seconds() * 1000
                    for r in Restock.objects.filter(
                        product__sku__in=shop.catalogue.skus, reason=reason, placed_at__isnull=False
                    )
                )
                lead[reason] = {"restocks": len(waits), "p50_ms": _pct(waits, 50), "p99_ms": _pct(waits, 99)}
            shop.figures["rush"] = {
                "broker_down_seconds": round(back - down, 1),
                "seconds_settled_after_the_load": settled,
                "requests_while_down": len(while_down),
                "slowest_request_ms": max(answered_ms, default=None),
                "slowest_request_while_down_ms": max(while_down, default=None),
                "requests_over_1s": sum(ms > 1000 for ms in answered_ms),
                "shortage_restocks": len(shortages),
                "created_to_placed": lead,
                "processes_that_exited_and_were_restarted": crashed,
            }
            shop.expect(shortages, "no shortage opened a restock")
            shop.expect(not not_once, f"shortage restocks not ordered exactly once: {not_once}")
            shop.expect(not crashed, f"a worker exited on the broker loss: {crashed}")
            shop.expect(
                max(answered_ms, default=0) < RUSH_REQUEST_BOUND_MS,
                f"a request took {max(answered_ms, default=0):.0f} ms (bound {RUSH_REQUEST_BOUND_MS} ms)",
            )

        shop.finish(load, then=then)
    finally:
        for name in system.running("worker-"):  # the next scenario starts its usual all-queue workers
            system.processes[name].terminate()
        system.forget_stopped()


def _pct(ordered: list[float], p: float):
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]) if ordered else None


@pytest.fixture
def private_database(django_db_setup):
    """A MariaDB server of our own, holding the test database's tables, with its own broker and app."""
    log_dir = LOGS / "database_restart"
    mariadb = MariaDbServer(log_dir)
    redis = RedisServer(log_dir)
    private = None
    try:
        mariadb.start().wait_ready()
        redis.start()
        mariadb.copy_schema(connection.settings_dict, "donut_chaos")
        private = ChaosSystem(redis, database_url=mariadb.url("donut_chaos"), log_dir=log_dir)
        private.start_factory("--seed", "4")
        private.factory_configure(**FLAWLESS)
        private.ensure(webs=1, workers=2)
        with database_swapped(mariadb.url("donut_chaos")):
            yield private, mariadb
    finally:
        if private:
            private.stop()
        redis.stop()
        mariadb.stop()


def test_database_restarted_mid_load(private_database):
    private, mariadb = private_database
    shop = Shop("database_restart", private, catalogue_make("DB4", seed=4))
    private.factory_configure(latency_ms=[50, 300])
    load = Load(private.web_url, shop.catalogue, purchases=scaled(300), duration=10 * SCALE, seed=4).start()

    load.wait_for(0.35)
    mariadb.kill()  # SIGKILL: no clean shutdown, InnoDB recovers from its log on start
    down = time.monotonic()
    time.sleep(3)
    mariadb.start().wait_ready()
    back = time.monotonic()
    connections["default"].close()  # this process's connection died with the server
    load.wait()

    attempts = load.attempts()
    unavailable = [a for a in attempts if a["answer"] == 503]
    sales_after = sorted(a["ended"] for a in attempts if a["answer"] == 201 and a["at"] >= back)
    database = shop.figures["database"] = {
        "down_seconds": round(back - down, 1),
        "answers_503": len(unavailable),
        "slowest_503_ms": max((a["ms"] for a in unavailable), default=None),
        "slowest_answer_ms": max(a["ms"] for a in attempts if isinstance(a["answer"], int)),
        "seconds_from_database_up_to_first_sale": round(sales_after[0] - back, 2) if sales_after else None,
    }
    shop.expect(unavailable, "no request met the outage")
    shop.expect((database["slowest_503_ms"] or 0) < 6000, "a 503 was slow: the API hung on the database")
    shop.expect(sales_after and sales_after[0] - back < 10, "sales did not resume within 10 s of the restart")

    shop.finish(load, allowed=ALWAYS | {503})
