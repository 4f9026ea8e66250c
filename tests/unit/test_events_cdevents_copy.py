"""The official CDEvents schemas in ``events/cdevents/`` are the upstream files, unchanged: every
file's sha256 is the one ``SOURCES.json`` records, and no file is missing or extra. The contract
tests (``test_contract.py``) validate against this copy, so a hand-edited schema would make them
prove nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

CDEVENTS_DIR = Path(__file__).resolve().parents[2] / "events" / "cdevents"
SOURCES = CDEVENTS_DIR / "SOURCES.json"

UPSTREAM = "https://github.com/cdevents/spec"
V0_5_1_COMMIT = "df02ce0b6563a13bf35cc109993b03b18da8a14a"  # tag v0.5.1
DRAFT_COMMIT = "8917b1843528f0d28402db2dedc0673243437eb7"  # main, with the approval events


@pytest.fixture(scope="module")
def sources() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SOURCES.read_text(encoding="utf-8"))
    return document


def _copied_files() -> set[str]:
    return {
        p.relative_to(CDEVENTS_DIR).as_posix()
        for p in CDEVENTS_DIR.rglob("*")
        if p.is_file() and p != SOURCES and "__pycache__" not in p.parts
    }


def test_sources_name_the_upstream_commits_and_licence(sources: dict[str, Any]) -> None:
    assert sources["upstream"] == UPSTREAM
    assert sources["license"] == "Apache-2.0"
    assert sources["copies"]["v0.5.1"]["commit"] == V0_5_1_COMMIT
    assert sources["copies"]["v0.5.1"]["ref"] == "tag v0.5.1"
    assert sources["copies"]["draft-0.6.0"]["commit"] == DRAFT_COMMIT
    assert set(sources["copies"]) == {"v0.5.1", "draft-0.6.0", "LICENSE"}
    licence = (CDEVENTS_DIR / sources["licenseFile"]).read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0" in licence


def test_no_file_is_missing_or_extra(sources: dict[str, Any]) -> None:
    listed = set(sources["sha256"])
    on_disk = _copied_files()
    assert not listed - on_disk, f"listed in SOURCES.json but missing: {sorted(listed - on_disk)}"
    assert not on_disk - listed, (
        f"not listed in SOURCES.json: {sorted(on_disk - listed)}; copy only upstream files here, "
        "and record each one's sha256"
    )
    for top in ("v0.5.1/", "draft-0.6.0/", "v0.5.1/links/", "draft-0.6.0/links/"):
        assert any(name.startswith(top) for name in listed), f"nothing under {top}"
    assert "LICENSE" in listed


def test_every_file_is_byte_for_byte_the_recorded_one(sources: dict[str, Any]) -> None:
    changed = [
        name
        for name, digest in sorted(sources["sha256"].items())
        if (CDEVENTS_DIR / name).is_file()
        and hashlib.sha256((CDEVENTS_DIR / name).read_bytes()).hexdigest() != digest
    ]
    assert not changed, (
        f"changed since it was copied from {UPSTREAM}: {changed}; the official schemas are "
        "copied unchanged (replace them from upstream, then update SOURCES.json)"
    )
    assert all(
        len(d) == 64 and set(d) <= set("0123456789abcdef") for d in sources["sha256"].values()
    )
