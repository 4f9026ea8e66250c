"""A postmortem's first draft, written from what Lockstep saw: the release's commit, its
trace (gates, promotion, deployment, rollback) and the incident's own timeline (first bad
signal, detection, notifications, runbook steps, rollback, recovery), with time to detect
and time to restore."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.incidents.store import Incident, TimelineRow


@dataclass(frozen=True)
class Release:
    commit: str | None
    repo: str | None
    spans: list[dict[str, Any]]  # the release's trace, as kept by the services


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _took(delta: timedelta | None) -> str:
    if delta is None:
        return "not yet"
    seconds = max(0, int(delta.total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {seconds} s" if hours else f"{minutes} min {seconds} s"


STORY_SPANS = ("gate ", "promotion", "deploy to", "roll back to", "process gate.passed",
               "process artifact.packaged", "incidents:")  # fmt: skip


def _story(spans: list[dict[str, Any]]) -> list[tuple[datetime, str]]:
    told: list[tuple[datetime, str]] = []
    for span in spans:
        name = str(span.get("name", ""))
        if not any(key in name for key in STORY_SPANS):
            continue
        at = datetime.fromtimestamp(int(span["start_ns"]) / 1e9, tz=UTC)
        outcome = (span.get("attributes") or {}).get("lockstep.outcome")
        service = span.get("service") or ""
        told.append((at, f"{service}: {name}" + (f" [{outcome}]" if outcome else "")))
    return told


def markdown(incident: Incident, timeline: list[TimelineRow], release: Release) -> str:
    restored_at = incident.rolled_back_at or incident.resolved_at
    detect = incident.detected_at - incident.first_signal_at
    restore = restored_at - incident.first_signal_at if restored_at else None
    label = f"{incident.service}@{incident.version}" if incident.version else incident.service
    lines = [
        f"# Postmortem: {incident.id} — {label} in {incident.environment}",
        "",
        f"*Draft written by Lockstep from its events and traces on {_when(datetime.now(UTC))}.*",
        "",
        "## Summary",
        "",
        f"- **What:** {incident.title}",
        f"- **Release:** {label}" + (f", digest `{incident.digest}`" if incident.digest else ""),
        f"- **Commit:** `{release.commit}`" + (f" ({release.repo})" if release.repo else "")
        if release.commit else "- **Commit:** unknown",
        f"- **State:** {incident.state}"
        + (f", resolved by {incident.resolved_by}" if incident.resolved_by else ""),
        f"- **Rolled back to:** {incident.rolled_back_to}" if incident.rolled_back_to
        else "- **Rolled back:** no",
        f"- **Signals grouped into this incident:** {incident.signals}",
        f"- **Time to detect:** {_took(detect)} (first bad signal → detection)",
        f"- **Time to restore:** {_took(restore)} (first bad signal → "
        + ("rollback done)" if incident.rolled_back_at else "resolution)"),
        "",
        "## Timeline",
        "",
        "| time (UTC) | what |",
        "|---|---|",
    ]  # fmt: skip
    entries = [(row.at, f"**{row.kind}**: {row.detail}") for row in timeline]
    entries += [(at, f"trace: {what}") for at, what in _story(release.spans)]
    for at, what in sorted(entries, key=lambda e: e[0]):
        lines.append(f"| {at.astimezone(UTC):%Y-%m-%d %H:%M:%S} | {what.replace('|', '/')} |")
    lines += [
        "",
        "## For the team to write",
        "",
        "- Why the change hurt the service, and why the gates did not catch it.",
        "- What would have caught it earlier.",
        "- Follow-ups, with owners.",
        "",
    ]
    return "\n".join(lines)
