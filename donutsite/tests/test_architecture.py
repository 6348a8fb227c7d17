"""The import graph between apps follows the layout in docs/architecture.md: dependencies point one way,
nothing imports ops, donutsite imports no app outside urls.py, and no shipped module imports test code.
Every import counts, at module level and inside functions; migrations and tests are not shipped code. The
map's "may import" column in docs/architecture.md is the ALLOWED table below."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = {"clients", "inventory", "factory", "notifications", "ops"}
TEST_CODE = {"testsupport", "conftest"}

# app -> the apps it may import (besides itself and donutsite)
ALLOWED = {
    "clients": set(),
    "notifications": {"clients"},
    "inventory": {"clients", "notifications"},
    "factory": {"inventory", "notifications"},
    "ops": APPS - {"ops"},
    "donutsite": set(),
}
ROUTING = {"donutsite/urls.py": APPS}  # urls.py wires every app's views


def shipped_modules():
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if {"migrations", "tests"} & set(relative.parts) or path.name == "conftest.py":
                continue
            yield package, relative


def imported_modules(tree: ast.AST):
    for node in ast.walk(tree):  # every node: module level and inside functions and classes
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def forbidden_edges():
    for package, relative in shipped_modules():
        allowed = ROUTING.get(relative.as_posix(), ALLOWED[package]) | {package, "donutsite"}
        for lineno, module in imported_modules(ast.parse((ROOT / relative).read_text(), str(relative))):
            parts = module.split(".")
            top = parts[0]
            if top in TEST_CODE or "tests" in parts[1:]:
                yield f"{relative}:{lineno} imports test code ({module})"
            elif top in APPS | {"donutsite"} and top not in allowed:
                yield f"{relative}:{lineno} ({package}) imports {module}"


def test_apps_import_only_what_the_layout_allows():
    assert list(forbidden_edges()) == []


def test_the_check_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from ops import metrics\n\nimport inventory.models\n")
    assert sorted(module for _, module in imported_modules(tree)) == ["inventory.models", "ops"]


def documented_imports(text: str) -> dict[str, set[str]]:
    """docs/architecture.md's map: package -> the apps its "may import" column names."""
    section = text.split("\n## Map\n", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for package, may_import in re.findall(r"^\| `([a-z]+)/` \|.*\| ([^|]+) \|$", section, re.M):
        if package not in ALLOWED:
            continue
        if may_import.startswith("no app"):
            documented[package] = set()
        elif may_import.startswith("any app"):
            documented[package] = APPS - {package}
        else:
            documented[package] = set(re.findall(r"`([a-z]+)`", may_import))
    return documented


def test_the_map_in_docs_architecture_is_the_one_this_test_holds():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert documented_imports(text) == ALLOWED
    moved = text.replace("| `clients`, `notifications` |", "| `clients`, `notifications`, `factory` |", 1)
    assert documented_imports(moved)["inventory"] == {"clients", "notifications", "factory"}
