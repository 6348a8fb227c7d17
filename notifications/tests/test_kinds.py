"""The alert kinds in notifications.alerts (KINDS: what ALERTS_DISABLED_KINDS takes; OWN_KINDS) are the
ones the shipped code writes: every literal kind of an alert_raise call or an Alert row it creates. And
docs/operations.md's table of alerts has a row for each of them, and for no other kind."""

import ast
import re

from donutsite.tests.test_env_example import ROOT, shipped_modules
from notifications.alerts import KINDS, OWN_KINDS


def _called(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        owner = func.value
        if func.attr == "create" and isinstance(owner, ast.Attribute) and getattr(owner.value, "id", None) == "Alert":
            return "Alert.objects.create"
        return func.attr
    return getattr(func, "id", "")


def _constants(tree: ast.Module) -> dict[str, str]:
    """A module's own string constants: FACTORY_DEGRADED = "factory_degraded"."""
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def written_kinds(source: str) -> dict[str, set[str]]:
    """alert_raise / Alert.objects.create -> the kinds a module passes them as a string or its own constant."""
    tree = ast.parse(source)
    constants = _constants(tree)
    found = {"alert_raise": set(), "Alert.objects.create": set()}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _called(node) in found):
            continue
        for keyword in node.keywords:
            if keyword.arg != "kind":
                continue
            if isinstance(keyword.value, ast.Constant):
                found[_called(node)].add(keyword.value.value)
            elif isinstance(keyword.value, ast.Name) and keyword.value.id in constants:
                found[_called(node)].add(constants[keyword.value.id])
    return found


def code_kinds() -> dict[str, set[str]]:
    found = {"alert_raise": set(), "Alert.objects.create": set()}
    for path in shipped_modules():
        for called, kinds in written_kinds(path.read_text()).items():
            found[called] |= kinds
    return found


def test_the_reader_finds_literal_and_constant_kinds():
    source = 'SWEPT = "swept"\nalert_raise(kind="a")\nalerts.alert_raise(kind=SWEPT)\nAlert.objects.create(kind="b")\n'
    assert written_kinds(source) == {"alert_raise": {"a", "swept"}, "Alert.objects.create": {"b"}}
    assert ROOT / "factory/services.py" in shipped_modules()


def test_kinds_are_the_ones_alert_raise_is_called_with():
    raised = code_kinds()["alert_raise"]
    assert not raised - set(KINDS), f"add these to KINDS in notifications/alerts.py: {sorted(raised - set(KINDS))}"
    assert not set(KINDS) - raised, f"nothing raises these; take them out of KINDS: {sorted(set(KINDS) - raised)}"


def test_own_kinds_are_the_rows_written_without_alert_raise():
    assert code_kinds()["Alert.objects.create"] == set(OWN_KINDS)


# docs/operations.md's "When an alert arrives": each row's first cell names its kind, (kind `dead_letter`).
ALERT_ROW = re.compile(r"^\| ([^|]*) \|", re.MULTILINE)
NAMED_KIND = re.compile(r"\(kind `([a-z_]+)`\)")


def documented_kinds(text: str) -> list[str]:
    section = text.split("\n## When an alert arrives\n", 1)[1].split("\n## ", 1)[0]
    return [kind for cell in ALERT_ROW.findall(section) for kind in NAMED_KIND.findall(cell)]


def test_the_alert_table_names_every_kind_the_code_writes_and_no_other():
    documented = set(documented_kinds((ROOT / "docs" / "operations.md").read_text()))
    written = set(KINDS) | set(OWN_KINDS)
    assert not written - documented, (
        'docs/operations.md, "When an alert arrives": add a row (alert, severity, what it means, what to do, '
        f"its first cell ending in (kind `...`)) for: {sorted(written - documented)}"
    )
    assert not documented - written, (
        'docs/operations.md, "When an alert arrives": the code writes no alert of these kinds; take their rows '
        f"out (or correct the kind): {sorted(documented - written)}"
    )


def test_the_alert_table_reader_sees_a_row_come_and_go():
    text = (ROOT / "docs" / "operations.md").read_text()
    row = next(line for line in text.splitlines() if "(kind `sold_out`)" in line)
    assert "sold_out" in documented_kinds(text)
    assert "sold_out" not in documented_kinds(text.replace(row + "\n", ""))
    renamed = documented_kinds(text.replace("(kind `sold_out`)", "(kind `sold_outs`)"))
    assert "sold_outs" in renamed and "sold_out" not in renamed
