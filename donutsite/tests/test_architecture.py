"""The import graph between apps follows the layout in docs/architecture.md: dependencies point one way,
nothing imports ops, donutsite imports no app outside urls.py, and no shipped module imports test code.
Every import counts, at module level and inside functions; migrations and tests are not shipped code."""

import ast
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
