"""Parts of the bus that need no server: dead letters, routing, settings, topic names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka.errors import CorruptRecordException, KafkaConnectionError, KafkaTimeoutError
from pydantic import ValidationError

from events import ArtifactPackaged, KafkaRecord, TestSuiteRunFinished, decode, encode, topics
from shared.bus import Router
from shared.bus.consumer import content_digest, unreadable_fetch
from shared.bus.dlq import dead_letter, reason_of
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_a_dead_letter_keeps_the_original_record_and_says_why() -> None:
    original = KafkaRecord(
        topic="lockstep.artifacts",
        key=b"checkout",
        value=b"\x00not json",
        headers=(("ce_type", b"x"), ("traceparent", b"00-abc")),
        partition=3,
        offset=42,
    )
    dead = dead_letter(
        original,
        dlq_topic="lockstep.dlq",
        error="value is not valid JSON",
        stage="decode",
        group="lockstep.artifacts",
        attempts=1,
    )
    assert dead.topic == "lockstep.dlq"
    assert (dead.key, dead.value) == (original.key, original.value)
    assert dead.headers[:2] == original.headers
    why = reason_of(dead)
    assert why["error"] == "value is not valid JSON"
    assert (why["topic"], why["partition"], why["offset"]) == ("lockstep.artifacts", "3", "42")
    assert (
        why["stage"] == "decode" and why["attempts"] == "1" and why["group"] == "lockstep.artifacts"
    )


def test_dead_lettering_a_dead_letter_does_not_pile_up_headers() -> None:
    first = dead_letter(
        KafkaRecord(topic="a", key=None, value=b"v", partition=0, offset=1),
        dlq_topic="d",
        error="e1",
        stage="decode",
        group="g",
        attempts=1,
    )
    again = dead_letter(first, dlq_topic="d", error="e2", stage="handle", group="g", attempts=3)
    assert reason_of(again)["error"] == "e2"
    assert len([h for h in again.headers if h[0] == "lockstep.dlq.error"]) == 1


def test_router_knows_its_topics_and_refuses_two_handlers_for_one_type() -> None:
    router = Router()

    @router.handles(ArtifactPackaged, TestSuiteRunFinished)
    async def handle(event: object, ctx: object) -> None:
        return None

    assert router.topics == {topics.ARTIFACTS, topics.EVIDENCE}
    with pytest.raises(ValueError, match="already has a handler"):
        router.handles(ArtifactPackaged)(handle)


def test_infra_creates_the_topics_the_code_uses() -> None:
    listed = [
        line.strip()
        for line in (REPO / "infra" / "topics.txt").read_text().splitlines()
        if line.strip()
    ]
    assert listed == Settings(namespace="lockstep").all_topics()


def test_settings_namespace_names_topics_groups_and_schemas() -> None:
    s = Settings(namespace="staging2")
    assert s.topic(topics.ARTIFACTS) == "staging2.artifacts"
    assert s.group_id("artifacts") == "staging2.artifacts"
    assert s.db_schema("artifacts") == "staging2_artifacts"
    with pytest.raises(ValidationError, match="namespace must be"):
        Settings(namespace="Prod-EU")


def test_only_errors_about_the_fetched_records_start_a_search_for_the_record_at_fault() -> None:
    bad_name = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    assert unreadable_fetch(bad_name)
    assert unreadable_fetch(CorruptRecordException("Invalid CRC"))
    assert not unreadable_fetch(KafkaConnectionError("broker away"))  # wait, do not skip
    assert not unreadable_fetch(KafkaTimeoutError())
    assert not unreadable_fetch(RuntimeError("not the record's fault"))


def test_the_duplicate_digest_is_of_the_event_as_read_not_of_its_bytes() -> None:
    event = ArtifactPackaged.build(
        service="checkout", version="1.4.2", digest="sha256:" + "a" * 64, commit="abc1234"
    )
    record = encode(event, topic="lockstep.artifacts")
    reordered = json.dumps(dict(reversed(json.loads(record.value or b"").items())), indent=2)
    again = KafkaRecord(
        topic=record.topic, key=record.key, value=reordered.encode(), headers=record.headers
    )
    assert again.value != record.value
    assert content_digest(decode(again).event) == content_digest(event)  # the same event
    other = ArtifactPackaged.model_validate_json(
        (record.value or b"").replace(b'"abc1234"', b'"abc9999"')
    )
    assert other.id == event.id and content_digest(other) != content_digest(event)
