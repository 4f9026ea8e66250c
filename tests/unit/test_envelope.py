"""The Kafka envelope: what goes out comes back, and what is wrong is named."""

from __future__ import annotations

import dataclasses
import json
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import (
    ArtifactPackaged,
    ArtifactRef,
    BenchmarkFinished,
    InvalidEvent,
    KafkaRecord,
    SecurityScanFinished,
    TestSuiteRunFinished,
    decode,
    encode,
)
from events.evidence import Findings, Measurement
from shared.bus import Publisher
from shared.settings import Settings

services = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
versions = st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,4}(-rc\.[0-9])?", fullmatch=True)
digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
    lambda h: "sha256:" + h
)
commits = st.text(alphabet=string.hexdigits.lower()[:16], min_size=7, max_size=40)
trace_ids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).filter(
    lambda t: set(t) != {"0"}
)
span_ids = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16).filter(
    lambda t: set(t) != {"0"}
)
free_text = st.text(  # anything Postgres can store: no surrogates, no NUL
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=40,
)


def packaged(service: str = "checkout", version: str = "1.4.2") -> ArtifactPackaged:
    return ArtifactPackaged.build(
        service=service, version=version, digest="sha256:" + "a" * 64, commit="abc1234"
    )


@given(services, versions, digests, commits, free_text, st.none() | st.tuples(trace_ids, span_ids))
def test_artifact_packaged_round_trips_through_kafka_record(
    service: str, version: str, digest: str, commit: str, repo: str, trace: tuple[str, str] | None
) -> None:
    event = ArtifactPackaged.build(
        service=service, version=version, digest=digest, commit=commit, repo=repo
    )
    traceparent = f"00-{trace[0]}-{trace[1]}-01" if trace else None
    record = encode(
        event,
        topic="lockstep.artifacts",
        trace_headers={"traceparent": traceparent} if traceparent else {},
    )

    decoded = decode(record)

    assert decoded.event == event
    assert decoded.trace_headers.get("traceparent") == traceparent
    assert record.key == service.encode()
    assert isinstance(decoded.event, ArtifactPackaged)
    assert decoded.event.ref() == ArtifactRef(service, version, digest)


@given(
    versions,
    digests,
    st.sampled_from(["success", "failure", "cancel", "error"]),
    st.integers(0, 10_000),
    st.integers(0, 100),
    st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        min_size=1,
        max_size=4,
    ),
)
def test_evidence_round_trips(
    version: str, digest: str, outcome: str, passed: int, high: int, metrics: dict[str, float]
) -> None:
    ref = ArtifactRef("payments", version, digest)
    events = [
        TestSuiteRunFinished.build(artifact=ref, suite="it", outcome=outcome, passed=passed),  # type: ignore[arg-type]
        SecurityScanFinished.build(artifact=ref, scanner="trivy", findings=Findings(high=high)),
        BenchmarkFinished.build(
            artifact=ref,
            benchmark="load",
            metrics={k: Measurement(value=v, unit="ms") for k, v in metrics.items()},
        ),
    ]
    for event in events:
        decoded = decode(encode(event, topic="lockstep.evidence")).event
        assert decoded == event
        assert decoded.artifact_ref() == ref  # type: ignore[attr-defined]


def test_records_carry_cloudevents_binary_mode_headers() -> None:
    event = packaged()
    record = encode(event, topic="lockstep.artifacts")
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == event.id.encode()
    assert headers["ce_type"] == b"dev.cdevents.artifact.packaged.0.3.0"
    assert headers["ce_source"] == b"lockstep/cli"
    assert headers["content-type"] == b"application/json"
    assert headers["ce_time"].endswith(b"Z")
    assert json.loads(record.value or b"")["context"]["id"] == event.id


def test_a_newer_minor_version_is_read_and_unknown_fields_ignored() -> None:
    event = packaged()
    doc = json.loads(event.to_json())
    doc["context"]["type"] = "dev.cdevents.artifact.packaged.0.4.0"
    doc["subject"]["content"]["newField"] = {"anything": 1}
    record = _with(
        encode(event, topic="t"),
        value=json.dumps(doc).encode(),
        ce_type="dev.cdevents.artifact.packaged.0.4.0",
    )
    assert decode(record).event.ref() == event.ref()  # type: ignore[attr-defined]


def _with(
    record: KafkaRecord, *, value: bytes | None = b"<keep>", drop: str | None = None, **headers: str
) -> KafkaRecord:
    kept = [(k, v) for k, v in record.headers if k != drop and k not in headers]
    kept += [(k, v.encode()) for k, v in headers.items()]
    new_value = record.value if value == b"<keep>" else value
    return dataclasses.replace(record, value=new_value, headers=tuple(kept))


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda r: _with(r, value=b"{not json"), "value", ["not valid JSON"]),
        (
            lambda r: _with(r, drop="ce_type"),
            "ce_type",
            ["missing header ce_type", "binary content mode"],
        ),
        (lambda r: _with(r, drop="ce_id"), "ce_id", ["missing header ce_id"]),
        (
            lambda r: _with(r, ce_type="dev.cdevents.pipeline.exploded.0.1.0"),
            "ce_type",
            ["unknown event type", "dev.cdevents.artifact.packaged.0.3.0"],
        ),
        (lambda r: _with(r, ce_type="not-a-type"), "ce_type", ["unknown event type 'not-a-type'"]),
        (lambda r: _with(r, ce_specversion="0.3"), "ce_specversion", ["CloudEvents 1.0"]),
        (lambda r: _with(r, value=None), None, ["no value"]),
        (lambda r: _with(r, value=b"x" * 600_000), "value", ["600000 bytes", "limit"]),
        (
            lambda r: _with(r, **{"content-type": "application/cloudevents+json"}),
            "content-type",
            ["structured mode"],
        ),
        (
            lambda r: _with(r, **{"content-type": "text/plain"}),
            "content-type",
            ["application/json"],
        ),
        (lambda r: _with(r, ce_id="another-id"), "context.id", ["disagrees with header ce_id"]),
        (
            lambda r: _with(r, ce_type="dev.cdevents.artifact.published.0.3.0"),
            "customData",
            ["customData: is required but missing"],
        ),
    ],
)
def test_bad_records_are_refused_with_the_field_and_the_fix(mutate, field, words) -> None:  # type: ignore[no-untyped-def]
    record = mutate(encode(packaged(), topic="lockstep.artifacts"))
    with pytest.raises(InvalidEvent) as caught:
        decode(record)
    assert caught.value.field == field
    for word in words:
        assert word in caught.value.reason


def test_schema_violation_names_every_faulty_path() -> None:
    doc = json.loads(packaged().to_json())
    del doc["subject"]["content"]["change"]
    doc["context"]["timestamp"] = "yesterday"
    record = _with(
        encode(packaged(), topic="t"), value=json.dumps(doc).encode(), ce_id=doc["context"]["id"]
    )
    with pytest.raises(InvalidEvent) as caught:
        decode(record)
    reason = caught.value.reason
    assert "subject.content.change: is required but missing" in reason
    assert "context.timestamp:" in reason
    assert "lockstep schema export" in reason


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda r: _with(r, ce_type="dev.cdevents.artifact.packaged.0.3.0\x00"), ["NUL"]),
        (lambda r: dataclasses.replace(r, headers=(*r.headers, ("x\x00y", b"1"))), ["NUL"]),
        (
            lambda r: _with(r, value=(r.value or b"").replace(b'"abc1234"', b'"abc\\u0000"')),
            ["NUL"],
        ),
    ],
)
def test_text_postgres_cannot_store_is_refused_at_the_edge(mutate, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidEvent) as caught:
        decode(mutate(encode(packaged(), topic="t")))
    for word in words:
        assert word in caught.value.reason


def test_an_event_id_longer_than_a_key_may_be_is_refused() -> None:
    doc = json.loads(packaged().to_json())
    doc["context"]["id"] = "x" * 2000
    record = _with(encode(packaged(), topic="t"), value=json.dumps(doc).encode(), ce_id="x" * 2000)
    with pytest.raises(InvalidEvent) as caught:
        decode(record)
    assert caught.value.field == "context.id"
    assert "at most 1024 characters" in caught.value.reason


@pytest.mark.parametrize("missing", ["timestamp", "specversion", "id", "source"])
def test_context_fields_cdevents_requires_are_required(missing: str) -> None:
    doc = json.loads(packaged().to_json())
    del doc["context"][missing]
    with pytest.raises(InvalidEvent) as caught:
        decode(
            _with(
                encode(packaged(), topic="t"),
                value=json.dumps(doc).encode(),
                ce_id=doc["context"].get("id", "i"),
            )
        )
    assert f"context.{missing}: is required but missing" in caught.value.reason


def test_a_test_suite_result_without_its_artifact_says_how_to_name_it() -> None:
    event = TestSuiteRunFinished.build(
        artifact=ArtifactRef("checkout", "1.4.2"), suite="it", outcome="success"
    )
    doc = json.loads(event.to_json())
    del doc["customData"]
    with pytest.raises(InvalidEvent) as caught:
        decode(_with(encode(event, topic="t"), value=json.dumps(doc).encode()))
    assert "customData: is required but missing" in caught.value.reason
    assert "set customData.artifactId to its purl" in caught.value.reason


def test_the_publisher_refuses_what_no_service_could_store() -> None:
    event = ArtifactPackaged.build(
        service="checkout", version="1.4.2", digest="sha256:" + "a" * 64, commit="abc\x00"
    )
    with pytest.raises(InvalidEvent, match="NUL"):
        Publisher(Settings()).record_for(event)
