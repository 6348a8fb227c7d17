""".env.example lists every variable the app reads (README's "Configuration", docs/production.md): each
name settings.py, gunicorn.conf.py or any other shipped module reads from the environment is in it, as
`NAME=` or `# NAME=`, and it names nothing that neither the app nor docker-compose.yml reads. The README's
table has a row for each of them and for those `make run` (scripts/run.sh) reads, and for nothing else.
docs/reliability.md's table of the settings that make it hold gives the values the code and the chaos
scenarios run with."""

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READERS = ("donutsite/settings.py", "gunicorn.conf.py")
LISTED = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=\S*$", re.MULTILINE)
# scripts/run.sh reads a variable as ${NAME:-default} (or ${NAME:-} to test whether it is set).
RUN_SH_READ = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-")
README_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|", re.MULTILINE)


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", None) == "os"


def _first_name(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def read_by(path: Path) -> set[str]:
    """Names read with env(...), env.str/int/bool/float/list/db(...), os.environ.get(...) or os.environ[...]."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            by_env = getattr(func, "id", None) == "env" or getattr(getattr(func, "value", None), "id", None) == "env"
            by_environ = isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)
            if (by_env or by_environ) and _first_name(node):
                names.add(_first_name(node))
        elif isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.slice, ast.Constant):
            names.add(node.slice.value)
    return names


def literal_defaults(path: Path) -> dict[str, object]:
    """Names read with a literal default (env.int("X", default=5), os.environ.get("X", 30)) -> that default.
    A default computed from something else (DEBUG, the CPU count, BASE_DIR) is left out."""
    defaults = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and _first_name(node)):
            continue
        func = node.func
        given = [keyword.value for keyword in node.keywords if keyword.arg == "default"]
        if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
            given = node.args[1:2]
        elif getattr(getattr(func, "value", None), "id", None) != "env":
            continue
        if given:
            try:
                defaults[_first_name(node)] = ast.literal_eval(given[0])
            except ValueError:
                pass
    return defaults


def shipped_modules() -> list[Path]:
    """Every tracked Python module of the app: not tests, the test harness, the benches or migrations."""
    names = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    left_out = re.compile(r"(^|/)(tests|testsupport|bench|migrations)/|(^|/)conftest\.py$")
    return [ROOT / name for name in names.stdout.split() if not left_out.search(name)]


def app_variables() -> set[str]:
    modules = shipped_modules()
    assert {ROOT / name for name in READERS} <= set(modules)
    return set().union(*(read_by(path) for path in modules))


def listed() -> set[str]:
    return set(LISTED.findall((ROOT / ".env.example").read_text()))


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))


def make_run_variables() -> set[str]:
    """Names scripts/run.sh takes from the environment: read before the script sets them itself (its own
    working variables, such as REDIS_DIR, are set first)."""
    lines = (ROOT / "scripts" / "run.sh").read_text().splitlines()
    code = [line for line in lines if not line.lstrip().startswith("#")]
    names = set()
    for name in set(RUN_SH_READ.findall("\n".join(code))):
        first = next(line for line in code if re.search(rf"\b{name}\b", line))
        if "${" + name + ":-" in first:
            names.add(name)
    return names


def readme_table() -> dict[str, str]:
    """The README's "Configuration" table: variable -> its default column."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return dict(README_ROW.findall(section))


def test_the_reader_finds_each_way_settings_read_the_environment():
    found = app_variables()
    # env.str, env.bool, env.list, env.db, os.environ.get in settings.py; os.environ.get in gunicorn.conf.py
    assert {"DJANGO_SECRET_KEY", "DJANGO_DEBUG", "METRICS_ALLOWED_IPS", "DATABASE_URL"} <= found
    assert {"DJANGO_ENV_FILE", "GUNICORN_BIND", "GUNICORN_ACCESS_LOG"} <= found
    modules = shipped_modules()
    assert ROOT / "factory/management/commands/run_legacy_factory.py" in modules
    assert not any({"tests", "testsupport", "bench", "migrations"} & set(path.parts) for path in modules)
    assert len(found) > 60


def test_env_example_lists_every_variable_the_app_reads():
    missing = sorted(app_variables() - listed())
    assert not missing, (
        f"read by the app but not in .env.example: {missing}. Add each there as a comment line saying what it "
        "does and `# NAME=default`, and a row to README's Configuration table"
    )


def test_env_example_lists_only_variables_something_reads():
    unread = sorted(listed() - app_variables() - compose_variables())
    assert not unread, f"in .env.example but read by neither the app nor docker-compose.yml: {unread}"


def test_the_readers_find_what_make_run_takes_from_the_environment():
    assert {"RUN_REDIS_PORT", "CELERY_BROKER_URL", "FLOWER_BASIC_AUTH"} <= make_run_variables()
    assert "REDIS_DIR" not in make_run_variables(), "set by the script before it is read"
    assert {"DJANGO_SECRET_KEY", "FACTORY_TIMEOUT_SECONDS", "RUN_REDIS_PORT"} <= set(readme_table())


def test_the_readme_table_has_every_variable_env_example_lists_and_make_run_reads():
    missing = sorted((listed() | make_run_variables()) - set(readme_table()))
    assert not missing, f"add a row to README's Configuration table (variable, default, meaning) for: {missing}"


def test_the_readme_table_names_only_variables_something_reads():
    unread = sorted(set(readme_table()) - app_variables() - compose_variables() - make_run_variables())
    assert not unread, f"README's Configuration table has rows for variables nothing reads: {unread}"


def _as_written(default: object) -> str:
    """A default as .env.example and the README write it: 1/0 for booleans, lists comma-separated."""
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, list):
        return ",".join(default)
    return str(default)


def _same(written: str, default: object) -> bool:
    if isinstance(default, float) and not isinstance(default, bool):
        return written != "" and float(written) == default
    return written == _as_written(default)


def test_env_example_and_the_readme_give_each_literal_default_the_code_has():
    defaults = {name: value for path in READERS for name, value in literal_defaults(ROOT / path).items()}
    assert defaults["FACTORY_TIMEOUT_SECONDS"] == 8.0 and defaults["GUNICORN_TIMEOUT"] == 30
    # A commented-out line shows the default; an uncommented one is an example to keep or change.
    commented = dict(re.findall(r"^# ([A-Z][A-Z0-9_]*)=(\S*)$", (ROOT / ".env.example").read_text(), re.M))
    table = readme_table()
    wrong = []
    for name, default in sorted(defaults.items()):
        if name in commented and not _same(commented[name], default):
            wrong.append(f".env.example: {name}={commented[name]}, the code's default is {default!r}")
        if name not in table:
            wrong.append(f"README: {name} has no row in the Configuration table")
            continue
        cell = table[name].strip()
        shown = re.match(r"`([^`]*)`", cell)
        if shown is None and _as_written(default) != "":
            wrong.append(f"README: {name} default {cell!r}, the code's is {default!r}")
        if shown is not None and not _same(shown.group(1), default):
            wrong.append(f"README: {name} default {cell!r}, the code's is {default!r}")
    assert not wrong, "a default changed in the code but not where it is written down:\n" + "\n".join(wrong)


def settings_literals() -> dict[str, object]:
    """Every setting settings.py gives a literal value (CELERY_TASK_ACKS_LATE = True) or reads from the
    environment with a literal default (FACTORY_MAX_ATTEMPTS = env.int(..., default=6)): name -> value."""
    values = {}
    for node in ast.parse((ROOT / "donutsite/settings.py").read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values | literal_defaults(ROOT / "donutsite/settings.py")


def _table_value(written: str) -> object:
    """A value as the reliability table writes it: on/off, or a number with an optional unit of seconds."""
    written = written.strip()
    if written in ("on", "off"):
        return written == "on"
    return float(written.removesuffix(" s"))


def reliability_table_problems(text: str, values: dict[str, object], scenarios: dict[str, str]) -> list[str]:
    """docs/reliability.md's "The settings that make it hold": each setting of settings.py it names, with
    the production value (the code's) and the scenarios' (the chaos harness's TIMING, else the code's)."""
    section = text.split("\n## The settings that make it hold\n", 1)[1].split("\n## ", 1)[0]
    problems, checked = [], set()
    for line in section.splitlines():
        if not line.startswith("| "):
            continue
        named, production, in_scenarios = (cell.strip() for cell in line.strip("|").split("|")[:3])
        names = re.findall(r"`([^`]+)`", named)
        written = re.split(r" / |, ", production)
        written = written * len(names) if len(written) == 1 else written
        scenario = re.split(r" / |, ", in_scenarios) if in_scenarios != "same" else written
        scenario = scenario * len(names) if len(scenario) == 1 else scenario
        if not len(names) == len(written) == len(scenario):
            continue  # a row whose values do not pair with its names one by one (none of settings.py's)
        for name, shown, shown_in_scenarios in zip(names, written, scenario, strict=True):
            if name not in values or isinstance(values[name], str | list | dict):
                continue
            code = values[name]
            expected = {"production": code, "scenarios": scenarios.get(name, code)}
            for column, cell in (("production", shown), ("scenarios", shown_in_scenarios)):
                want = expected[column]
                want = want if isinstance(want, bool) else float(want)
                if _table_value(cell) != want:
                    problems.append(f"{name}: {column} {cell!r}, the code's is {expected[column]!r}")
            checked.add(name)
    return problems if checked else ["no setting of settings.py found in the table"]


def test_the_reliability_settings_table_gives_the_values_the_code_and_the_scenarios_run_with():
    from testsupport.chaos import ChaosSystem

    text = (ROOT / "docs" / "reliability.md").read_text()
    values = settings_literals()
    assert values["CELERY_TASK_ACKS_LATE"] is True and values["FACTORY_MAX_ATTEMPTS"] == 6
    assert reliability_table_problems(text, values, ChaosSystem.TIMING) == []
    # The check reads the table: a production value or a scenario's that is not the code's is found.
    wrong = text.replace("| `FACTORY_MAX_ATTEMPTS` | 6 | 5 |", "| `FACTORY_MAX_ATTEMPTS` | 5 | 6 |")
    assert wrong != text
    assert reliability_table_problems(wrong, values, ChaosSystem.TIMING) == [
        "FACTORY_MAX_ATTEMPTS: production '5', the code's is 6",
        "FACTORY_MAX_ATTEMPTS: scenarios '6', the code's is '5'",
    ]
