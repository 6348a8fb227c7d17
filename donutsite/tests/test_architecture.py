"""The import graph between apps follows the layout in docs/architecture.md: dependencies point one way,
nothing imports ops, donutsite imports no app outside urls.py, no shipped module imports test code, and
no module imports one that imports it (NEVER_IMPORTS). Every import counts, at module level and inside
functions; migrations and tests are not shipped code. The map's "may import" column in
docs/architecture.md is the ALLOWED table below."""

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

# module -> the modules of its app it must never import: each imports it, and the import would close a cycle
NEVER_IMPORTS = {
    # redrive.py builds on services (restock_dispatch, the resolving); receipts.py too (the order row, the
    # overdue alert's close, settling dead letters)
    "factory/services.py": {"factory.redrive", "factory.receipts"},
}


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


def imported_names(tree: ast.AST, package: str):
    """Every module an import may bring in, by its full name: `from factory import redrive` names
    factory.redrive as well as factory, and a relative import is read as if from `package`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:  # from . import x, from .x import y: counted from the importing module's package
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def cycle_edges():
    for relative, never in NEVER_IMPORTS.items():
        package = ".".join(Path(relative).with_suffix("").parts[:-1])
        for lineno, module in imported_names(ast.parse((ROOT / relative).read_text(), relative), package):
            if module in never:
                yield f"{relative}:{lineno} imports {module}, which imports it"


def test_no_module_imports_one_that_imports_it():
    assert list(cycle_edges()) == []


def test_the_cycle_check_sees_every_way_of_naming_the_module():
    imports = [
        "import factory.redrive",
        "from factory.redrive import dead_letter_redrive",
        "def f():\n    from factory import redrive",
        "from . import redrive",
        "from .redrive import Redrive",
    ]
    for source in imports:
        named = [module for _, module in imported_names(ast.parse(source), "factory")]
        assert "factory.redrive" in named, source
    assert "factory.redrive" not in [
        module for _, module in imported_names(ast.parse("from factory import services"), "factory")
    ]


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
