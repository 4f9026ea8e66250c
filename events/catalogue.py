"""The event catalogue: every event type as people read it, from the same contract that
``lockstep schema export`` writes as JSON Schema and AsyncAPI.

``catalogue()`` returns the Markdown of ``docs/events.md``; rewrite that file after changing an
event type with::

    python -m events.catalogue docs/events.md

(a unit test fails while the file and the contract disagree).
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from events import topics
from events._base import CDEVENTS_SPEC_VERSION, CDEvent
from events._envelope import CONTENT_TYPE
from events._registry import EVENT_TYPES
from events.schema import _DLQ_HEADERS, event_schema

DOCUMENT = Path("docs") / "events.md"
COMMAND = f"python -m events.catalogue {DOCUMENT.as_posix()}"
_TOP_LEVEL = ("subject", "customData", "customDataContentType")


def is_official(model: type[CDEvent]) -> bool:
    """A CDEvents type (``dev.cdevents.*``), rather than a Lockstep custom event."""
    return model.TYPE.startswith("dev.cdevents.")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _first_line(text: str | None) -> str:
    return inspect.cleandoc(text or "").split("\n\n")[0].replace("\n", " ")


class _Fields:
    """The rows of one event's field table, read from its exported JSON Schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.rows: list[tuple[str, str, bool, str]] = []
        required = set(schema.get("required", []))
        for name in _TOP_LEVEL:
            node = schema["properties"].get(name)
            if node is not None:
                self._walk(node, name, name in required)

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.defs[node["$ref"].rsplit("/", 1)[1]]
        return node

    def _objects(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """The object shapes ``node`` may take (through $refs, ``X | None`` and arrays)."""
        node = self._resolve(node)
        if "properties" in node:
            return [node]
        if node.get("type") == "array" and "items" in node:
            return self._objects(node["items"])
        found: list[dict[str, Any]] = []
        for branch in node.get("anyOf", []):
            found += self._objects(branch)
        return found

    def type_of(self, node: dict[str, Any]) -> str:
        ref = node.get("$ref")
        node = self._resolve(node)
        if "const" in node:
            return f"`{json.dumps(node['const'])}`"
        if "enum" in node:
            return " or ".join(f"`{json.dumps(v)}`" for v in node["enum"])
        if "anyOf" in node:
            kinds = [self.type_of(b) for b in node["anyOf"] if b.get("type") != "null"]
            return " or ".join(dict.fromkeys(kinds))
        kind = node.get("type", "any")
        if kind == "array":
            return f"array of {self.type_of(node.get('items', {}))}"
        if kind == "object" or "properties" in node:
            return f"object ({ref.rsplit('/', 1)[1]})" if ref else "object"
        if "format" in node:
            return f"{kind} ({node['format']})"
        return str(kind)

    def _walk(self, node: dict[str, Any], path: str, required: bool) -> None:
        described = node.get("description") or ""
        if not described:
            described = _first_line(self._resolve(node).get("description"))
        self.rows.append((path, self.type_of(node), required, described))
        shapes = self._objects(node)
        if len(shapes) != 1:  # several shapes: the type column names them
            return
        shape = shapes[0]
        inner = set(shape.get("required", []))
        is_array = self._resolve(node).get("type") == "array"
        prefix = f"{path}[]" if is_array else path
        for name, child in shape["properties"].items():
            self._walk(child, f"{prefix}.{name}", name in inner)


def _who(model: type[CDEvent]) -> str:
    if model.INBOUND:
        return (
            "sent **to** Lockstep (by CI, deployer agents, monitoring or people through the "
            "`lockstep` command line); Lockstep's services consume it"
        )
    return "emitted **by** Lockstep; its own services and any outside consumer may read it"


def _section(model: type[CDEvent]) -> list[str]:
    schema = event_schema(model)
    kind = (
        f"official CDEvents type (context.specversion {CDEVENTS_SPEC_VERSION}); it validates "
        "against the official CDEvents schema, copied in `events/cdevents/`"
        if is_official(model)
        else "Lockstep custom event (CDEvents custom-event convention, `dev.cdeventsx.lockstep-*`)"
    )
    lines = [
        f"### {model.__name__}",
        "",
        inspect.cleandoc(model.__doc__ or model.SUMMARY),
        "",
        f"- type: `{model.TYPE}`",
        f"- topic: `{topics.physical(topics.DEFAULT_NAMESPACE, model.TOPIC)}`",
        f"- kind: {kind}",
        f"- direction: {_who(model)}",
        f"- JSON Schema: `{model.TYPE}.json` (`$id` {schema['$id']})",
    ]
    if model.HINT:
        lines.append(f"- producers often get wrong: {_cell(model.HINT)}")
    lines += [
        "",
        "| field | type | required | description |",
        "| --- | --- | --- | --- |",
    ]
    for path, kind_of, required, description in _Fields(schema).rows:
        lines.append(
            f"| `{path}` | {_cell(kind_of)} | {'yes' if required else 'no'} | "
            f"{_cell(description)} |"
        )
    return [*lines, ""]


def catalogue() -> str:
    """``docs/events.md``: the Markdown catalogue of every registered event type."""
    by_topic = {t: [m for m in EVENT_TYPES if t == m.TOPIC] for t in topics.ALL}
    out = [
        "# Lockstep events",
        "",
        f"<!-- Generated from the event contract (events/) by `{COMMAND}`; do not edit by "
        "hand. A unit test fails while this file and the contract disagree. -->",
        "",
        "Every event Lockstep sends or receives, by topic. Each is a CloudEvent 1.0 in Kafka "
        "binary content mode: the CloudEvent attributes are `ce_*` headers (`ce_specversion`, "
        f"`ce_id`, `ce_source`, `ce_type`, …), `content-type: {CONTENT_TYPE}`, W3C "
        "`traceparent`/`tracestate` headers carry the trace, the record key is the service "
        "the event is about (so everything about one service stays in order), and the value is "
        "the CDEvent: `context`, `subject` and, for some types, `customData`.",
        "",
        "A record is refused (dead-lettered, with the reason) without `ce_specversion`, "
        "`ce_id`, `ce_source`, `ce_type` or `content-type`: in binary mode `content-type` "
        "is what declares the value's media type, and it must be "
        f"`{CONTENT_TYPE}` (a `charset` parameter, if any, `utf-8`); an "
        "`application/cloudevents…` content-type is structured mode, which Lockstep does not "
        "read. `ce_time` is optional; when given it is held to the rule of `context.timestamp`.",
        "",
        "The `context` is the same for every type: `specversion`, `id` (equal to `ce_id`), "
        "`source` (a URI-reference, equal to `ce_source`), `type` (equal to `ce_type`) and "
        "`timestamp` are required; `schemaUri` and `chainId` are optional. The tables below "
        "list the rest. A time at which something happened (`timestamp`, a signal's "
        "`observedAt`) is RFC 3339 text with its offset (e.g. `2026-05-04T10:00:00Z`), from "
        "2000 to at most a day from now (clock skew).",
        "",
        f"Topics are named `<namespace>.<topic>`; the default namespace is "
        f"`{topics.DEFAULT_NAMESPACE}`, shown here. `lockstep schema export DIR` writes the "
        "JSON Schema of every type and an AsyncAPI 3.0 document of the topics; Python tests "
        "can build a valid sample of any type with `events.testing.sample(Type)`.",
        "",
        "A type's version may grow by optional fields only; readers ignore fields they do not "
        "know, and a newer minor version of a known type is read by the model Lockstep has.",
        "",
        "## Contents",
        "",
        "| topic | event | type | kind | direction |",
        "| --- | --- | --- | --- | --- |",
    ]
    for topic, models in by_topic.items():
        for model in models:
            out.append(
                f"| `{topics.physical(topics.DEFAULT_NAMESPACE, topic)}` "
                f"| [{model.__name__}](#{model.__name__.lower()}) | `{model.TYPE}` "
                f"| {'CDEvents' if is_official(model) else 'Lockstep'} "
                f"| {'in' if model.INBOUND else 'out'} |"
            )
    out += [
        f"| `{topics.physical(topics.DEFAULT_NAMESPACE, topics.DLQ)}` "
        "| [dead letters](#dead-letters) | (the original record's) | | out |",
        "",
        "*in*: sent to Lockstep; *out*: emitted by Lockstep.",
        "",
    ]
    for topic, models in by_topic.items():
        if not models:
            continue
        out += [f"## `{topics.physical(topics.DEFAULT_NAMESPACE, topic)}`", ""]
        for model in models:
            out += _section(model)
    out += [
        "## Dead letters",
        "",
        f"`{topics.physical(topics.DEFAULT_NAMESPACE, topics.DLQ)}` keeps every record that "
        "could not be read or handled: its key, value and headers as they were, plus these "
        f"headers (prefix `{topics.DLQ_HEADER_PREFIX}`) saying why and where from. Records "
        f"up to {topics.DLQ_MAX_MESSAGE_BYTES // (1024 * 1024)} MiB fit.",
        "",
        "| header | description |",
        "| --- | --- |",
    ]
    for name, spec in _DLQ_HEADERS.items():
        out.append(f"| `{topics.DLQ_HEADER_PREFIX}{name}` | {_cell(spec['description'])} |")
    out += [
        "",
        "## Adding an event type",
        "",
        "1. Define the model in the module of its subject under `events/`: a `CDEvent` "
        "subclass that sets `TYPE` (a CDEvents type where CDEvents has one, else "
        "`dev.cdeventsx.lockstep-<subject>.<predicate>.0.1.0`) and `TOPIC`. Defining it "
        "registers it: decoding, `lockstep schema export` and this catalogue know it.",
        "2. Import it in `events/__init__.py` (and add it to `__all__`), so it is loaded "
        "whenever `events` is, and can be imported as `from events import TheType`.",
        "3. Give it a sample in `events/testing.py`; the contract tests check every sample "
        "against its JSON Schema (and the official CDEvents schema, for a CDEvents type).",
        f"4. Regenerate this file: `{COMMAND}`.",
    ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m events.catalogue", description="Write the event catalogue (Markdown)."
    )
    parser.add_argument("path", type=Path, nargs="?", default=DOCUMENT, help="e.g. docs/events.md")
    path: Path = parser.parse_args(argv).path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(catalogue(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
