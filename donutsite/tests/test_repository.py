"""What a fresh clone must hold together: every relative link in the Markdown points at a file of the
clone, and the pre-commit hook runs the ruff that requirements-dev.txt pins."""

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _tracked(pattern: str) -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in names]


def test_markdown_links_point_inside_the_clone():
    broken = []
    documents = _tracked("*.md")
    assert ROOT / "README.md" in documents and ROOT / "CONTRIBUTING.md" in documents
    for document in documents:
        for target in LINK.findall(document.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor
            path = (document.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_repository_has_its_habits():
    for name in ("LICENSE", "CONTRIBUTING.md", "CHANGELOG.md", "SECURITY.md", ".pre-commit-config.yaml"):
        assert ROOT / name in _tracked(name), name
    assert "MIT License" in (ROOT / "LICENSE").read_text() and "Donut-States" in (ROOT / "LICENSE").read_text()
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


def test_pre_commit_runs_the_pinned_ruff():
    pinned = re.search(r"^ruff==(\S+)$", (ROOT / "requirements-dev.txt").read_text(), re.M).group(1)
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (ruff,) = [repo for repo in config["repos"] if repo["repo"].endswith("/ruff-pre-commit")]

    assert ruff["rev"] == f"v{pinned}"
    assert {hook["id"] for hook in ruff["hooks"]} == {"ruff-check", "ruff-format"}
