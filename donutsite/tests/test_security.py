"""Production settings, secrets, start-up checks and the admin login throttle."""

import os
import re
import secrets
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from donutsite.checks import timing_problems

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRODUCTION = {
    "PATH": os.environ["PATH"],
    # A production host has no .env beside manage.py; a developer's checkout may (make run writes one).
    "DJANGO_ENV_FILE": "",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "donuts.example.com",
    "PUBLIC_BASE_URL": "https://donuts.example.com",
    "FACTORY_API_KEY": "k",
    "FACTORY_CALLBACK_SECRET": "s",
}


def manage(*args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("public_base_url", "problem"),
    [("https://web:8000", "not in DJANGO_ALLOWED_HOSTS"), ("http://donuts.example.com", "answered 301")],
    ids=["host-not-served", "redirected-to-https"],
)
def test_check_deploy_refuses_a_callback_url_the_factory_would_get_no_2xx_from(public_base_url, problem):
    # The factory retries any other answer for about an hour and then drops the callback.
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env={**PRODUCTION, "PUBLIC_BASE_URL": public_base_url}
    )

    assert result.returncode != 0
    assert "factory.W001" in result.stderr and problem in result.stderr


@pytest.mark.parametrize(
    ("public_base_url", "allowed_hosts"),
    [("https://[2001:db8::1]", "[2001:db8::1]"), ("https://donuts.example.com.", "donuts.example.com")],
    ids=["ipv6", "trailing-dot"],
)
def test_check_deploy_takes_a_callback_host_as_django_serves_it(public_base_url, allowed_hosts):
    # Django answers these hosts (it matches a Host header with its brackets, without a trailing dot).
    env = {**PRODUCTION, "PUBLIC_BASE_URL": public_base_url, "DJANGO_ALLOWED_HOSTS": allowed_hosts}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode == 0, result.stderr
    assert "factory.W001" not in result.stderr


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "FACTORY_API_KEY", "FACTORY_CALLBACK_SECRET"])
def test_production_refuses_to_start_without_its_secrets(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert missing in result.stderr


def test_production_refuses_the_development_callback_secret():
    # It is written in this repository (settings, the simulator): whoever reads it could sign a callback
    # crediting any open restock's donuts, which the API would then sell though none arrived.
    result = manage("check", env={**PRODUCTION, "FACTORY_CALLBACK_SECRET": "dev-callback-secret"})

    assert result.returncode != 0
    assert "FACTORY_CALLBACK_SECRET" in result.stderr and "development" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FACTORY_REFERENCE_PREFIX", "donut shop"),
        ("FACTORY_REFERENCE_PREFIX", "eu/restock"),
        ("FACTORY_REFERENCE_PREFIX", "r" * 45),
        ("PUBLIC_BASE_URL", "donuts.example.com"),
        ("PUBLIC_BASE_URL", "ftp://donuts.example.com"),
    ],
)
def test_production_refuses_to_start_with_what_the_factory_refuses_in_an_order(name, value):
    # The reference and the callback URL go into every order; the factory answers 400 to one it refuses
    # and we do not retry a 400: every restock would be dead-lettered.
    result = manage("check", env={**PRODUCTION, name: value})

    assert result.returncode != 0
    assert name in result.stderr


@pytest.mark.parametrize("name", sorted(name for name in dir(settings) if name.endswith("_MIN_SEVERITY")))
def test_a_channels_misspelt_minimum_severity_is_refused_at_start(name):
    # Found by name, as settings.py checks them: the registry would otherwise fail inside the transaction
    # of an alert's event (the sale that takes the last donut) when it ranks the value.
    result = manage("check", env={**PRODUCTION, name: "critcal"})

    assert result.returncode != 0
    assert f"{name} must be info, warning or critical" in result.stderr


def test_a_misspelt_disabled_alert_kind_is_refused_at_start():
    # It would switch nothing off: the sell-outs someone meant to silence would go on posting.
    result = manage("check", env={**PRODUCTION, "ALERTS_DISABLED_KINDS": "sold_otu,dead_letter"})

    assert result.returncode != 0
    assert "notifications.E002" in result.stderr
    assert "ALERTS_DISABLED_KINDS names no alert kind: sold_otu" in result.stderr
    assert "sold_out" in result.stderr and "dead_letter" in result.stderr, "it lists the kinds it takes"


def test_disabled_alert_kinds_the_code_raises_are_taken():
    result = manage("check", env={**PRODUCTION, "ALERTS_DISABLED_KINDS": "sold_out,factory_cancelled"})

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("asked", "debug"), [(None, "False"), ("0", "False"), ("1", "True")])
def test_debug_is_off_unless_asked_for(asked, debug):
    # In a process of its own: pytest-django forces DEBUG off in this one, whatever the settings say.
    env = {**PRODUCTION, "DJANGO_SETTINGS_MODULE": "donutsite.settings"}
    if asked is not None:
        env["DJANGO_DEBUG"] = asked
    code = "from django.conf import settings; print(settings.DEBUG)"

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == debug


def test_settings_that_would_let_redis_run_a_task_twice_are_refused():
    assert timing_problems() == []
    with override_settings(CELERY_TASK_TIME_LIMIT=40):
        assert any("visibility timeout" in p for p in timing_problems())
    with override_settings(FACTORY_TIMEOUT_SECONDS=30):
        assert any("soft time limit" in p for p in timing_problems())
    with override_settings(FACTORY_RETRY_BACKOFF_MAX_SECONDS=30):
        assert any("retry countdown" in p for p in timing_problems())
    with override_settings(NOTIFICATIONS_RETRY_BACKOFF_MAX_SECONDS=30):
        assert any("retry countdown" in p for p in timing_problems())


def test_a_worker_will_not_start_with_unsafe_timing():
    env = {**PRODUCTION, "CELERY_TASK_TIME_LIMIT": "60", "CELERY_BROKER_URL": settings.CELERY_BROKER_URL}

    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "donutsite", "worker", "--pool", "solo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "visibility timeout" in result.stderr + result.stdout


def compose_worker_pools() -> dict[str, tuple[str, str]]:
    """(pool, concurrency) of each Celery worker in docker-compose.yml."""
    import yaml

    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        services = yaml.safe_load(f)["services"]
    pools = {}
    for name, service in services.items():
        command = service.get("command", [])
        if command[:4] == ["celery", "-A", "donutsite", "worker"]:
            option = {flag: value for flag, value in zip(command, command[1:], strict=False)}
            pools[name] = (option.get("-P", "prefork"), option.get("-c", "CPUs"))
    return pools


def test_the_stock_workers_run_a_pool_without_time_limits_and_say_what_bounds_a_call(tmp_path):
    from celery import current_app

    from testsupport.processes import Process

    pools = compose_worker_pools()
    assert pools["worker"][0] == pools["urgent-worker"][0] == "threads"
    pool, concurrency = pools["worker"]
    env = {**PRODUCTION, "CELERY_BROKER_URL": current_app.conf.broker_url, "PYTHONUNBUFFERED": "1"}
    argv = [os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "donutsite", "worker", "-P", pool]
    # A queue of its own, so the probe takes no task meant for another test.
    argv += ["-c", concurrency, "-Q", "bound-probe", "-n", "bound-probe@%h", "--without-gossip", "--without-mingle"]

    worker = Process("bound-probe", argv, env, ready="task time bound", log_dir=tmp_path)
    worker.stop()

    bound = next(line for line in worker.output().splitlines() if "task time bound" in line)
    assert "the threads pool enforces no time limit" in bound
    assert "connect + read timeouts (11 s)" in bound and "visibility timeout (35 s)" in bound
    assert timing_problems() == []


def test_the_production_server_opens_no_control_socket(tmp_path):
    from testsupport.processes import Process, free_port

    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    env = {**PRODUCTION, "HOME": str(tmp_path), "GUNICORN_BIND": f"127.0.0.1:{free_port()}", "GUNICORN_WORKERS": "1"}
    server = Process("gunicorn", [gunicorn, "-c", "gunicorn.conf.py"], env, ready="Booting worker", log_dir=tmp_path)
    server.stop()

    assert "Booting worker" in server.output()
    assert not (tmp_path / ".gunicorn").exists(), "gunicornc's socket, by default in $HOME/.gunicorn"


@pytest.fixture
def staff(db):
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    User.objects.create_superuser("other", "other@example.com", "another good password")
    return User.objects.create_superuser("ops", "ops@example.com", "correct horse battery")


def login(client, password, username="ops", **extra):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password}, **extra)


def fail_until_locked(client, **extra):
    return [login(client, "wrong", **extra).status_code for _ in range(settings.ADMIN_LOGIN_MAX_FAILURES)]


def test_admin_logins_are_throttled_after_repeated_failures(client, staff):
    statuses = fail_until_locked(client)
    blocked = login(client, "correct horse battery")

    assert statuses == [200] * settings.ADMIN_LOGIN_MAX_FAILURES, "a failed login shows the form again"
    assert blocked.status_code == 429
    assert 0 < int(blocked["Retry-After"]) <= settings.ADMIN_LOGIN_WINDOW_SECONDS
    minutes = -(-int(blocked["Retry-After"]) // 60)
    assert f"Try again in {minutes} minute(s), or ask another admin" in blocked.content.decode()
    assert "_auth_user_id" not in client.session, "the right password from the locked address is refused too"


# Spaces (the form strips them), full-width letters (NFKC), and what MariaDB's collation ignores: case, accents.
@pytest.mark.parametrize("spelling", [" ops", "ops ", "\uff4f\uff50\uff53", "OPS", "\u00f4ps"])
def test_a_lockout_holds_for_every_spelling_that_logs_in_to_the_account(client, staff, spelling):
    fail_until_locked(client)

    assert login(client, "wrong", username=spelling).status_code == 429
    assert login(client, "correct horse battery", username=spelling).status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_lockout_is_one_account_from_one_address(client, staff, settings):
    # Behind the TLS proxy every request came from the proxy's address: five failures locked out everyone.
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "127.0.0.1"}
    fail_until_locked(client, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert login(client, "correct horse battery", **proxy, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
    assert login(client, "correct horse battery", **proxy, HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 302
    client.logout()
    other = login(client, "another good password", username="other", **proxy, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert other.status_code == 302, "another account from the same address still logs in"


def test_only_the_trusted_hops_of_x_forwarded_for_count(client, staff, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # The attacker writes what they like left of the entry our proxy appends; it changes nothing.
    for spoof in [f"10.0.0.{n}" for n in range(settings.ADMIN_LOGIN_MAX_FAILURES)]:
        login(client, "wrong", HTTP_X_FORWARDED_FOR=f"{spoof}, 203.0.113.9")

    assert login(client, "correct horse battery", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9").status_code == 429


def test_ipv6_clients_are_counted_by_their_64_block(client, staff):
    # One subscriber's /64 holds 2**64 addresses: a fresh one per guess must not start a fresh count.
    for n in range(settings.ADMIN_LOGIN_MAX_FAILURES):
        login(client, "wrong", REMOTE_ADDR=f"2001:db8:1:2::{n + 1:x}")

    assert login(client, "correct horse battery", REMOTE_ADDR="2001:db8:1:2:ffff::9").status_code == 429
    assert login(client, "correct horse battery", REMOTE_ADDR="2001:db8:1:3::1").status_code == 302, "another block"


def test_an_ipv4_mapped_address_is_counted_as_the_ipv4_one(client, staff):
    fail_until_locked(client, REMOTE_ADDR="192.0.2.7")

    assert login(client, "correct horse battery", REMOTE_ADDR="::ffff:192.0.2.7").status_code == 429


def test_without_trusted_proxies_x_forwarded_for_is_ignored(client, staff):
    for n in range(settings.ADMIN_LOGIN_MAX_FAILURES):
        login(client, "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")

    assert login(client, "correct horse battery", HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429


def test_ops_lift_a_lockout_with_a_command(client, staff):
    fail_until_locked(client)
    fail_until_locked(client, REMOTE_ADDR="192.0.2.1")
    assert login(client, "correct horse battery").status_code == 429

    out = StringIO()
    call_command("admin_login_unlock", "OPS", "--address", "127.0.0.1", stdout=out)

    assert "Unlocked 1 " in out.getvalue()
    assert login(client, "correct horse battery").status_code == 302
    client.logout()
    assert login(client, "correct horse battery", REMOTE_ADDR="192.0.2.1").status_code == 429
    call_command("admin_login_unlock", "--all", stdout=out)
    assert login(client, "correct horse battery", REMOTE_ADDR="192.0.2.1").status_code == 302


def test_a_lockout_of_requests_with_no_address_is_lifted_by_the_name_it_is_counted_under(client, staff, caplog):
    # A request without REMOTE_ADDR (a unix socket's peer) is counted, and logged, under "unknown"; the IP
    # address check refused that name, so such a lockout could be lifted only from every address at once.
    fail_until_locked(client, REMOTE_ADDR="")
    fail_until_locked(client, REMOTE_ADDR="192.0.2.1")
    assert "from unknown; locked" in caplog.text
    out = StringIO()

    call_command("admin_login_unlock", "ops", "--address", "unknown", stdout=out)

    assert "Unlocked 1 " in out.getvalue()
    assert login(client, "correct horse battery", REMOTE_ADDR="").status_code == 302
    client.logout()
    assert login(client, "correct horse battery", REMOTE_ADDR="192.0.2.1").status_code == 429


@pytest.mark.parametrize("address", ["notanip", "*", "192.0.2.300", ""])
def test_unlocking_from_a_malformed_address_is_an_error_naming_it_and_unlocks_nothing(client, staff, address):
    fail_until_locked(client)
    out = StringIO()

    with pytest.raises(CommandError, match=f'"{re.escape(address)}" is not an IP address') as refused:
        call_command("admin_login_unlock", "ops", "--address", address, stdout=out)

    assert refused.value.returncode != 0
    assert out.getvalue() == ""
    assert login(client, "correct horse battery").status_code == 429


@pytest.mark.parametrize("given", [["--address", "192.0.2.1"], ["ops"], ["ops", "--address", "192.0.2.1"]])
def test_unlocking_all_with_an_account_or_an_address_is_an_error_and_unlocks_nothing(client, staff, given):
    # --all with --address unlocked every account from every address, the address silently ignored.
    fail_until_locked(client, REMOTE_ADDR="192.0.2.1")
    out = StringIO()

    with pytest.raises(
        CommandError, match="--all unlocks every lockout, the admin's and Flower's, from every address; give it alone"
    ):
        call_command("admin_login_unlock", "--all", *given, stdout=out)

    assert out.getvalue() == ""
    assert login(client, "correct horse battery", REMOTE_ADDR="192.0.2.1").status_code == 429


@pytest.mark.parametrize("given", [["ops"], ["--flower"], ["--all"]])
def test_unlocking_while_redis_does_not_answer_says_so_instead_of_a_traceback(db, settings, given):
    # The lockouts are counted in Redis; a refused or hung one raised redis's own error, a traceback.
    from testsupport.processes import closed_port_url

    settings.REDIS_URL = closed_port_url(1)
    out = StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("admin_login_unlock", *given, stdout=out)

    assert str(refused.value).startswith("cannot reach Redis, where the lockouts are kept (")
    assert str(refused.value).endswith("): nothing unlocked; while it does not answer, logins are not limited")
    assert refused.value.returncode == 1
    assert out.getvalue() == ""


def test_unlocking_all_when_redis_goes_away_halfway_says_what_was_unlocked(db, monkeypatch):
    # --all unlocks the admin's lockouts, then Flower's: Redis gone between the two, "nothing unlocked" was
    # wrong after "Unlocked N account/address pair(s)." had been printed.
    from donutsite import ratelimit

    forget_matching = ratelimit.forget_matching

    def redis_gone_before_flower(pattern):
        if pattern.startswith("admin-login:"):
            return forget_matching(pattern)
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(ratelimit, "forget_matching", redis_gone_before_flower)
    out = StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("admin_login_unlock", "--all", stdout=out)

    assert out.getvalue().startswith("Unlocked ") and "account/address pair(s)" in out.getvalue()
    assert "): Flower's login not unlocked; while it does not answer" in str(refused.value)


@pytest.fixture
def flower(staff):
    """A real Flower (login ops:s3cret) on a free port, with the default limits; `staff` empties Redis."""
    from donutsite.tests.test_flower import start_flower
    from testsupport.processes import free_port

    port = free_port()
    process = start_flower(port)
    yield port
    process.stop()


def lock_flower(port, source):
    from donutsite.tests.test_flower import ask

    path = "/api/queues/length"
    for _ in range(settings.ADMIN_LOGIN_MAX_FAILURES):
        ask(port, path, "ops:wrong", source=source)
    return flower_login(port, source)


def flower_login(port, source):
    """The status the right Flower login gets from `source` (a 127.0.0.0/8 address: this machine)."""
    from donutsite.tests.test_flower import ask

    return ask(port, "/api/queues/length", "ops:s3cret", source=source)[0]


@pytest.mark.e2e
def test_flowers_lockout_is_lifted_from_one_address_or_from_all(flower):
    # Flower's login locks out an address with no command to lift it: ops locked out of it waited out the
    # window (15 minutes by default).
    assert [lock_flower(flower, source) for source in ("127.0.0.3", "127.0.0.4")] == [429, 429]
    out = StringIO()

    call_command("admin_login_unlock", "--flower", "--address", "127.0.0.3", stdout=out)

    assert "Unlocked Flower's login from 1 address(es)." in out.getvalue()
    assert flower_login(flower, "127.0.0.3") == 200
    assert flower_login(flower, "127.0.0.4") == 429, "another address stays locked"
    call_command("admin_login_unlock", "--flower", stdout=out)
    assert "Unlocked Flower's login from 1 address(es)." in out.getvalue().splitlines()[-1]
    assert flower_login(flower, "127.0.0.4") == 200


@pytest.mark.e2e
def test_unlocking_all_lifts_flowers_lockouts_with_the_admins(client, flower):
    # An operator locked out at night runs `--all` to get back in: it left Flower locked.
    fail_until_locked(client)
    assert lock_flower(flower, "127.0.0.3") == 429
    out = StringIO()

    call_command("admin_login_unlock", "--all", stdout=out)

    assert out.getvalue().splitlines() == [
        "Unlocked 1 account/address pair(s).",
        "Unlocked Flower's login from 1 address(es).",
    ]
    assert flower_login(flower, "127.0.0.3") == 200
    assert login(client, "correct horse battery").status_code == 302


@pytest.mark.parametrize(
    ("given", "error"),
    [
        (["ops"], "Flower's login is locked out per address, not per account"),
        (["ops", "--address", "127.0.0.3"], "Flower's login is locked out per address, not per account"),
        (["--all"], "--all unlocks every lockout, the admin's and Flower's, from every address; give it alone"),
    ],
)
def test_unlocking_flower_with_an_account_or_all_is_an_error_and_unlocks_nothing(client, flower, given, error):
    # Flower's lockout is per address, not per account: the username would have been ignored.
    fail_until_locked(client)
    assert lock_flower(flower, "127.0.0.3") == 429
    out = StringIO()

    with pytest.raises(CommandError, match=re.escape(error)) as refused:
        call_command("admin_login_unlock", "--flower", *given, stdout=out)

    assert refused.value.returncode != 0
    assert out.getvalue() == ""
    assert flower_login(flower, "127.0.0.3") == 429
    assert login(client, "correct horse battery").status_code == 429


def test_an_admin_login_lasts_a_shift_not_two_weeks(client, staff):
    response = login(client, "correct horse battery")

    assert response.status_code == 302
    assert response.cookies["sessionid"]["max-age"] == 12 * 3600, "the browser drops it after 12 hours"
    left = Session.objects.get().expire_date - timezone.now()
    assert timedelta(hours=12) - timedelta(minutes=1) < left <= timedelta(hours=12), "nor does the server"


def test_a_login_posted_without_next_lands_on_the_admin(client, staff):
    response = client.post("/admin/login/", {"username": "ops", "password": "correct horse battery"})

    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_a_successful_login_clears_the_failures(client, staff):
    for _ in range(settings.ADMIN_LOGIN_MAX_FAILURES - 1):
        login(client, "wrong")

    assert login(client, "correct horse battery").status_code == 302
    client.logout()
    assert [login(client, "wrong").status_code for _ in range(2)] == [200, 200]


def test_a_new_api_key_is_shown_once_and_never_travels_in_a_cookie(admin_client):
    import re

    from django.urls import reverse

    added = admin_client.post(reverse("admin:clients_apiclient_add"), {"name": "till-9", "_save": "Save"})
    page = admin_client.get(added["Location"])
    again = admin_client.get(added["Location"])

    key = re.search(r"Copy this key now: ([A-Za-z0-9_-]{40,})", page.content.decode()).group(1)
    assert "messages" not in added.cookies and "messages" not in page.cookies
    assert all(key not in morsel.value for morsel in [*added.cookies.values(), *page.cookies.values()])
    assert key not in again.content.decode(), "shown once"


def test_restocks_are_catalogue_information_without_any_client_in_them(db):
    # Decided: every client may list every restock ("when is more GLAZED coming?"); a restock names a
    # product and quantities, never the client or sale that caused it, and a client's own sales stay
    # its own (sale_get).
    from rest_framework.test import APIClient

    from inventory.models import Restock
    from testsupport.data import make_api_client, make_product

    product = make_product("GLAZED", on_hand=0)
    Restock.objects.create(product=product, quantity=40, reason="shortage", status="placed")
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {make_api_client()[1]}")

    listed = http.get("/api/v1/restocks/").json()["results"]

    assert [set(row) for row in listed] == [
        {"id", "sku", "quantity", "status", "reason", "expected_at", "quantity_received", "created_at"}
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/dashboard/", "/admin/inventory/product/1/delete/"])
def test_an_admin_page_refused_to_a_staff_user_is_a_403_and_one_warning_line_without_a_traceback(client, caplog, path):
    # Django logs a PermissionDenied with the exception: 40 lines of traceback in make run's output per click
    # of a staff user without the permission, read as a crash. The line naming the path is what ops need.
    client.force_login(User.objects.create_user("intern", password="intern pass 123", is_staff=True))

    response = client.get(path)

    assert response.status_code == 403
    [record] = [r for r in caplog.records if r.name == "django.request"]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert record.getMessage() == f"Forbidden (Permission denied): {path}"


@pytest.mark.django_db
def test_a_host_we_do_not_serve_is_a_400_and_one_warning_line_without_a_traceback(client, caplog):
    # Django logs it as an ERROR with the exception: a log line with a traceback, and a Sentry event, per request.
    response = client.get("/api/v1/products/", HTTP_HOST="evil.example")

    assert response.status_code == 400 and response.json()["code"] == "bad_request"
    [record] = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    assert "evil.example" in record.getMessage()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "method", "path", "data", "refused", "named"),
    [
        (
            "admin",
            "get",
            "/admin/inventory/restock/?_to_field=password",
            None,
            "DisallowedModelAdminToField",
            "password",
        ),
        (
            "admin",
            "get",
            "/admin/auth/user/?password__startswith=pbkdf2",
            None,
            "DisallowedModelAdminLookup",
            "password",
        ),
        ("admin", "get", "/admin/inventory/product/?sku__regex=(", None, "DisallowedModelAdminLookup", "sku__regex"),
        (
            "anyone",
            "post",
            "/admin/login/",
            {f"field{i}": "x" for i in range(1500)},
            "TooManyFieldsSent",
            "MAX_NUMBER_FIELDS",
        ),
    ],
)
def test_a_probe_refused_as_suspicious_is_a_400_and_one_warning_line_without_a_traceback(
    client, admin_client, caplog, who, method, path, data, refused, named
):
    # Django logs these refusals as an ERROR with the exception: with Sentry on, an event (ops alerted) per
    # request, for what is a URL or a form someone tampered with, not an outage. The anonymous one needs no
    # login: anyone can post a form of 1,500 fields to the login page.
    response = getattr(admin_client if who == "admin" else client, method)(path, data)

    assert response.status_code == 400
    [record] = [r for r in caplog.records if r.name.startswith("django.security.")]
    assert (record.name, record.levelname, record.exc_info) == (f"django.security.{refused}", "WARNING", None)
    assert named in record.getMessage()
