"""What tools already send, turned into ``signal.observed``: Prometheus Alertmanager's webhook
(version 4) and PagerDuty's Events API v2 (``trigger`` / ``acknowledge`` / ``resolve``).

A payload that cannot become signals is refused as a whole, with every reason, each naming
the field (``alerts[2].labels.service``). Times are held to the contract's rule for when an
event happened (``events.parse_event_time``: RFC 3339 with its offset, from 2000 to a day from
now), so that ``startsAt: 9999`` or a year-9999 alert opens nothing."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from events import parse_event_time
from events.signals import NAME, SignalObserved, SignalStatus

_NAME = re.compile(NAME)
SERVICE_LABELS = ("service", "app", "job")
ENVIRONMENT_LABELS = ("environment", "env")
_AM_SEVERITY = {"critical": "critical", "page": "critical", "error": "error", "warning": "warning",
                "info": "info", "none": "info"}  # fmt: skip


class PayloadRefused(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _time(raw: Any, where: str, problems: list[str]) -> datetime | None:
    """The time at ``where``, None if it is not given (Alertmanager writes Go's zero time,
    ``0001-01-01T00:00:00Z``, for "none"); a time the contract would refuse is a problem."""
    if raw is None or raw == "" or (isinstance(raw, str) and raw.startswith("0001-01-01")):
        return None
    try:
        return parse_event_time(raw)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return None


def _number(raw: Any) -> float | None:
    try:
        return float(raw) if raw is not None and not isinstance(raw, bool) else None
    except (TypeError, ValueError):
        return None


def _pick(mapping: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _named(value: str | None, what: str, where: str, problems: list[str]) -> str | None:
    if value is None:
        problems.append(f"{where}: no {what} (a label {' or '.join(_LABELS[what])})")
        return None
    if not _NAME.match(value):
        problems.append(f"{where}: {what} {value!r} is not a name (lower case, digits, . _ -)")
        return None
    return value


_LABELS = {"service": SERVICE_LABELS, "environment": ENVIRONMENT_LABELS}


def from_alertmanager(payload: Any, now: datetime) -> list[SignalObserved]:
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise PayloadRefused(["not an Alertmanager webhook: no `alerts` list"])
    problems: list[str] = []
    signals: list[SignalObserved] = []
    common = payload.get("commonLabels")
    group_labels: dict[str, Any] = common if isinstance(common, dict) else {}
    for i, alert in enumerate(payload["alerts"]):
        where = f"alerts[{i}]"
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            problems.append(f"{where}: an alert needs `labels`")
            continue
        labels = {**group_labels, **alert["labels"]}
        found = alert.get("annotations")
        annotations: dict[str, Any] = found if isinstance(found, dict) else {}
        name = labels.get("alertname")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.labels.alertname: missing")
            continue
        service = _named(_pick(labels, SERVICE_LABELS), "service", f"{where}.labels", problems)
        environment = _named(
            _pick(labels, ENVIRONMENT_LABELS), "environment", f"{where}.labels", problems
        )
        status = alert.get("status", payload.get("status"))
        if status not in ("firing", "resolved"):
            problems.append(f"{where}.status: {status!r} is neither firing nor resolved")
            continue
        # a firing alert is timed at its start, a resolved one at its end; its start is
        # checked either way (a firing alert's endsAt is Alertmanager's guess of the future)
        started = _time(alert.get("startsAt"), f"{where}.startsAt", problems)
        if status == "resolved":
            observed = _time(alert.get("endsAt"), f"{where}.endsAt", problems) or now
        else:
            observed = started or now
        if service is None or environment is None:
            continue
        fingerprint = alert.get("fingerprint")
        dedup = fingerprint if isinstance(fingerprint, str) and fingerprint else _digest(
            name, service, environment, str(sorted(labels.items()))
        )  # fmt: skip
        made = (
            _signal(
                problems, where, service=service, environment=environment, metric=name,
                value=_number(annotations.get("value")), source="alertmanager",
                observed_at=observed, kind="alert", status=status, dedup_key=dedup,
                severity=_AM_SEVERITY.get(str(labels.get("severity", "")).lower()),
                summary=_pick(annotations, ("summary", "description")),
                labels={k: str(v) for k, v in labels.items()},
            )
        )  # fmt: skip
        if made is not None:
            signals.append(made)
    if problems:
        raise PayloadRefused(problems)
    return signals


_PD_ACTIONS: dict[str, SignalStatus] = {
    "trigger": "firing",
    "acknowledge": "acknowledged",
    "resolve": "resolved",
}
_PD_SEVERITIES = ("critical", "error", "warning", "info")


def from_pagerduty(event: Any, now: datetime) -> SignalObserved:
    """One PagerDuty Events API v2 event. A trigger without ``dedup_key`` gets one (returned
    to the sender, as PagerDuty does); acknowledge and resolve need it."""
    if not isinstance(event, dict):
        raise PayloadRefused(["not a PagerDuty Events API v2 event (a JSON object)"])
    problems: list[str] = []
    action = event.get("event_action")
    if action not in _PD_ACTIONS:
        raise PayloadRefused([f"event_action: {action!r} is not trigger, acknowledge or resolve"])
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else None
    details: dict[str, Any] = {}
    if payload is not None and isinstance(payload.get("custom_details"), dict):
        details = payload["custom_details"]
    dedup = event.get("dedup_key")
    if action != "trigger" and not (isinstance(dedup, str) and dedup):
        raise PayloadRefused([f"dedup_key: needed to {action} (it names the incident)"])
    if action == "trigger":
        if payload is None:
            raise PayloadRefused(["payload: a trigger needs payload (summary, source, severity)"])
        for field in ("summary", "source", "severity"):
            if not payload.get(field):
                problems.append(f"payload.{field}: required for a trigger")
        if payload.get("severity") and payload["severity"] not in _PD_SEVERITIES:
            problems.append(f"payload.severity: {payload['severity']!r} is not one of "
                            f"{', '.join(_PD_SEVERITIES)}")  # fmt: skip
    source_of = payload or {}
    service = _named(
        _pick(source_of, ("component",)) or _pick(details, SERVICE_LABELS),
        "service", "payload.component (or custom_details.service)", problems,
    )  # fmt: skip
    environment = _named(
        _pick(source_of, ("group",)) or _pick(details, ENVIRONMENT_LABELS),
        "environment", "payload.group (or custom_details.environment)", problems,
    )  # fmt: skip
    observed = _time(source_of.get("timestamp"), "payload.timestamp", problems) or now
    if problems or service is None or environment is None:
        raise PayloadRefused(problems)
    key = dedup if isinstance(dedup, str) and dedup else _digest(
        service, environment, str(source_of.get("summary")), observed.isoformat()
    )  # fmt: skip
    found = _signal(
        problems, "event", service=service, environment=environment,
        metric=_pick(source_of, ("class",)) or _pick(details, ("metric",)) or "pagerduty",
        value=_number(details.get("value")), source="pagerduty", observed_at=observed,
        kind="alert", status=_PD_ACTIONS[action], dedup_key=key,
        severity=source_of.get("severity") if source_of.get("severity") in _PD_SEVERITIES else None,
        summary=_pick(source_of, ("summary",)),
        labels={k: str(v) for k, v in details.items() if isinstance(v, str | int | float)},
    )  # fmt: skip
    if problems or found is None:
        raise PayloadRefused(problems)
    return found


def _signal(problems: list[str], where: str, **fields: Any) -> SignalObserved | None:
    """The signal, or None with what is wrong added to ``problems``."""
    try:
        return SignalObserved.build(**fields)
    except ValidationError as exc:
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"])
            problems.append(f"{where}: {path}: {error['msg']}")
        return None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
