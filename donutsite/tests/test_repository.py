"""What a fresh clone must hold together: every relative link in the Markdown points at a file of the
clone, every test the Markdown cites exists, and the pre-commit hook runs the ruff that requirements-dev.txt
pins."""

import ast
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


# A test the documents cite: `test_name`, a module (`[test_tasks: ...]`, `test_delivery.py`), or a name cut
# short with "..." (`test_a_claim_..._neither_deadlocks` is not written; a long one ends in `...`).
CITED_TEST = re.compile(r"\btest_[A-Za-z0-9_]*[A-Za-z0-9](?:_?\.\.\.)?")


def _tests_in_the_clone() -> tuple[set[str], set[str]]:
    """The test modules' names and every test function's name, whether collected or a helper's."""
    modules, functions = set(), set()
    for path in _tracked("*test_*.py"):
        modules.add(path.stem)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                functions.add(node.name)
    return modules, functions


def cited_tests_missing(documents: list[Path]) -> list[str]:
    modules, functions = _tests_in_the_clone()
    missing = []
    for document in documents:
        for cited in sorted(set(CITED_TEST.findall(document.read_text()))):
            if cited.endswith("..."):
                prefix = cited.removesuffix("...")
                found = any(name.startswith(prefix) for name in functions)
            else:
                found = cited in modules or cited in functions
            if not found:
                where = document.relative_to(ROOT) if document.is_relative_to(ROOT) else document.name
                missing.append(f"{where}: {cited}")
    return missing


def test_every_test_the_documents_cite_exists():
    """The docs hold their claims to tests by name ("[test_sold_out: ...]", `test_..._replayed`): a test
    renamed or deleted leaves a claim that nothing checks any more."""
    documents = _tracked("*.md")
    modules, functions = _tests_in_the_clone()
    assert {"test_sold_out", "test_tasks"} <= modules and "test_worker_broker_loss" in modules
    assert "test_an_out_of_stock_answer_is_replayed_even_after_the_stock_is_back" in functions
    assert cited_tests_missing(documents) == []


def test_the_cited_test_check_finds_a_renamed_test(tmp_path):
    document = tmp_path / "claims.md"
    document.write_text(
        "Held [test_repository: a claim], `test_every_test_the_documents_cite_exists`, `test_the_cited_test_...`; "
        "gone: [test_sold_in], `test_nothing_of_the_kind_...`.\n"
    )
    missing = [line.rsplit(": ", 1)[1] for line in cited_tests_missing([document])]
    assert missing == ["test_nothing_of_the_kind_...", "test_sold_in"]
