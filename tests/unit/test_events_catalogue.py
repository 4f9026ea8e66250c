"""``docs/events.md`` is the catalogue ``events.catalogue`` makes from the contract, and says
what the contract knows of every type."""

from __future__ import annotations

from pathlib import Path

import pytest

from events import EVENT_TYPES, topics
from events.catalogue import COMMAND, catalogue, is_official, main

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_docs_events_md_is_up_to_date_with_the_contract() -> None:
    expected = catalogue()
    actual = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.is_file() else ""
    assert actual == expected, (
        f"docs/events.md is out of date with the event contract; regenerate it: {COMMAND}"
    )


def test_the_catalogue_has_every_type_with_its_topic_and_kind() -> None:
    text = catalogue()
    for model in EVENT_TYPES:
        section = text.split(f"\n### {model.__name__}\n", 1)[1].split("\n### ", 1)[0]
        assert f"- type: `{model.TYPE}`" in section
        assert f"- topic: `lockstep.{model.TOPIC}`" in section
        kind = "official CDEvents type" if is_official(model) else "Lockstep custom event"
        assert f"- kind: {kind}" in section
        assert ("sent **to** Lockstep" in section) is model.INBOUND
        assert "| `subject.id` | string | yes |" in section
    assert f"`lockstep.{topics.DLQ}`" in text
    assert f"{topics.DLQ_HEADER_PREFIX}error" in text


def test_the_command_writes_the_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "docs" / "events.md"
    main([str(target)])
    assert target.read_text(encoding="utf-8") == catalogue()
    assert f"wrote {target}" in capsys.readouterr().out
