"""The rooms' rules, read from the imports themselves (top-level and inside functions):

- the contract (``events``) imports no runtime, no domain package and no service;
- the runtime (``shared``) imports no service, no command line and no domain package;
- the release model (``policy``) imports no service and no command line;
- services never import each other, nor the command line (``services/catalog.py``, the list
  of what ``lockstep run`` can start, is the one place that names every service's ``app``).

What the command line may use of a service is checked in ``test_cli_faces.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("events", "shared", "policy", "services", "cli")


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def modules(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules in {package}/"
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def violations(package: str, forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in modules(package)
        for line, module in imports_of(path)
        if top(module) in forbidden
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("events", {"shared", "policy", "services", "cli"}),
        ("shared", {"policy", "services", "cli"}),
        ("policy", {"services", "cli"}),
    ],
)
def test_a_lower_room_imports_nothing_above_it(package: str, forbidden: set[str]) -> None:
    assert violations(package, forbidden) == []


def test_services_never_import_each_other_nor_the_command_line() -> None:
    found = []
    for path in modules("services"):
        rel = path.relative_to(ROOT / "services")
        if rel == Path("catalog.py"):
            continue
        own = rel.parts[0] if len(rel.parts) > 1 else None
        for line, module in imports_of(path):
            parts = module.split(".")
            if parts[0] == "cli" or (parts[0] == "services" and len(parts) > 1 and parts[1] != own):
                found.append(f"services/{rel}:{line}: imports {module}")
    assert found == []


def test_the_catalog_finds_every_service_by_its_folder() -> None:
    from services.catalog import SERVICES, spec

    named = [m for _, m in imports_of(ROOT / "services" / "catalog.py") if top(m) == "services"]
    assert named == []  # imported by name, only when run
    folders = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "app.py").is_file())
    assert sorted(SERVICES) == folders
    assert {spec(name).name for name in SERVICES} == set(folders)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The rule reader itself: a function-local import counts as much as a top-level one.
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from services.gates import store\n", encoding="utf-8")
    assert list(imports_of(module)) == [(2, "services.gates")]
