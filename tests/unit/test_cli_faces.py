"""What the command line (``cli/``) and the examples (``examples/``) may use of a service,
read from their imports (top-level and inside functions):

- a service only through its public face, ``services.<name>.api``;
- ``services.catalog`` (the list of what ``lockstep run`` starts, and of the demo's
  services): it names each service's assembly and nothing else;
- never a service's tables: no SQL in a string of theirs (a service's api reads them);
- one composition root: ``Settings()`` is built only in ``cli/root.py``, and the command
  line reads no environment variable (a child process is handed ``os.environ.copy()``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_SERVICE_MODULES = {"services.catalog"}
SQL = re.compile(
    r"\bSELECT\b.+\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(CREATE|ALTER|DROP)\s+(TABLE|SCHEMA|INDEX)\b",
    re.IGNORECASE | re.DOTALL,
)


def modules() -> list[Path]:
    found = sorted((ROOT / "cli").rglob("*.py")) + sorted((ROOT / "examples").rglob("*.py"))
    assert len(found) > 10, "the command line's modules are not where this test looks"
    return found


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import; ``from a.b import c`` gives ``a.b.c``
    (so that ``from services.flags import store`` is seen for what it is)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.count(".") >= 2:
                yield node.lineno, node.module
            else:
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"


def allowed(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "services" or len(parts) == 1:
        return True
    if module in ALLOWED_SERVICE_MODULES or module.startswith("services.catalog."):
        return True
    return len(parts) >= 3 and parts[2] == "api"


def strings(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):  # an f-string, its literal parts together
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            yield node.lineno, " ".join(str(p) for p in parts)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_services_are_used_only_through_their_public_faces() -> None:
    found = [
        f"{rel(path)}:{line}: imports {module}"
        for path in modules()
        for line, module in imported(path)
        if not allowed(module)
    ]
    assert found == []


def test_no_sql_on_a_services_tables() -> None:
    found = [
        f"{rel(path)}:{line}: {text[:60]!r}"
        for path in modules()
        for line, text in strings(path)
        if SQL.search(text)
    ]
    assert found == []


def test_settings_are_built_in_one_place_and_the_environment_is_not_read() -> None:
    found = []
    for path in sorted((ROOT / "cli").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # The one use of the environment allowed: a child process's env=os.environ.copy().
        copied = {
            id(node.func.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "copy"
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Settings"
                and path != ROOT / "cli" / "root.py"
            ):
                found.append(f"{rel(path)}:{node.lineno}: Settings()")
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("environ", "getenv")
                and id(node) not in copied
            ):
                found.append(f"{rel(path)}:{node.lineno}: os.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                found.extend(
                    f"{rel(path)}:{node.lineno}: from os import {a.name}"
                    for a in node.names
                    if a.name in ("environ", "getenv")
                )
    assert found == []


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from services.flags import store\n", True),
        ("def f():\n    from services.incidents.actions import resolve\n", True),
        ("import services.promotion.store\n", True),
        ("from services.flags.api import open_flags\n", False),
        ("from services.flags import api\n", False),
        ("from services.catalog import SERVICES\n", False),
        ("from services import catalog\n", False),
        ("from services import flags\n", True),
        ("from shared.settings import Settings\n", False),
    ],
)
def test_the_checker_sees_a_forbidden_import(tmp_path: Path, source: str, bad: bool) -> None:
    module = tmp_path / "m.py"
    module.write_text(source, encoding="utf-8")
    assert any(not allowed(m) for _, m in imported(module)) is bad


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("SELECT environment, service FROM ledger", True),
        ("INSERT INTO drills (incident_id) VALUES ($1)", True),
        ("UPDATE drills SET finished_at = $2", True),
        ("delete from api_keys where key_prefix = $1", True),
        ("Select the flags to remove from the list", True),  # reads like SQL: say it otherwise
        ("Load a flagd flag set into an environment: its $evaluators, metadata and flags.", False),
        ("Update the flag; set --by to who", False),
    ],
)
def test_the_checker_sees_sql(text: str, bad: bool) -> None:
    assert bool(SQL.search(text)) is bad
