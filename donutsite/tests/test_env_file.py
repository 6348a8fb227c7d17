"""`make run` writes its settings to .env; settings read that file when it is there, so manage.py works
from a second terminal. What the environment sets wins over the file, and an empty DJANGO_ENV_FILE (as
`make test` sets) reads no file."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOW = "import django; django.setup(); from django.conf import settings; print(settings.REDIS_URL, settings.DEBUG)"


def _run(env_file: str, **env) -> subprocess.CompletedProcess:
    # Only what a fresh terminal has: no Django settings in the environment.
    base = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "REDIS_", "FACTORY_"))}
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "donutsite.settings", "DJANGO_ENV_FILE": env_file, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_terminal_gets_make_runs_settings_from_the_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# Written by make run\nDJANGO_DEBUG=1\nDJANGO_SECRET_KEY=from-the-file\nREDIS_URL=redis://127.0.0.1:6380/1\n"
    )

    done = _run(str(env_file))

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["redis://127.0.0.1:6380/1", "True"]


def test_the_environment_wins_over_the_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=1\nDJANGO_SECRET_KEY=from-the-file\nREDIS_URL=redis://127.0.0.1:6380/1\n")

    done = _run(str(env_file), REDIS_URL="redis://127.0.0.1:6379/9")

    assert done.stdout.split() == ["redis://127.0.0.1:6379/9", "True"], done.stderr


def test_without_a_file_settings_still_refuse_to_start_without_a_secret_key():
    done = _run("")

    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in done.stderr
