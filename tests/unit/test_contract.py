"""The event contract against the world outside: the official CDEvents schemas, what other
CDEvents producers send, the official CloudEvents SDK, and the exported JSON Schemas and
AsyncAPI document (docs/architecture.md). No servers."""

from __future__ import annotations

import copy
import functools
import inspect
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pydantic
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from events import (
    EVENT_TYPES,
    ArtifactPackaged,
    ArtifactRef,
    ArtifactRefError,
    ArtifactRejected,
    BenchmarkFinished,
    CDEvent,
    InvalidEvent,
    KafkaRecord,
    decode,
    encode,
    known_types,
)
from events import topics as topic_names
from events.artifacts import (
    RejectedContent,
    RejectedSubject,
)
from events.evidence import Measurement
from events.policy import PolicyUpdated
from events.schema import DEFAULT_BOOTSTRAP, DEFAULT_PARTITIONS, export, schema_id
from events.testing import sample, variants
from policy import load as load_release_model
from policy import policy_updated
from shared.bus.dlq import HEADER_PREFIX, dead_letter, reason_of
from shared.settings import Settings

# the official schemas, copied unchanged into the repository (events/cdevents/SOURCES.json)
CDEVENTS_DIR = Path(__file__).resolve().parents[2] / "events" / "cdevents"
OFFICIAL_DIR = CDEVENTS_DIR / "v0.5.1"
FORMATS = Draft202012Validator.FORMAT_CHECKER

DIGEST = "sha256:" + "3f9a0c17" * 8
OTHER_DIGEST = "sha256:" + "0b" * 32
COMMIT = "9c1e2f4a7b3d5e6f8a0b1c2d3e4f5a6b7c8d9e0f"
REPO = "https://github.com/acme/checkout"
SBOM_URI = "https://sbom.acme.example/checkout/1.4.2.spdx.json"
REF = ArtifactRef("checkout", "1.4.2", DIGEST)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CUSTOM_TYPE_RE = re.compile(
    r"^dev\.cdeventsx\.(?P<tool>[a-z0-9]+)-(?P<subject>[a-z][a-z0-9]*)"
    r"\.(?P<predicate>[a-z][a-z0-9]*)\.(?P<version>\d+\.\d+\.\d+)$"
)


# --- realistic events of every type: events.testing, and the release model's own -------------


def _variant(model: type[CDEvent], index: int) -> CDEvent:
    return variants(model)[index]


def _policy_from_the_release_model() -> CDEvent:
    """policy.updated as the policy package builds it from the example release model."""
    root = Path(__file__).resolve().parents[2]
    return policy_updated(
        load_release_model(root / "infra" / "release-model.yaml"), updated_by="platform-team"
    )


ALL_SAMPLES = [
    pytest.param(functools.partial(_variant, model, i), id=f"{model.TYPE}#{i}")
    for model in EVENT_TYPES
    for i in range(len(variants(model)))
] + [pytest.param(_policy_from_the_release_model, id=f"{PolicyUpdated.TYPE}#release-model")]
CDEVENTS_SAMPLES = [p for p in ALL_SAMPLES if str(p.id).startswith("dev.cdevents.")]
CUSTOM_SAMPLES = [p for p in ALL_SAMPLES if str(p.id).startswith("dev.cdeventsx.")]
CUSTOM_MODELS = [m for m in EVENT_TYPES if m.TYPE.startswith("dev.cdeventsx.")]


def _doc(event: CDEvent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.to_json())
    return data


def _errors(validator: Draft202012Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def test_every_event_type_has_samples_and_is_cdevents_or_custom() -> None:
    sampled = {str(p.id).split("#")[0] for p in ALL_SAMPLES}
    assert sampled == set(known_types()), "add samples for new event types to events/testing.py"
    for model in EVENT_TYPES:
        assert model.TYPE.startswith(("dev.cdevents.", "dev.cdeventsx.")), model.TYPE
        for event in variants(model):
            assert type(event) is model
    assert CDEVENTS_SAMPLES and CUSTOM_SAMPLES and CUSTOM_MODELS


# --- a. the official CDEvents v0.5.1 schemas -------------------------------------------------


class Official:
    """Every file under events/cdevents registered by its $id, and each event schema by type."""

    def __init__(self, root: Path) -> None:
        if not (root / "v0.5.1").is_dir():
            pytest.fail(
                f"the official CDEvents schemas are not at {root / 'v0.5.1'} (events/cdevents/ "
                "in the repository); they are needed to check the contract"
            )
        resources: list[tuple[str, Resource[Any]]] = []
        self.by_type: dict[str, dict[str, Any]] = {}
        self.by_name: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in root.rglob("*.json") if p.name != "SOURCES.json"):
            schema = json.loads(path.read_text(encoding="utf-8"))
            resources.append((schema["$id"], Resource.from_contents(schema, DRAFT202012)))
            if path.parent in (root / "v0.5.1", root / "draft-0.6.0"):  # approvals: the draft
                self.by_name[path.stem] = schema
                for event_type in schema["properties"]["context"]["properties"]["type"]["enum"]:
                    self.by_type[event_type] = schema
        self.registry: Registry[Any] = Registry().with_resources(resources)

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator(schema, registry=self.registry, format_checker=FORMATS)

    def for_type(self, event_type: str) -> Draft202012Validator:
        schema = self.by_type.get(event_type)
        if schema is None:
            pytest.fail(f"{event_type} has no official CDEvents schema (v0.5.1 or draft 0.6.0)")
        return self.validator(schema)


@pytest.fixture(scope="module")
def official() -> Official:
    missing = {"date-time", "uri", "uri-reference"} - set(FORMATS.checkers)
    assert not missing, (
        f"jsonschema cannot check the formats {sorted(missing)}: install rfc3339-validator and "
        "rfc3986-validator, or format checking is silently off"
    )
    return Official(CDEVENTS_DIR)


def test_official_schemas_are_all_registered_and_resolve(official: Official) -> None:
    assert len(official.by_name) >= 40
    for schema in official.by_name.values():
        Draft202012Validator.check_schema(schema)
    # the relative "links/embeddedlinksarray" reference resolves through the registry
    resolved = official.registry.resolver(official.by_name["artifactpackaged"]["$id"]).lookup(
        "links/embeddedlinksarray"
    )
    assert resolved.contents["$id"].endswith("/links/embeddedlinksarray")


@pytest.mark.parametrize("make", CDEVENTS_SAMPLES)
def test_cdevents_typed_event_validates_against_the_official_schema(
    make: Callable[[], CDEvent], official: Official
) -> None:
    event = make()
    errors = _errors(official.for_type(event.context.type), _doc(event))
    assert not errors, f"{event.context.type} breaks the official schema:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("context", "type"), "dev.cdevents.artifact.packaged.0.2.0"),
        (("context", "timestamp"), "yesterday"),
        (("context", "source"), "not a uri reference"),
        (("subject", "content", "sbom", "uri"), "http://[broken"),
        (("subject", "flavour"), "extra"),
        (("subject", "content", "change"), None),
    ],
)
def test_the_official_validator_really_checks(
    path: tuple[str, ...], value: Any, official: Official
) -> None:
    doc = _doc(sample(ArtifactPackaged))
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    assert _errors(official.for_type(ArtifactPackaged.TYPE), doc)


# --- b. what other CDEvents producers send ---------------------------------------------------


def _foreign_packaged(purl: str) -> dict[str, Any]:
    """An artifact.packaged as a Tekton pipeline (via the CDEvents Go SDK) writes it."""
    run = "/apis/tekton.dev/v1/namespaces/ci/pipelineruns/build-checkout-x7k2p"
    return {
        "context": {
            "specversion": "0.5.1",
            "id": "5b8c1f36-2d0e-4c8e-9a51-0c6e8f7d2a11",
            "source": run,
            "type": "dev.cdevents.artifact.packaged.0.3.0",
            "timestamp": "2025-03-04T10:11:12.345678Z",
            "chainId": "f1c2d3e4-0000-4000-8000-000000000001",
        },
        "subject": {
            "id": purl,
            "source": run,
            "content": {"change": {"id": COMMIT, "source": "github.com/acme/checkout"}},
        },
        "customData": {"tekton": {"pipelineRun": "build-checkout-x7k2p", "namespace": "ci"}},
        "customDataContentType": "application/json",
    }


def _record_of(doc: dict[str, Any], topic: str = "lockstep.artifacts") -> KafkaRecord:
    ctx = doc["context"]
    return KafkaRecord(
        topic=topic,
        key=b"checkout",
        value=json.dumps(doc).encode(),
        headers=(
            ("ce_specversion", b"1.0"),
            ("ce_id", ctx["id"].encode()),
            ("ce_source", ctx["source"].encode()),
            ("ce_type", ctx["type"].encode()),
            ("ce_time", ctx["timestamp"].encode()),
            ("ce_subject", doc["subject"]["id"].encode()),
            ("content-type", b"application/json"),
            ("traceparent", TRACEPARENT.encode()),
        ),
    )


@pytest.mark.parametrize(
    "purl",
    [
        f"pkg:oci/checkout@{DIGEST}?tag=1.4.2",
        f"pkg:oci/checkout@{DIGEST.replace(':', '%3A')}"
        "?repository_url=registry.acme.example/team/checkout&tag=1.4.2",
        f"pkg:generic/checkout@1.4.2?checksum={DIGEST}",
        f"pkg:generic/checkout@1.4.2?checksum=sha1:{'c' * 40},{DIGEST}",
    ],
)
def test_a_foreign_artifact_packaged_with_a_digest_is_accepted(
    purl: str, official: Official
) -> None:
    doc = _foreign_packaged(purl)
    assert not _errors(official.for_type(ArtifactPackaged.TYPE), doc), "the sample is not valid"
    decoded = decode(_record_of(doc))
    event = decoded.event
    assert isinstance(event, ArtifactPackaged)
    assert event.id == doc["context"]["id"]
    assert event.source == doc["context"]["source"]
    assert event.context.timestamp == datetime(2025, 3, 4, 10, 11, 12, 345678, tzinfo=UTC)
    assert event.subject.content.change.id == COMMIT
    assert event.custom_data == doc["customData"]
    assert event.ref() == ArtifactRef("checkout", "1.4.2", DIGEST)
    assert event.partition_key() == "checkout"
    assert decoded.trace_headers == {"traceparent": TRACEPARENT}


@pytest.mark.parametrize("purl", ["pkg:generic/checkout@1.4.2", "pkg:oci/checkout?tag=1.4.2"])
def test_a_foreign_artifact_packaged_without_a_digest_decodes_but_is_refused_with_a_reason(
    purl: str, official: Official
) -> None:
    doc = _foreign_packaged(purl)
    assert not _errors(official.for_type(ArtifactPackaged.TYPE), doc), "the sample is not valid"
    event = decode(_record_of(doc)).event
    assert isinstance(event, ArtifactPackaged)
    assert event.subject.id == purl
    with pytest.raises(ArtifactRefError) as caught:
        event.ref()
    assert caught.value.code == "missing_digest"
    assert "no sha256 digest" in caught.value.reason
    assert purl in caught.value.reason
    # what the artifacts service says back is itself a valid, decodable event
    rejected = ArtifactRejected(
        context=ArtifactRejected.new_context("lockstep/artifacts"),
        subject=RejectedSubject(
            id=event.subject.id,
            content=RejectedContent(
                code="missing_digest", reason=caught.value.reason, rejected_event_id=event.id
            ),
        ),
    )
    back = decode(encode(rejected, topic="lockstep.artifacts")).event
    assert isinstance(back, ArtifactRejected)
    assert back.subject.content.reason == caught.value.reason
    assert back.partition_key() == "checkout"


# --- c. Lockstep's custom events follow the CDEvents custom-event convention ------------------


@pytest.mark.parametrize("model", CUSTOM_MODELS, ids=lambda m: m.TYPE)
def test_custom_type_is_named_per_the_cdevents_convention(model: type[CDEvent]) -> None:
    match = CUSTOM_TYPE_RE.match(model.TYPE)
    assert match, f"{model.TYPE} is not dev.cdeventsx.<tool>-<subject>.<predicate>.<M.m.p>"
    assert match["tool"] == "lockstep"


@pytest.fixture(scope="module")
def custom_context(official: Official) -> Draft202012Validator:
    """The official CDEvents context schema, with ``type`` opened to dev.cdeventsx types."""
    context = copy.deepcopy(official.by_name["artifactpackaged"]["properties"]["context"])
    context["properties"]["type"] = {"type": "string", "pattern": CUSTOM_TYPE_RE.pattern}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        # beside the official schemas, so their relative links/ reference resolves
        "$id": "https://cdevents.dev/0.5.1/schema/x-lockstep-custom-context",
        **context,
    }
    return official.validator(schema)


@pytest.mark.parametrize("make", CUSTOM_SAMPLES)
def test_custom_event_has_the_cdevents_shape(
    make: Callable[[], CDEvent], custom_context: Draft202012Validator
) -> None:
    doc = _doc(make())
    errors = _errors(custom_context, doc["context"])
    assert not errors, "context breaks the CDEvents context schema:\n" + "\n".join(errors)
    assert set(doc) <= {"context", "subject", "customData", "customDataContentType"}
    assert isinstance(doc["subject"]["id"], str) and doc["subject"]["id"]
    assert isinstance(doc["subject"]["content"], dict)
    wrong = copy.deepcopy(doc["context"])
    del wrong["timestamp"]
    wrong["type"] = "dev.lockstep.gate.passed.0.1.0"
    assert len(_errors(custom_context, wrong)) == 2


# --- d. the official CloudEvents SDK reads our records, and we read its ---------------------


@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_the_cloudevents_sdk_reads_what_lockstep_encodes(make: Callable[[], CDEvent]) -> None:
    event = make()
    record = encode(event, topic="lockstep.x", trace_headers={"traceparent": TRACEPARENT})
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value or b"")
    ce = from_binary(message, JSONFormat())
    assert ce.get_specversion() == "1.0"
    assert ce.get_id() == event.id
    assert ce.get_type() == event.TYPE
    assert ce.get_source() == event.source
    assert ce.get_time() == event.context.timestamp
    assert ce.get_datacontenttype() == "application/json"
    assert ce.get_subject() == event.subject.id
    assert ce.get_data() == _doc(event)
    assert ce.get_extension("partitionkey") == event.partition_key()


@pytest.mark.parametrize("with_content_type", [True, False])
@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_lockstep_decodes_what_the_cloudevents_sdk_encodes(
    make: Callable[[], CDEvent], with_content_type: bool
) -> None:
    event = make()
    data = _doc(event)
    attributes: dict[str, Any] = {
        "id": event.id,
        "source": event.source,
        "type": event.TYPE,
        "time": event.context.timestamp,
        "subject": event.subject.id,
        "partitionkey": event.partition_key(),
    }
    if with_content_type:
        attributes["datacontenttype"] = "application/json"
    message = to_binary(CloudEvent(attributes, data), JSONFormat())
    key = message.key.encode() if isinstance(message.key, str) else message.key
    record = KafkaRecord(
        topic="lockstep.x", key=key, value=message.value, headers=tuple(message.headers.items())
    )
    if not with_content_type:
        # the SDK then writes no content-type header: in binary mode nothing says the value is
        # JSON (the binding's 1.3 and 3.2.1), so Lockstep refuses it, saying what to set
        with pytest.raises(InvalidEvent) as caught:
            decode(record)
        assert caught.value.field == "content-type"
        assert "content-type: application/json" in caught.value.reason
        return
    decoded = decode(record).event
    assert type(decoded) is type(event)
    assert decoded == event


def test_lockstep_decodes_a_foreign_cdevent_sent_with_the_cloudevents_sdk() -> None:
    doc = _foreign_packaged(f"pkg:oci/checkout@{DIGEST}?tag=1.4.2")
    ce = CloudEvent(
        {
            "id": doc["context"]["id"],
            "source": doc["context"]["source"],
            "type": doc["context"]["type"],
            "datacontenttype": "application/json",
        },
        doc,
    )
    message = to_binary(ce, JSONFormat(), key_mapper=lambda _: b"checkout")
    record = KafkaRecord(
        topic="lockstep.artifacts",
        key=message.key if isinstance(message.key, bytes) else None,
        value=message.value,
        headers=tuple(message.headers.items()),
    )
    event = decode(record).event
    assert isinstance(event, ArtifactPackaged)
    assert event.ref() == REF
    assert record.key == b"checkout"


# --- e. the exported JSON Schemas and AsyncAPI document --------------------------------------

SETTINGS = Settings(
    namespace="lstest", kafka_bootstrap="kafka-1.acme.example:9092", topic_partitions=3
)


def _required_paths(schema: dict[str, Any], doc: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every field below the top level that ``schema`` requires and ``doc`` has, found by
    walking the schema along the document (through $refs and nullable ``anyOf``s)."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        return node

    found: list[tuple[str, ...]] = []

    def walk(node: dict[str, Any], value: Any, path: tuple[str, ...]) -> None:
        node = resolve(node)
        if not isinstance(value, dict):
            return
        objects = [resolve(b) for b in node.get("anyOf", []) if resolve(b).get("type") != "null"]
        if len(objects) == 1:  # X | None: the one object it can be
            walk(objects[0], value, path)
        found.extend((*path, k) for k in node.get("required", []) if path and k in value)
        for key, sub in node.get("properties", {}).items():
            if key in value:
                walk(sub, value[key], (*path, key))

    walk(schema, doc, ())
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    directory = tmp_path_factory.mktemp("contract") / "schemas"  # export creates it
    written = export(
        directory,
        SETTINGS.namespace,
        bootstrap=SETTINGS.kafka_bootstrap,
        partitions=SETTINGS.topic_partitions,
    )
    return directory, written


def test_export_defaults_are_a_default_installation(tmp_path: Path) -> None:
    """The contract names no settings; its defaults are the settings' defaults (not whatever
    LOCKSTEP_* this process has)."""
    fields = Settings.model_fields
    assert topic_names.DEFAULT_NAMESPACE == fields["namespace"].default == "lockstep"
    assert fields["kafka_bootstrap"].default == DEFAULT_BOOTSTRAP
    assert fields["topic_partitions"].default == DEFAULT_PARTITIONS
    export(tmp_path)
    document = json.loads((tmp_path / "asyncapi.json").read_text(encoding="utf-8"))
    assert document["id"] == "urn:lockstep:lockstep"
    assert document["servers"]["kafka"]["host"] == DEFAULT_BOOTSTRAP
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {f"lockstep.{t}" for t in topic_names.ALL}
    for channel in document["channels"].values():
        assert channel["bindings"]["kafka"]["partitions"] == DEFAULT_PARTITIONS


def _exported_validator(directory: Path, event_type: str) -> Draft202012Validator:
    schema = json.loads((directory / f"{event_type}.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FORMATS)


def _without(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


def test_export_writes_a_schema_per_type_and_the_asyncapi_document(
    exported: tuple[Path, list[Path]],
) -> None:
    directory, written = exported
    expected = {f"{t}.json" for t in known_types()} | {"asyncapi.json"}
    assert sorted(p.name for p in written) == sorted(expected)
    assert {p.name for p in directory.iterdir()} == expected
    for model in EVENT_TYPES:
        schema = json.loads((directory / f"{model.TYPE}.json").read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert (
            schema["$id"]
            == schema_id(model.TYPE)
            == f"https://lockstep.dev/schemas/{model.TYPE}.json"
        )
        assert schema["title"] == model.__name__
        assert schema["description"] == inspect.cleandoc(model.__doc__ or "")


@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_exported_schema_accepts_our_events_and_rejects_broken_ones(
    make: Callable[[], CDEvent], exported: tuple[Path, list[Path]]
) -> None:
    event = make()
    model = type(event)
    validator = _exported_validator(exported[0], model.TYPE)
    doc = _doc(event)
    assert not _errors(validator, doc)

    for other in known_types():
        if other != model.TYPE:
            wrong = copy.deepcopy(doc)
            wrong["context"]["type"] = other
            errors = _errors(validator, wrong)
            assert errors and all(e.startswith("context/type") for e in errors), errors

    # every field the schema requires below the top level: model and schema must agree
    required = _required_paths(validator.schema, doc)
    below = [p for p in required if p[0] in ("subject", "customData") and len(p) >= 2]
    assert below, f"{model.TYPE}: the schema requires nothing in subject or customData"
    assert ("subject", "id") in required and ("context", "source") in required
    for path in required:
        broken = _without(doc, path)
        assert _errors(validator, broken), f"schema accepts {model.TYPE} without {path}"
        with pytest.raises(pydantic.ValidationError):
            model.model_validate(broken)
    # CDEvents requires the id (decode matches it to ce_id) and the timestamp
    for field in ("id", "timestamp", "specversion"):
        assert _errors(validator, _without(doc, ("context", field)))


@pytest.fixture(scope="module")
def asyncapi(exported: tuple[Path, list[Path]]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (exported[0] / "asyncapi.json").read_text(encoding="utf-8")
    )
    return document


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_asyncapi_document_describes_every_topic_and_message(
    asyncapi: dict[str, Any], exported: tuple[Path, list[Path]]
) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"] == "Lockstep"
    assert asyncapi["info"]["version"] == version("lockstep")
    assert asyncapi["servers"]["kafka"] == asyncapi["servers"]["kafka"] | {
        "host": "kafka-1.acme.example:9092",
        "protocol": "kafka",
    }
    channels = asyncapi["channels"]
    assert sorted(c["address"] for c in channels.values()) == sorted(
        SETTINGS.topic(t) for t in topic_names.ALL
    )
    messages = asyncapi["components"]["messages"]
    referenced: set[str] = set()
    for channel in channels.values():
        for ref in channel["messages"].values():
            assert _resolve(asyncapi, ref["$ref"]) in messages.values()
            referenced.add(ref["$ref"].rsplit("/", 1)[1])
    assert referenced == set(messages), "a message no channel carries"

    for model in EVENT_TYPES:
        message = messages[model.__name__]
        channel = next(c for c in channels.values() if c["address"] == SETTINGS.topic(model.TOPIC))
        assert model.__name__ in channel["messages"]
        assert message["contentType"] == "application/json"
        payload = exported[0] / message["payload"]["$ref"]
        assert json.loads(payload.read_text(encoding="utf-8"))["$id"] == schema_id(model.TYPE)

    dlq = next(c for c in channels.values() if c["address"] == SETTINGS.topic(topic_names.DLQ))
    assert all(c["bindings"]["kafka"]["partitions"] == 3 for c in channels.values())
    assert dlq["messages"], "the DLQ channel carries dead letters"


def test_asyncapi_operations_cover_every_message(asyncapi: dict[str, Any]) -> None:
    covered: set[tuple[str, str]] = set()
    for name, operation in asyncapi["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        channel = _resolve(asyncapi, channel_ref)
        for ref in operation["messages"]:
            assert ref["$ref"].startswith(channel_ref + "/messages/"), (name, ref)
            _resolve(asyncapi, ref["$ref"])
            covered.add((channel_ref, ref["$ref"].rsplit("/", 1)[1]))
        assert operation["messages"], name
        assert channel["messages"]
    carried = {
        (f"#/channels/{cid}", m) for cid, c in asyncapi["channels"].items() for m in c["messages"]
    }
    assert covered == carried
    actions = {
        m.rsplit("/", 1)[-1]: op["action"]
        for op in asyncapi["operations"].values()
        for m in (r["$ref"] for r in op["messages"])
    }
    assert actions["ArtifactPackaged"] == "receive"
    assert actions["TestSuiteRunFinished"] == "receive"
    assert actions["ArtifactPublished"] == "send"
    assert actions["EvidenceRecorded"] == "send"
    assert actions["DeadLetter"] == "send"


@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_asyncapi_headers_and_key_describe_encoded_records(
    make: Callable[[], CDEvent], asyncapi: dict[str, Any]
) -> None:
    event = make()
    message = asyncapi["components"]["messages"][type(event).__name__]
    headers = Draft202012Validator(message["headers"], format_checker=FORMATS)
    key = Draft202012Validator(message["bindings"]["kafka"]["key"])
    record = encode(event, topic="x", trace_headers={"traceparent": TRACEPARENT})
    as_text = {k: v.decode() for k, v in record.headers}
    assert not _errors(headers, as_text)
    assert not _errors(key, (record.key or b"").decode())
    assert _errors(headers, as_text | {"ce_type": "dev.cdevents.artifact.deleted.0.2.0"})
    assert _errors(headers, {k: v for k, v in as_text.items() if k != "ce_id"})
    assert _errors(headers, as_text | {"ce_specversion": "0.3"})


def test_asyncapi_dead_letter_matches_what_the_bus_writes(asyncapi: dict[str, Any]) -> None:
    message = asyncapi["components"]["messages"]["DeadLetter"]
    headers = Draft202012Validator(message["headers"], format_checker=FORMATS)
    original = encode(sample(ArtifactPackaged), topic="lockstep.artifacts")
    letter = dead_letter(
        original, dlq_topic="lockstep.dlq", error="boom", stage="handle", group="g", attempts=3
    )
    as_text = {k: v.decode() for k, v in letter.headers}
    assert not _errors(headers, as_text)
    dlq_names = {HEADER_PREFIX + k for k in reason_of(letter)}
    assert dlq_names == set(message["headers"]["required"])
    assert _errors(headers, as_text | {f"{HEADER_PREFIX}stage": "sometime"})
    missing = {k: v for k, v in as_text.items() if k != f"{HEADER_PREFIX}error"}
    assert _errors(headers, missing)


# --- f. the edges of input: what JSON, Postgres and OCI cannot carry is refused at decode ------


def _benchmark_doc(value: Any) -> dict[str, Any]:
    doc = _doc(sample(BenchmarkFinished))
    doc["subject"]["content"]["metrics"]["p99_latency"]["value"] = value
    return doc


@pytest.mark.parametrize("written", ["NaN", "Infinity", "-Infinity"])
def test_a_benchmark_value_that_is_not_a_finite_number_is_refused_with_its_path(
    written: str,
) -> None:
    # what Python's json writes for float('nan') and float('inf'): not JSON, yet often sent
    doc = _benchmark_doc(123456.789)
    record = _record_of(doc, topic="lockstep.evidence")
    value = json.dumps(doc).replace("123456.789", written)
    assert f'"value": {written}' in value
    record = KafkaRecord(record.topic, record.key, value.encode(), record.headers)
    with pytest.raises(InvalidEvent) as caught:
        decode(record)
    assert "subject.content.metrics.p99_latency.value" in caught.value.reason
    assert "finite number" in caught.value.reason


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "NaN", "inf"])
def test_a_measurement_cannot_be_built_with_nan_or_infinity(value: Any) -> None:
    with pytest.raises(pydantic.ValidationError, match="finite number"):
        Measurement(value=value, unit="ms")


@pytest.mark.parametrize(
    ("timestamp", "words"),
    [
        ("9999-12-31T23:59:59Z", "more than a day in the future"),
        ("2999-01-01T00:00:00+02:00", "more than a day in the future"),
        ("1999-12-31T23:59:59Z", "before 2000"),
        ("1970-01-01T00:00:00Z", "before 2000"),
    ],
)
def test_an_event_time_out_of_range_is_refused_with_the_bounds(timestamp: str, words: str) -> None:
    doc = _foreign_packaged(f"pkg:oci/checkout@{DIGEST}?tag=1.4.2")
    doc["context"]["timestamp"] = timestamp
    with pytest.raises(InvalidEvent) as caught:
        decode(_record_of(doc))
    assert caught.value.field == "context.timestamp"
    assert words in caught.value.reason
    assert "Value error" not in caught.value.reason


def test_an_event_time_within_a_day_ahead_is_clock_skew_and_accepted() -> None:
    doc = _foreign_packaged(f"pkg:oci/checkout@{DIGEST}?tag=1.4.2")
    ahead = datetime.now(UTC) + timedelta(hours=23)
    doc["context"]["timestamp"] = ahead.isoformat()
    assert decode(_record_of(doc)).event.context.timestamp == ahead
    doc["context"]["timestamp"] = (ahead + timedelta(hours=2)).isoformat()
    with pytest.raises(InvalidEvent):
        decode(_record_of(doc))


@pytest.mark.parametrize(
    "purl",
    [
        f"pkg:oci/checkout@{DIGEST.upper().replace('SHA256', 'sha256')}?tag=1.4.2",
        f"pkg:oci/checkout@{DIGEST.upper()}?tag=1.4.2",
        f"pkg:oci/checkout@{DIGEST.upper().replace(':', '%3A')}?tag=1.4.2",
        f"pkg:generic/checkout@1.4.2?checksum={DIGEST.upper()}",
    ],
)
def test_a_raw_upper_case_digest_is_refused_with_the_lower_case_form(purl: str) -> None:
    # the CLI refuses `--digest SHA256:…`; an event written by hand is held to the same rule
    event = decode(_record_of(_foreign_packaged(purl))).event
    assert isinstance(event, ArtifactPackaged)
    with pytest.raises(ArtifactRefError) as caught:
        event.ref()
    assert caught.value.code == "invalid_digest"
    assert "upper-case" in caught.value.reason
    assert repr(DIGEST) in caught.value.reason  # the form to write instead


def test_evidence_naming_an_upper_case_digest_is_refused_too() -> None:
    doc = _doc(sample(BenchmarkFinished))
    doc["subject"]["content"]["artifactId"] = f"pkg:oci/checkout@{DIGEST.upper()}?tag=1.4.2"
    event = decode(_record_of(doc, topic="lockstep.evidence")).event
    assert isinstance(event, BenchmarkFinished)
    with pytest.raises(ArtifactRefError, match="upper-case"):
        event.artifact_ref()
