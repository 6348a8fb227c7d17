"""The alert kinds in notifications.alerts (KINDS: what ALERTS_DISABLED_KINDS takes; OWN_KINDS) are the
ones the shipped code writes: every literal kind of an alert_raise call or an Alert row it creates. And
docs/operations.md's table of alerts has a row for each of them, and for no other kind, and
docs/architecture.md's "Raised by" names each; both give a raised kind the severity the code raises it at.
Every context key an alert_raise call gives is labelled for its messages (FACT_LABELS) or listed as not shown."""

import ast
import re

import pytest

from donutsite.tests.test_env_example import ROOT, shipped_modules
from factory.services import restock_dead_letter_context
from notifications.alerts import KINDS, OWN_KINDS
from notifications.deliveries import FACT_LABELS


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


def _value(node: ast.AST, constants: dict[str, str]) -> str | None:
    """A keyword's string: "a", a module constant naming one, or Severity.CRITICAL ("critical")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "Severity":
        return node.attr.lower()
    return None


def written_kinds(source: str) -> dict[str, set[str]]:
    """alert_raise / Alert.objects.create -> the kinds a module passes them as a string or its own constant."""
    found = {"alert_raise": set(), "Alert.objects.create": set()}
    for called, given in _calls(source):
        if called in found and given.get("kind"):
            found[called].add(given["kind"])
    return found


def raised_severities(source: str) -> dict[str, set[str]]:
    """kind -> the severities a module's alert_raise calls give it."""
    found = {}
    for called, given in _calls(source):
        if called == "alert_raise" and given.get("kind") and given.get("severity"):
            found.setdefault(given["kind"], set()).add(given["severity"])
    return found


def _calls(source: str) -> list[tuple[str, dict[str, str | None]]]:
    tree = ast.parse(source)
    constants = _constants(tree)
    return [
        (_called(node), {keyword.arg: _value(keyword.value, constants) for keyword in node.keywords})
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    ]


def code_kinds() -> dict[str, set[str]]:
    found = {"alert_raise": set(), "Alert.objects.create": set()}
    for path in shipped_modules():
        for called, kinds in written_kinds(path.read_text()).items():
            found[called] |= kinds
    return found


def code_severities() -> dict[str, set[str]]:
    found = {}
    for path in shipped_modules():
        for kind, severities in raised_severities(path.read_text()).items():
            found.setdefault(kind, set()).update(severities)
    return found


def test_the_reader_finds_literal_and_constant_kinds():
    source = 'SWEPT = "swept"\nalert_raise(kind="a")\nalerts.alert_raise(kind=SWEPT)\nAlert.objects.create(kind="b")\n'
    assert written_kinds(source) == {"alert_raise": {"a", "swept"}, "Alert.objects.create": {"b"}}
    assert ROOT / "factory/services.py" in shipped_modules()
    source = 'alert_raise(kind="a", severity="info")\nalert_raise(kind="b", severity=Severity.CRITICAL)\n'
    assert raised_severities(source) == {"a": {"info"}, "b": {"critical"}}
    assert set(code_severities()) == code_kinds()["alert_raise"], "each raise names its severity as the reader reads it"


def test_kinds_are_the_ones_alert_raise_is_called_with():
    raised = code_kinds()["alert_raise"]
    assert not raised - set(KINDS), f"add these to KINDS in notifications/alerts.py: {sorted(raised - set(KINDS))}"
    assert not set(KINDS) - raised, (
        f"nothing raises these: {sorted(set(KINDS) - raised)}. A kind joins KINDS in the change whose "
        "alert_raise(kind=...) first raises it (ALERTS_DISABLED_KINDS would switch off nothing); until then "
        "take it out of KINDS"
    )


def test_own_kinds_are_the_rows_written_without_alert_raise():
    assert code_kinds()["Alert.objects.create"] == set(OWN_KINDS)


# docs/operations.md's "When an alert arrives": each row's first cell names its kind, (kind `dead_letter`),
# and the second its severity.
ALERT_ROW = re.compile(r"^\| ([^|]*) \| ([^|]*) \|", re.MULTILINE)
NAMED_KIND = re.compile(r"\(kind `([a-z_]+)`\)")


def documented_severities(text: str) -> dict[str, str]:
    section = text.split("\n## When an alert arrives\n", 1)[1].split("\n## ", 1)[0]
    return {
        kind: severity.strip() for alert, severity in ALERT_ROW.findall(section) for kind in NAMED_KIND.findall(alert)
    }


def documented_kinds(text: str) -> list[str]:
    return list(documented_severities(text))


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


def test_the_alert_table_gives_each_kind_the_severity_it_is_raised_at():
    documented = documented_severities((ROOT / "docs" / "operations.md").read_text())
    wrong = {
        kind: f"{documented.get(kind)} (raised at {sorted(raised)})"
        for kind, raised in code_severities().items()
        if documented.get(kind) not in raised
    }
    assert not wrong, f'docs/operations.md, "When an alert arrives": correct the severity cell of {wrong}'


# docs/architecture.md's "Raised by" (Alerts) names each kind with its severity: "a dead letter (`dead_letter`,
# critical; ...)".
NAMED_WITH_SEVERITY = re.compile(r"\(`([a-z_]+)`, (info|warning|critical)\b")


def architecture_severities(text: str) -> dict[str, str]:
    paragraph = text.split("\nRaised by ", 1)[1].split("\n\n", 1)[0]
    return dict(NAMED_WITH_SEVERITY.findall(paragraph))


def test_the_architecture_names_each_kind_with_the_severity_it_is_raised_at():
    documented = architecture_severities((ROOT / "docs" / "architecture.md").read_text())
    missing = sorted(set(KINDS) - set(documented))
    assert not missing, (
        'docs/architecture.md, "Raised by" (Alerts): name what raises each of these and how it settles, '
        f'as "(`kind`, severity; ...)": {missing}'
    )
    wrong = {
        kind: f"{documented.get(kind)}, raised at {sorted(raised)}"
        for kind, raised in code_severities().items()
        if documented.get(kind) not in raised
    }
    assert not wrong, f'docs/architecture.md, "Raised by": correct the severity of {wrong}'
    unknown = sorted(set(documented) - set(KINDS) - set(OWN_KINDS))
    assert not unknown, f'docs/architecture.md, "Raised by": the code writes no alert of these kinds: {unknown}'


# Context keys alerts are raised with that their messages show as no field: the alert's title or text says
# each, and the admin shows the whole context.
NOT_SHOWN = {
    "order_id",  # the factory's receipt warnings
    "on_hand",
    "ordered",
    "reported",
    "reported_sku",  # factory_callback_mismatch
    "reported_order_id",
    "status",  # restock_overdue
    "reason",
    "address",  # forged_callback
    "refused_in_previous_window",
    "sweep",  # sweep_stopped
}


def context_keys(source: str) -> set[str]:
    """The keys of the context={...} each alert_raise call in a module gives; what the dict spreads in as
    "**name", and a context that is no dict display as its source text (its keys are known only at run time)."""
    keys = set()
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and _called(node) == "alert_raise"):
            continue
        for keyword in node.keywords:
            if keyword.arg == "context" and isinstance(keyword.value, ast.Dict):
                given = zip(keyword.value.keys, keyword.value.values, strict=True)
                keys |= {_key(key) if key else f"**{ast.unparse(value)}" for key, value in given}
            elif keyword.arg == "context":
                keys.add(ast.unparse(keyword.value))
    return keys


def _key(key: ast.expr) -> str:
    return key.value if isinstance(key, ast.Constant) else ast.unparse(key)


def test_the_context_reader_finds_every_key_a_call_gives():
    source = (
        'alert_raise(kind="a", context={"sku": s, RESTOCK: 1, **extra})\n'
        'alerts.alert_raise(kind="b", context=built)\n'
        'other(context={"not_an_alert": 1})\n'
    )
    assert context_keys(source) == {"sku", "RESTOCK", "**extra", "built"}


@pytest.mark.django_db
def test_every_context_key_an_alert_is_raised_with_is_labelled_or_listed_as_not_shown():
    # factory_cancelled, factory_over_quantity and stock_over_capacity gave the restock as "restock", which no
    # label named: Slack showed no Restock field and no link to it.
    raised = set().union(*(context_keys(path.read_text()) for path in shipped_modules()))
    # dead_letter_record's alert spreads in the dead letter's context (factory/retries.py): the restock task's.
    raised = raised - {"**context"} | set(restock_dead_letter_context(1))
    unknown = sorted(raised - set(FACT_LABELS) - NOT_SHOWN)
    assert not unknown, (
        f"alerts are raised with context keys {unknown}: label each in FACT_LABELS (notifications/deliveries.py) "
        "if a message should show it, else add it to NOT_SHOWN here if the alert's title or text says it. A "
        "context built elsewhere than in the call is read by no one: write its keys in the call"
    )
    assert not NOT_SHOWN - raised, f"no alert is raised with {sorted(NOT_SHOWN - raised)}: take them out of NOT_SHOWN"
    assert not NOT_SHOWN & set(FACT_LABELS), "a key is labelled or not shown, not both"
