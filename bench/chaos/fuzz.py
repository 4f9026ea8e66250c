"""Malformed input: records sent with a raw aiokafka producer to the topics the services read,
and HTTP requests to the flags (OFREP, admin) and incidents (webhooks) edges.

Every record carries its kind in its key (``fuzz:<kind>``; the non-UTF-8 key kind too, after
two bad bytes), so a dead letter (which keeps the original key) or an answer event (which
names the service ``fuzz-<kind>``) can be traced back to the kind that caused it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from events import (
    ArtifactPackaged,
    ArtifactRef,
    CDEvent,
    PolicyUpdated,
    SignalObserved,
    TestSuiteRunFinished,
    encode,
    topics,
)

Headers = list[tuple[str, bytes | None]]


@dataclass
class Fuzz:
    kind: str
    topic: str  # logical topic
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    # kinds a consumer may rightly skip in silence (a type it does not know, a redelivery)
    may_be_ignored: bool = False

    @property
    def marker(self) -> bytes:
        return f"fuzz-{self.kind}".encode()


def _packaged(kind: str, **over: str) -> CDEvent:
    service = over.pop("service", f"fuzz-{kind}")
    return ArtifactPackaged.build(
        service=service,
        version=over.pop("version", "1.0.0"),
        digest=over.pop("digest", "sha256:" + "ab" * 32),
        commit="c0ffee",
        source="chaos/fuzz",
    )


def _good(kind: str, event: CDEvent | None = None, topic: str = topics.ARTIFACTS) -> Fuzz:
    event = event if event is not None else _packaged(kind)
    rec = encode(event, topic=topic)
    return Fuzz(kind, topic, f"fuzz:{kind}".encode(), rec.value, list(rec.headers))


def _with(kind: str, change: Callable[[Fuzz], None], **kw: object) -> Fuzz:
    f = _good(kind)
    change(f)
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def _set_header(f: Fuzz, name: str, value: bytes | None) -> None:
    f.headers = [(k, v) for k, v in f.headers if k != name] + [(name, value)]


def _drop_header(f: Fuzz, name: str) -> None:
    f.headers = [(k, v) for k, v in f.headers if k != name]


def _body(f: Fuzz, change: Callable[[dict[str, object]], None]) -> None:
    assert f.value is not None
    doc = json.loads(f.value)
    change(doc)
    f.value = json.dumps(doc).encode()


def _content(doc: dict[str, object]) -> dict[str, object]:
    subject = doc["subject"]
    assert isinstance(subject, dict)
    content = subject["content"]
    assert isinstance(content, dict)
    return content


def _replace(f: Fuzz, old: bytes, new: bytes) -> None:
    assert f.value is not None and old in f.value, (f.kind, old)
    f.value = f.value.replace(old, new, 1)


def _purl(
    kind: str, *, service: str | None = None, version: str | None = None, digest: str | None = None
) -> Fuzz:
    """A good artifact.packaged whose purl (subject.id, ce_subject) is then made wrong."""
    f = _good(kind)

    def change(doc: dict[str, object]) -> None:
        purl = str(_subject(doc)["id"])
        if service is not None:
            purl = purl.replace(f"fuzz-{kind}", service, 1)
        if version is not None:
            purl = purl.replace("tag=1.0.0", f"tag={version}", 1)
        if digest is not None:
            purl = purl.replace("@sha256:" + "ab" * 32, f"@{digest}" if digest else "", 1)
        _subject(doc)["id"] = purl
        _set_header(f, "ce_subject", purl.encode("utf-8", "surrogatepass"))

    _body(f, change)
    return f


def _signal(kind: str, value: str | None = None) -> Fuzz:
    """A good signal.observed; with ``value``, its value written as that literal (NaN...)."""
    event = SignalObserved.build(
        service=f"fuzz-{kind}", environment="dev", metric="error_rate", value=0.123456,
        source="chaos/fuzz",
    )  # fmt: skip
    f = _good(kind, event, topics.SIGNALS)
    if value is not None:
        _replace(f, b"0.123456", value.encode())
    return f


def _tests(kind: str) -> Fuzz:
    ref = ArtifactRef(f"fuzz-{kind}", "1.0.0", "sha256:" + "cd" * 32)
    event = TestSuiteRunFinished.build(artifact=ref, suite="fuzz", outcome="success")
    return _good(kind, event, topics.EVIDENCE)


def _raw(kind: str, topic: str, value: bytes | None, headers: Headers | None = None) -> Fuzz:
    return Fuzz(kind, topic, f"fuzz:{kind}".encode(), value, headers or [])


def _typed(kind: str, topic: str, ce_type: str, value: bytes) -> Fuzz:
    """Proper ce_* headers of ``ce_type`` around a value that is wrong for it."""
    f = _good(kind)
    f.topic = topic
    _set_header(f, "ce_type", ce_type.encode())
    f.value = value
    return f


def _deep(depth: int) -> bytes:
    return b'{"context": ' + b"[" * depth + b"]" * depth + b"}"


def records() -> list[Fuzz]:
    """Every malformed kind, in sending order (the conflicting pair: both records)."""
    out: list[Fuzz] = [
        _raw("garbage-bytes", topics.ARTIFACTS, os.urandom(512)),
        _raw("garbage-bytes-evidence", topics.EVIDENCE, os.urandom(64)),
        _raw("garbage-bytes-deployments", topics.DEPLOYMENTS, os.urandom(64)),
        _raw("garbage-bytes-signals", topics.SIGNALS, os.urandom(64)),
        _raw("garbage-bytes-flags", topics.FLAGS, os.urandom(64)),
        _raw("garbage-bytes-incidents", topics.INCIDENTS, os.urandom(64)),
        _raw("garbage-bytes-policies", topics.POLICIES, os.urandom(64)),
        _raw("garbage-bytes-gates", topics.GATES, os.urandom(64)),
        _raw("garbage-bytes-promotions", topics.PROMOTIONS, os.urandom(64)),
        _with("empty-value", lambda f: None, value=b""),
        _with("null-value-tombstone", lambda f: None, value=None),
        _with("non-utf8-value", lambda f: None, value=b"\xff\xfe\xfd{}"),
        _with("no-headers", lambda f: None, headers=[]),
        _with("null-header-value", lambda f: _set_header(f, "ce_type", None)),
        _with("null-ce-id", lambda f: _set_header(f, "ce_id", None)),
        _with("non-utf8-header", lambda f: _set_header(f, "ce_type", b"\xff\xfe\xfa")),
        _with(
            "duplicate-ce-type-headers",
            lambda f: f.headers.append(("ce_type", b"dev.cdevents.service.deployed.0.3.0")),
        ),
        _with("duplicate-ce-id-headers", lambda f: f.headers.append(("ce_id", b"other-id"))),
        _with("missing-ce-id", lambda f: _drop_header(f, "ce_id")),
        _with("missing-ce-type", lambda f: _drop_header(f, "ce_type")),
        _with("missing-ce-source", lambda f: _drop_header(f, "ce_source")),
        _with("missing-ce-specversion", lambda f: _drop_header(f, "ce_specversion")),
        _with("wrong-specversion", lambda f: _set_header(f, "ce_specversion", b"0.3")),
        _with("missing-content-type", lambda f: _drop_header(f, "content-type")),
        _with("content-type-text", lambda f: _set_header(f, "content-type", b"text/plain")),
        _with("content-type-xml", lambda f: _set_header(f, "content-type", b"application/xml")),
        _with(
            "structured-mode",
            lambda f: _set_header(
                f, "content-type", b"application/cloudevents+json; charset=utf-8"
            ),
        ),
        _with(
            "unknown-type",
            lambda f: _set_header(f, "ce_type", b"dev.cdevents.nosuchthing.happened.0.1.0"),
            may_be_ignored=True,
        ),
        _with(
            "future-major-version",
            lambda f: _set_header(f, "ce_type", b"dev.cdevents.artifact.packaged.9.0.0"),
            may_be_ignored=True,
        ),
        _with(
            "type-header-body-mismatch",
            lambda f: _set_header(f, "ce_type", b"dev.cdevents.service.deployed.0.3.0"),
        ),
        _with("bad-json-truncated", lambda f: None, value=b'{"context": {"id": "x", '),
        _with("json-array", lambda f: None, value=b"[1, 2, 3]"),
        _with("json-string", lambda f: None, value=b'"fuzz"'),
        _with("json-null", lambda f: None, value=b"null"),
        _with("json-bom", lambda f: setattr(f, "value", b"\xef\xbb\xbf" + (f.value or b""))),
        _with("deep-nesting", lambda f: None, value=_deep(200_000)),
        _with("deep-nesting-moderate", lambda f: None, value=_deep(2_000)),
        _with("huge-value", lambda f: None, value=b'{"pad": "' + b"x" * 900_000 + b'"}'),
        _purl("huge-version", version="9" * 200_000),
        _purl("nul-in-value", version="1.0.0\x00"),
        _with("nul-raw-byte-in-value", lambda f: setattr(f, "value", (f.value or b"") + b"\x00")),
        _with("nul-in-header-name", lambda f: f.headers.append(("x-\x00-nul", b"v"))),
        _with("nul-in-header-value", lambda f: _set_header(f, "ce_source", b"chaos\x00fuzz")),
        _purl("bad-digest-chars", digest="sha256:" + "zz" * 32),
        _purl("upper-case-digest", digest="sha256:" + "AB" * 32),
        _purl("short-digest", digest="sha256:abc"),
        _purl("md5-digest", digest="md5:" + "ab" * 16),
        _purl("no-digest", digest=""),
        _with("ce-time-year-9999", lambda f: _set_header(f, "ce_time", b"9999-12-31T23:59:59Z")),
        _with("ce-time-not-a-time", lambda f: _set_header(f, "ce_time", b"yesterday")),
        _with(
            "body-year-9999",
            lambda f: _body(f, lambda d: _ctx(d).update(timestamp="9999-12-31T23:59:59Z")),
        ),
        _with(
            "body-year-0001",
            lambda f: _body(f, lambda d: _ctx(d).update(timestamp="0001-01-01T00:00:00Z")),
        ),
        _with("body-bad-timestamp", lambda f: _body(f, lambda d: _ctx(d).update(timestamp="soon"))),
        _purl("empty-service", service="", version="fuzz-empty-service"),
        _purl("huge-service-name", service="fuzz-huge-service-name" + "s" * 20_000),
        _purl("non-semver-version", version="!!not a version!!"),
        _purl("unicode-service", service="fuzz-unicode-service-\u202e\U0001f4a5"),
        _with(
            "extra-unknown-fields",
            lambda f: _body(f, lambda d: d.update(zz_future={"a": 1})),
            may_be_ignored=True,
        ),
        _with("wrong-field-type", lambda f: _body(f, lambda d: _subject(d).update(id=12))),
        _with("missing-subject", lambda f: _body(f, lambda d: _drop(d, "subject"))),
        _with(
            "subject-content-null", lambda f: _body(f, lambda d: _subject(d).update(content=None))
        ),
        _with(
            "json-duplicate-keys", lambda f: _replace(f, b'{"context"', b'{"context": 1, "context"')
        ),
        _with("number-overflow", _overflow),
        _with("many-headers", lambda f: f.headers.extend((f"x-h{i}", b"v") for i in range(2_000))),
        Fuzz(
            "non-utf8-key",
            topics.ARTIFACTS,
            b"\xff\xfefuzz:non-utf8-key",
            _good("non-utf8-key").value,
            _good("non-utf8-key").headers,
        ),
        _with("null-key", lambda f: None, key=None),
        _signal("signal-nan", "NaN"),
        _signal("signal-infinity", "Infinity"),
        _with("signal-year-9999", lambda f: None),  # replaced below
        _typed(
            "flagchange-bad-body",
            topics.FLAGS,
            "dev.cdeventsx.lockstep-flagchange.requested.0.1.0",
            b'{"context": {}, "subject": 7}',
        ),
        _typed(
            "policy-garbage-model",
            topics.POLICIES,
            PolicyUpdated.TYPE,
            b'{"context": {"id": "p"}, "subject": {"content": {"model": "::: not yaml"}}}',
        ),
        _typed(
            "approval-garbage",
            topics.GATES,
            "dev.cdeventsx.lockstep-approval.updated.0.1.0",
            b'{"subject": {"content": {"service": null}}}',
        ),
        _typed(
            "hold-released-garbage",
            topics.PROMOTIONS,
            "dev.cdeventsx.lockstep-hold.released.0.1.0",
            b"{}",
        ),
        _typed(
            "rollback-requested-garbage",
            topics.INCIDENTS,
            "dev.cdeventsx.lockstep-rollback.requested.0.1.0",
            b'{"subject": []}',
        ),
        _typed(
            "deployed-garbage",
            topics.DEPLOYMENTS,
            "dev.cdevents.service.deployed.0.3.0",
            b'{"context": {"id": 5}}',
        ),
        _typed(
            "incident-detected-garbage",
            topics.INCIDENTS,
            "dev.cdevents.incident.detected.0.3.0",
            b'{"context": null}',
        ),
    ]
    out = [f for f in out if f.kind != "signal-year-9999"]
    late = _signal("signal-year-9999")
    _body(late, lambda d: _ctx(d).update(timestamp="9999-12-31T23:59:59Z"))
    out.append(late)
    for f in out:  # the NaN signals: Python writes NaN/Infinity, which is not JSON
        if f.kind in ("signal-nan", "signal-infinity"):
            assert f.value is not None and (b"NaN" in f.value or b"Infinity" in f.value), f.kind
    # a test run for a build nobody packaged, and a conflicting pair: one id, two contents
    unknown = _tests("evidence-for-unknown-build")  # kept until its build comes: no answer yet
    unknown.may_be_ignored = True
    out.append(unknown)
    first, second = _good("conflicting-duplicate-id"), _good("conflicting-duplicate-id")
    _body(second, lambda d: _content(d).update(version="2.0.0"))
    _body(second, lambda d: _ctx(d).update(id=_ctx(json.loads(first.value or b"{}"))["id"]))
    _set_header(second, "ce_id", dict(first.headers)["ce_id"])
    out += [first, second]
    same = _good("exact-duplicate")
    same.may_be_ignored = True
    out += [same, Fuzz(same.kind, same.topic, same.key, same.value, list(same.headers), True)]
    return out


def _drop(doc: dict[str, object], key: str) -> None:
    doc.pop(key, None)


def _overflow(f: Fuzz) -> None:
    """A number no float holds (1e400)."""
    _body(f, lambda d: d.update(big=1))
    _replace(f, b'"big": 1', b'"big": 1e400')


def _ctx(doc: dict[str, object]) -> dict[str, object]:
    ctx = doc["context"]
    assert isinstance(ctx, dict)
    return ctx


def _subject(doc: dict[str, object]) -> dict[str, object]:
    subject = doc["subject"]
    assert isinstance(subject, dict)
    return subject


def kinds() -> list[str]:
    return sorted({f.kind for f in records()})


@dataclass
class HttpCase:
    kind: str
    edge: str  # flags | incidents
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    token: bool = True  # an incidents case is sent with the webhook token, unless False


def http_cases() -> list[HttpCase]:
    j = {"content-type": "application/json"}
    flag = "/admin/v1/environments/dev/flags/fuzz-flag"
    return [
        HttpCase(
            "webhook-no-token", "incidents", "POST", "/webhooks/alertmanager", b"{}", j, token=False
        ),
        HttpCase(
            "webhook-wrong-token",
            "incidents",
            "POST",
            "/webhooks/pagerduty",
            b"{}",
            {**j, "authorization": "Bearer not-the-token"},
            token=False,
        ),
        HttpCase(
            "ofrep-garbage-body", "flags", "POST", "/ofrep/v1/evaluate/flags/x", os.urandom(64), j
        ),
        HttpCase(
            "ofrep-bad-json", "flags", "POST", "/ofrep/v1/evaluate/flags/x", b'{"context": ', j
        ),
        HttpCase(
            "ofrep-context-not-object",
            "flags",
            "POST",
            "/ofrep/v1/evaluate/flags/x",
            b'{"context": [1]}',
            j,
        ),
        HttpCase(
            "ofrep-deep-nesting",
            "flags",
            "POST",
            "/ofrep/v1/evaluate/flags/x",
            b'{"context": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            j,
        ),
        HttpCase(
            "ofrep-huge-body",
            "flags",
            "POST",
            "/ofrep/v1/evaluate/flags",
            b'{"context": {"k": "' + b"x" * 5_000_000 + b'"}}',
            j,
        ),
        HttpCase(
            "ofrep-nul-key",
            "flags",
            "POST",
            "/ofrep/v1/evaluate/flags/a%00b",
            b'{"context": {}}',
            j,
        ),
        HttpCase(
            "ofrep-unknown-env",
            "flags",
            "POST",
            "/environments/..%2f..%2fetc/ofrep/v1/evaluate/flags",
            b'{"context": {}}',
            j,
        ),
        HttpCase(
            "ofrep-nan",
            "flags",
            "POST",
            "/ofrep/v1/evaluate/flags/x",
            b'{"context": {"n": NaN}}',
            j,
        ),
        HttpCase(
            "ofrep-wrong-content-type",
            "flags",
            "POST",
            "/ofrep/v1/evaluate/flags/x",
            b"<xml/>",
            {"content-type": "application/xml"},
        ),
        HttpCase("admin-no-key", "flags", "PUT", flag, b'{"state": "ENABLED"}', j),
        HttpCase(
            "admin-bad-key",
            "flags",
            "PUT",
            flag,
            b'{"state": "ENABLED"}',
            {**j, "authorization": "Bearer \x7fnope"},
        ),
        HttpCase(
            "admin-garbage",
            "flags",
            "PUT",
            flag,
            os.urandom(128),
            {**j, "authorization": "Bearer nope"},
        ),
        HttpCase(
            "admin-unknown-action",
            "flags",
            "POST",
            flag + "/explode",
            b"{}",
            {**j, "authorization": "Bearer nope"},
        ),
        HttpCase(
            "webhook-alertmanager-garbage",
            "incidents",
            "POST",
            "/webhooks/alertmanager",
            os.urandom(128),
            j,
        ),
        HttpCase(
            "webhook-alertmanager-bad-json",
            "incidents",
            "POST",
            "/webhooks/alertmanager",
            b'{"alerts": [',
            j,
        ),
        HttpCase(
            "webhook-alertmanager-wrong-shape",
            "incidents",
            "POST",
            "/webhooks/alertmanager",
            b'{"alerts": "all of them"}',
            j,
        ),
        HttpCase(
            "webhook-alertmanager-nan",
            "incidents",
            "POST",
            "/webhooks/alertmanager",
            b'{"alerts": [{"labels": {"service": "x"}, "annotations": {"value": NaN}}]}',
            j,
        ),
        HttpCase(
            "webhook-alertmanager-year-9999",
            "incidents",
            "POST",
            "/webhooks/alertmanager",
            json.dumps(
                {
                    "version": "4",
                    "status": "firing",
                    "alerts": [
                        {
                            "status": "firing",
                            "labels": {"alertname": "x", "service": "fuzz", "environment": "dev"},
                            "annotations": {},
                            "startsAt": "9999-12-31T23:59:59Z",
                            "endsAt": "0001-01-01T00:00:00Z",
                            "fingerprint": "f",
                        }
                    ],
                }
            ).encode(),
            j,
        ),
        HttpCase(
            "webhook-alertmanager-nul",
            "incidents",
            "POST",
            "/webhooks/alertmanager",
            b'{"alerts": [{"labels": {"service": "a\\u0000b"}}]}',
            j,
        ),
        HttpCase(
            "webhook-pagerduty-garbage",
            "incidents",
            "POST",
            "/webhooks/pagerduty",
            os.urandom(64),
            j,
        ),
        HttpCase(
            "webhook-pagerduty-deep",
            "incidents",
            "POST",
            "/v2/enqueue",
            b'{"payload": ' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"}",
            j,
        ),
        HttpCase(
            "webhook-pagerduty-huge",
            "incidents",
            "POST",
            "/v2/enqueue",
            b'{"payload": {"summary": "' + b"x" * 5_000_000 + b'"}}',
            j,
        ),
    ]


def now_stamp() -> str:
    return datetime.now(UTC).isoformat()
