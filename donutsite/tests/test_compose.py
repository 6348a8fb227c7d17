"""The production compose file, checked without a Docker engine (none runs on these machines):
valid against the Compose Specification's JSON schema (compose-spec.json beside this file, from
compose-spec/compose-spec, Apache-2.0), and every command it runs is one the project really has."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {
    "PATH": os.environ["PATH"],
    "DJANGO_SECRET_KEY": "compose-check-" + "x1y2z3" * 8,
    "FACTORY_API_KEY": "k",
    "FACTORY_CALLBACK_SECRET": "s",
    "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
}


def interpolated(text: str) -> str:
    """What compose does with ${VAR:?msg} and ${VAR:-default} when .env supplies the secrets."""
    text = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", "set-in-env", text)
    return re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", r"\2", text)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(interpolated((ROOT / "docker-compose.yml").read_text()))


def test_the_compose_file_follows_the_compose_specification(compose):
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())

    jsonschema.validate(compose, schema)


def test_a_broken_compose_file_is_caught(compose):
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    broken = {**compose, "services": {**compose["services"], "web": {**compose["services"]["web"], "ports": "8000"}}}

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_the_production_shape(compose):
    services = compose["services"]
    assert services["mysql"]["image"] == "mysql:8.4"
    assert services["redis"]["image"] == "redis:7"
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert "--requirepass set-in-env" in redis_command, "Redis asks for a password"
    for role in ("web", "worker", "beat", "flower"):
        environment = services[role]["environment"]
        assert environment["CELERY_BROKER_URL"] == "redis://:set-in-env@redis:6379/0", role
        assert environment["REDIS_URL"] == "redis://:set-in-env@redis:6379/1", role
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    consumed = {name: queues_of(service["command"]) for name, service in services.items() if is_worker(service)}
    assert consumed == {
        "worker": {"default", "factory", "maintenance"},
        "urgent-worker": {"factory_urgent"},
        "notifications-worker": {"notifications"},
    }
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])


def test_the_staging_simulator_keeps_its_orders_across_restarts(compose):
    """A restarted simulator that forgot its orders answers our polls 404 and never calls back: its state
    file is on a named volume, in a directory the image gives the app user (a new named volume takes the
    mount point's owner from the image; one that is not there would be root's, and the app user could not
    write the file)."""
    service = compose["services"]["factory-simulator"]
    command = service["command"]
    state_file = Path(command[command.index("--state-file") + 1])
    mounts = dict(reversed(volume.split(":")[:2]) for volume in service["volumes"])
    assert mounts.get(str(state_file.parent)) in compose["volumes"], service["volumes"]
    assert f"install -d -o app -g app {state_file.parent}" in (ROOT / "Dockerfile").read_text()


def is_worker(service) -> bool:
    return service.get("command", [])[:4] == ["celery", "-A", "donutsite", "worker"]


def queues_of(command: list[str]) -> set[str]:
    """The queues a worker's -Q names; a worker with none would consume every queue, dead_letter too."""
    assert "-Q" in command, f"{command}: a worker without -Q consumes dead_letter"
    return set(command[command.index("-Q") + 1].split(","))


def app_commands(compose):
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("donut-states"):
            command = service["command"]
            yield name, command if isinstance(command, list) else shlex.split(command)
        for part in (service.get("healthcheck") or {}).get("test", [])[1:2]:
            if part == "python" and service["healthcheck"]["test"][2] == "manage.py":
                yield f"{name} healthcheck", service["healthcheck"]["test"][1:]


@pytest.mark.parametrize(
    "role",
    [
        "migrate",
        "web",
        "worker",
        "urgent-worker",
        "notifications-worker",
        "beat",
        "flower",
        "factory-simulator",
        "worker healthcheck",
        "urgent-worker healthcheck",
        "notifications-worker healthcheck",
        "beat healthcheck",
    ],
)
def test_every_command_compose_runs_exists(compose, role):
    command = dict(app_commands(compose))[role]
    program, args = command[0], command[1:]
    if program == "gunicorn":
        argv = [str(BIN / "gunicorn"), "--check-config", *args]
    elif program == "celery":
        argv = [str(BIN / "celery"), *args, "--help"]
    elif program == "python" and args[0] == "manage.py":
        argv = [str(BIN / "python"), "manage.py", args[1], "--help"]
    elif program == "python" and args[:2] == ["-m", "donutsite.flower"]:
        argv = [str(BIN / "python"), "-m", "donutsite.flower", "--help"]
    else:
        pytest.fail(f"{role}: unexpected program {program}")

    result = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, f"{role}: {' '.join(argv)}\n{result.stderr[-2000:]}"


def make_run_workers() -> dict[str, list[str]]:
    """The Celery workers make run starts (scripts/run.sh's Procfile): name -> argv, `celery` first."""
    procfile = (ROOT / "scripts" / "run.sh").read_text().split("<<PROCS\n", 1)[1].split("\nPROCS\n", 1)[0]
    workers = {}
    for line in procfile.splitlines():
        name, _, command = line.partition(": ")
        argv = shlex.split(command)
        if argv[0].endswith("celery") and argv[1:4] == ["-A", "donutsite", "worker"]:
            workers[name] = ["celery", *argv[1:]]
    return workers


def test_every_queue_but_dead_letter_has_a_worker_in_compose_and_in_make_run(compose):
    from celery import current_app
    from django.conf import settings

    from donutsite.celery import routed_queue

    current_app.loader.import_default_modules()  # every app's tasks, as a worker's autodiscovery finds them
    ours = {name for name in current_app.tasks if not name.startswith("celery.")}
    assert {"factory.restock_place", "inventory.idempotency_keys_purge", "notifications.deliver"} <= ours
    assert {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} <= ours, "beat sends no unknown task"
    sent_to = {routed_queue(task) for task in ours} | {routed_queue(settings.SHORTAGE_ROUTE)}
    assert "factory_urgent" in sent_to and "dead_letter" not in sent_to

    declared = set(settings.CELERY_TASK_QUEUES_NAMES)
    compose_workers = {name: s["command"] for name, s in compose["services"].items() if is_worker(s)}
    for layout, workers in (("compose", compose_workers), ("make run", make_run_workers())):
        consumed = set().union(*(queues_of(command) for command in workers.values()))
        assert consumed == declared - {"dead_letter"}, layout
        assert sent_to <= consumed, layout
    # The two layouts start the same workers, with the same node names and queues, and compose's
    # healthcheck pings each worker's own node.
    assert make_run_workers().keys() == compose_workers.keys()
    for name, command in make_run_workers().items():
        node = compose_workers[name][compose_workers[name].index("-n") + 1]
        assert queues_of(command) == queues_of(compose_workers[name]), name
        assert command[command.index("-n") + 1] == node, name
        probe = compose["services"][name]["healthcheck"]["test"]
        assert probe[probe.index("--destination") + 1] == node, name


def test_check_deploy_passes_in_the_environment_compose_gives_web():
    """What `docker compose up` hands web: .env.example's values with the secrets filled in, under the
    environment docker-compose.yml sets (the database and Redis URLs, the blanked compose-only secrets)."""
    dotenv = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    secrets = {name for name, value in dotenv.items() if value == ""}
    assert {"DJANGO_SECRET_KEY", "FACTORY_API_KEY", "FLOWER_BASIC_AUTH"} <= secrets
    dotenv |= {name: f"filled-{name.lower()}-" + "x7" * 20 for name in secrets} | {"FLOWER_BASIC_AUTH": "ops:pw"}
    # ${VAR:?message} is the value; ${VAR:-default} the value, or the default while it is unset or empty.
    reference = re.compile(r"\$\{([A-Z_]+):([?-])([^}]*)\}")
    text = reference.sub(
        lambda m: dotenv.get(m[1]) or (m[3] if m[2] == "-" else ""), (ROOT / "docker-compose.yml").read_text()
    )
    web = yaml.safe_load(text)["services"]["web"]
    env = {**dotenv, **{name: str(value) for name, value in web["environment"].items()}}
    assert env["DATABASE_URL"].startswith("mysql://donuts:filled-") and env["MYSQL_ROOT_PASSWORD"] == ""

    result = subprocess.run(
        [str(BIN / "python"), "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**env, "PATH": os.environ["PATH"], "DJANGO_ENV_FILE": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
