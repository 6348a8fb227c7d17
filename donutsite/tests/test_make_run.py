"""`make run` (scripts/run.sh) refuses to start when a port it needs is taken, before it changes anything:
a second make run went through the migrations and the demo data, then died with a traceback."""

import shutil
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_make_run_says_a_port_is_taken_before_it_starts_anything(tmp_path):
    # The script in a checkout of its own whose Python fails at once: nothing past the check can work.
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "run.sh", tmp_path / "scripts" / "run.sh")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "PORT": str(port),
            "FLOWER_PORT": "1",  # nothing listens on port 1
            "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
            "FACTORY_API_URL": "http://127.0.0.1:1",
            "SLACK_WEBHOOK_URL": "http://127.0.0.1:1",
        }
        run = subprocess.run(
            ["bash", str(tmp_path / "scripts" / "run.sh")], env=env, capture_output=True, text=True, timeout=30
        )

    assert run.returncode == 1
    assert f"run: port {port} is taken" in run.stderr
    assert not (tmp_path / ".env").exists(), "it stopped before writing the settings or migrating"
