"""Export the event contract: one JSON Schema per event type and an AsyncAPI 3.0 document.

``<TYPE>.json`` describes what a producer must send (the model's *validation* schema, with
``context.type`` pinned to the type and the CDEvents context fields required). ``asyncapi.json``
(JSON is valid AsyncAPI) lists the Kafka topics, the messages on each with their ``ce_*``
headers and record key, and what Lockstep sends and receives.
"""

from __future__ import annotations

import copy
import inspect
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from events import topics
from events._base import CDEvent
from events._envelope import CONTENT_TYPE, REQUIRED_CE_HEADERS
from events._registry import EVENT_TYPES

# What a default installation runs with; ``lockstep schema export`` passes its own settings.
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_PARTITIONS = 6

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE = "https://lockstep.dev/schemas/"
ASYNCAPI_FILE = "asyncapi.json"
KAFKA_BINDING_VERSION = "0.5.0"
DEAD_LETTER = "DeadLetter"

# CDEvents requires these in every context; decode() also needs context.id == ce_id.
CONTEXT_REQUIRED = ["specversion", "id", "source", "type", "timestamp"]
_TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_DLQ_HEADERS: dict[str, dict[str, Any]] = {
    "error": {"description": "Why the record failed (the decode error or the handler's exception)"},
    "stage": {
        "enum": ["decode", "handle", "store", "duplicate"],
        "description": "decode: not a valid event (or not even a record the client could read); "
        "handle: its handler kept failing; store: Postgres refused to keep it; duplicate: its "
        "CloudEvents id was handled before with other content",
    },
    "topic": {"description": "The topic the record was read from"},
    "partition": {"pattern": r"^-?\d+$", "description": "Its partition"},
    "offset": {"pattern": r"^-?\d+$", "description": "Its offset"},
    "group": {"description": "The consumer group that gave up on it"},
    "attempts": {"pattern": r"^\d+$", "description": "How many times it was tried"},
    "failed_at": {"format": "date-time", "description": "When it was dead-lettered (UTC)"},
}


def schema_id(event_type: str) -> str:
    return f"{SCHEMA_BASE}{event_type}.json"


def event_schema(model: type[CDEvent]) -> dict[str, Any]:
    """The JSON Schema of one event type: what a producer must send."""
    body = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = body.setdefault("$defs", {})
    if body["properties"]["context"] != {"$ref": "#/$defs/Context"}:
        raise TypeError(f"{model.__name__}.context is not the shared Context model")
    context = copy.deepcopy(defs["Context"])
    context["properties"]["type"] = {
        "type": "string",
        "const": model.TYPE,
        "default": model.TYPE,
        "title": "Type",
        "description": "The event type; must equal the ce_type header",
    }
    context["required"] = CONTEXT_REQUIRED
    defs["Context"] = context
    head = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(model.TYPE),
        "title": model.__name__,
        "description": inspect.cleandoc(model.__doc__ or model.SUMMARY),
    }
    return head | {k: v for k, v in body.items() if k not in head}


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _event_message(model: type[CDEvent]) -> dict[str, Any]:
    headers = {
        "ce_specversion": _string(const="1.0"),
        "ce_id": _string(minLength=1, description="The event id, equal to context.id"),
        "ce_source": _string(minLength=1, description="The producer, equal to context.source"),
        "ce_type": _string(const=model.TYPE),
        "ce_time": _string(
            format="date-time",
            description="context.timestamp (RFC 3339): from 2000 to at most a day from now",
        ),
        "ce_subject": _string(description="subject.id, where there is one"),
        "content-type": _string(const=CONTENT_TYPE),
        "traceparent": _string(pattern=_TRACEPARENT, description="W3C trace context"),
        "tracestate": _string(description="W3C trace context"),
    }
    return {
        "name": model.TYPE,
        "title": model.__name__,
        "summary": model.SUMMARY or model.__name__,
        "description": inspect.cleandoc(model.__doc__ or ""),
        "contentType": CONTENT_TYPE,
        "headers": {  # content-type: in binary mode, what says the value is JSON
            "type": "object",
            "required": [*REQUIRED_CE_HEADERS, "content-type"],
            "properties": headers,
        },
        "payload": {"$ref": f"./{model.TYPE}.json"},
        "bindings": {
            "kafka": {
                "key": _string(
                    minLength=1,
                    description="The service (component) the event is about: keeps them in order",
                ),
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _dead_letter_message() -> dict[str, Any]:
    why = {topics.DLQ_HEADER_PREFIX + k: _string(**v) for k, v in _DLQ_HEADERS.items()}
    return {
        "name": "lockstep.dead-letter",
        "title": DEAD_LETTER,
        "summary": "A record that could not be read or handled, kept as it was",
        "description": (
            "The original record's key, value and headers (ce_* included, when it had them), "
            f"plus {topics.DLQ_HEADER_PREFIX}* headers saying why it failed and where it came from."
        ),
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "required": list(why),
            "properties": why,
            "additionalProperties": {"type": "string"},
        },
        "payload": {"description": "The original record value, byte for byte (maybe not JSON)"},
        "bindings": {
            "kafka": {
                "key": {"type": ["string", "null"], "description": "The original record's key"},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def asyncapi(
    namespace: str = topics.DEFAULT_NAMESPACE,
    *,
    bootstrap: str = DEFAULT_BOOTSTRAP,
    partitions: int = DEFAULT_PARTITIONS,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of Lockstep's topics, from Lockstep's point of view: the
    topics of installation ``namespace``, on the Kafka cluster at ``bootstrap``."""
    _plain_namespace(namespace)
    try:
        app_version = version("lockstep")
    except PackageNotFoundError:
        app_version = "0.1.0"
    messages = {model.__name__: _event_message(model) for model in EVENT_TYPES}
    messages[DEAD_LETTER] = _dead_letter_message()
    on_topic: dict[str, list[tuple[str, str]]] = {t: [] for t in topics.ALL}
    for model in EVENT_TYPES:
        action = "receive" if model.INBOUND else "send"
        on_topic[model.TOPIC].append((model.__name__, action))
    on_topic[topics.DLQ].append((DEAD_LETTER, "send"))

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in topics.ALL:
        address = topics.physical(namespace, topic)
        channels[topic] = {
            "address": address,
            "title": address,
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m, _ in on_topic[topic]},
            "servers": [{"$ref": "#/servers/kafka"}],
            "bindings": {
                "kafka": {
                    "topic": address,
                    "partitions": partitions,
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        for action in ("send", "receive"):
            names = [m for m, a in on_topic[topic] if a == action]
            if names:
                operations[f"{action}{topic.capitalize()}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{topic}"},
                    "messages": [{"$ref": f"#/channels/{topic}/messages/{m}"} for m in names],
                }
    return {
        "asyncapi": "3.0.0",
        "id": f"urn:lockstep:{namespace}",
        "info": {
            "title": "Lockstep",
            "version": app_version,
            "description": (
                "Release coordination over Kafka. Every record is a CloudEvent 1.0 in Kafka "
                "binary content mode (ce_* headers, the CDEvent JSON as the value); the key is "
                "the service the event is about. Topic names are prefixed with the namespace "
                f"{namespace!r}."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": bootstrap,
                "protocol": "kafka",
                "description": "The Kafka cluster (bootstrap servers)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def _plain_namespace(namespace: object) -> None:
    # A settings object passed where the namespace goes (the old signature) would be written
    # into a shared document as text, database password included: refuse it.
    if not isinstance(namespace, str):
        raise TypeError(
            f"namespace must be a str such as 'lockstep', not {type(namespace).__name__}; "
            "pass settings.namespace, bootstrap=settings.kafka_bootstrap, "
            "partitions=settings.topic_partitions"
        )


def export(
    directory: Path,
    namespace: str = topics.DEFAULT_NAMESPACE,
    *,
    bootstrap: str = DEFAULT_BOOTSTRAP,
    partitions: int = DEFAULT_PARTITIONS,
) -> list[Path]:
    """Write ``<TYPE>.json`` for every event type and ``asyncapi.json``; return the paths.

    ``namespace``, ``bootstrap`` and ``partitions`` only change the AsyncAPI document (topic
    names, the server, the partition count); the event schemas are the same everywhere."""
    _plain_namespace(namespace)
    directory.mkdir(parents=True, exist_ok=True)
    written = [_write(directory / f"{m.TYPE}.json", event_schema(m)) for m in EVENT_TYPES]
    document = asyncapi(namespace, bootstrap=bootstrap, partitions=partitions)
    written.append(_write(directory / ASYNCAPI_FILE, document))
    return written
