"""What the read-only commands print: artifact tables, what runs where, the live tail, the
trace tree. Services are read only through their public faces (``services.<name>.api``)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.trace_view import build_tree, render, traces_of
from events import ArtifactRef, InvalidEvent, KafkaRecord, decode, short_type, topics
from events.kafka import PartitionBatch, SafeFetcher, Unreadable, reason_of
from services.artifacts.api import ArtifactSummary, ArtifactView, open_artifacts
from services.promotion.api import Placement, what_runs_where
from shared.bus.kafka_client import kafka_consumer
from shared.settings import Settings
from shared.telemetry import read_spans


def print_artifact_list(out: Console, settings: Settings, service: str | None, limit: int) -> None:
    async def go() -> list[ArtifactSummary]:
        async with open_artifacts(settings) as artifacts:
            return await artifacts.listed(service, limit)

    rows = asyncio.run(go())
    table = Table("artifact", "digest", "commit", "evidence", "registered")
    for r in rows:
        evidence = f"{r.evidence}" + (f" ([red]{r.failing} failing[/red])" if r.failing else "")
        table.add_row(
            f"{r.service}@{r.version}",
            r.digest[:19] + "…",
            r.commit[:12],
            evidence,
            r.registered_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        )
    out.print(table if rows else "no artifacts registered yet")


def print_artifact(out: Console, settings: Settings, ref: ArtifactRef) -> bool:
    async def go() -> ArtifactView | None:
        async with open_artifacts(settings) as artifacts:
            return await artifacts.show(ref.service, ref.version)

    view = asyncio.run(go())
    if view is None:
        return False
    out.print(f"[bold]{view.service}@{view.version}[/bold]  status: {view.status}")
    if view.digest:
        out.print(f"  digest:     {view.digest}")
        out.print(f"  commit:     {view.commit}")
        assert view.registered_at is not None
        out.print(f"  registered: {view.registered_at.astimezone(UTC).isoformat()}")
        out.print(f"  trace:      {view.trace_id}  (lockstep trace {view.service}@{view.version})")
    if view.evidence:
        table = Table("evidence", "verdict", "state", "details")
        for e in view.evidence:
            verdict = "[green]pass[/green]" if e.passed else "[red]fail[/red]"
            details = ", ".join(f"{k}={v}" for k, v in e.details.items() if k != "metrics")
            if "metrics" in e.details:
                details += " " + ", ".join(
                    f"{k}={m['value']:g}{m['unit']}" for k, m in e.details["metrics"].items()
                )
            state = e.state + (f": {e.reason}" if e.reason else "")
            table.add_row(e.kind, verdict, escape(state), escape(details))
        out.print(table)
    else:
        out.print("  no evidence yet")
    for rej in view.rejections:
        out.print(
            f"  [red]rejected[/red] {rej['digest'] or ''} ({rej['code']}): {escape(rej['reason'])}"
        )
    return True


def print_env_status(out: Console, settings: Settings) -> None:
    rows: list[Placement] = asyncio.run(what_runs_where(settings))
    environments = sorted({r.environment for r in rows})
    table = Table("service", *environments)
    by_service: dict[str, dict[str, str]] = {}
    for r in rows:
        by_service.setdefault(r.service, {})[r.environment] = f"{r.version} {r.digest[7:19]}"
    for service, cells in sorted(by_service.items()):
        table.add_row(service, *(cells.get(e, "-") for e in environments))
    out.print(table if rows else "nothing deployed yet")


def describe_record(record: KafkaRecord, max_bytes: int) -> str:
    """One line for a record: its event's own summary, or why it is not a valid event."""
    if record.topic.endswith("." + topics.DLQ):
        why = reason_of(record)
        return (
            f"DEAD LETTER from {why.get('topic')}[{why.get('partition')}]@{why.get('offset')} "
            f"({why.get('stage')}, {why.get('group')}): {why.get('error')}"
        )
    try:
        event = decode(record, max_bytes=max_bytes).event
    except InvalidEvent as exc:
        return f"(not a valid event: {exc.reason})"
    return f"{short_type(event.context.type)}: {event.describe()}"


async def tail(
    out: Console,
    settings: Settings,
    logical: list[str],
    from_beginning: bool,
    count: int | None,
    idle: float | None,
) -> None:
    names = [settings.topic(t) for t in (logical or list(topics.ALL))]
    consumer = kafka_consumer(
        settings.as_principal("viewer"),  # read-only (infra/access.toml)
        *names,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    fetcher = SafeFetcher(consumer, name="lockstep tail")
    seen = 0
    last = time.monotonic()
    try:
        while count is None or seen < count:
            batch = await fetcher.getmany(timeout_ms=500)
            if not batch:
                if idle is not None and time.monotonic() - last > idle:
                    return
                continue
            last = time.monotonic()
            for part in batch.values():
                for item in part.items():
                    out.print(_tail_line(item, part, settings.max_event_bytes),
                              highlight=False, markup=False, soft_wrap=True)  # fmt: skip
                    seen += 1
                    if count is not None and seen >= count:
                        return
    finally:
        await consumer.stop()


def _tail_line(item: KafkaRecord | Unreadable, part: PartitionBatch, max_bytes: int) -> str:
    if isinstance(item, Unreadable):  # the Kafka client itself could not decode it
        return f"UNREADABLE {item.topic}[{item.partition}]@{item.offset}: {item.error}"
    ms = part.timestamp(item)
    when = datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else datetime.now(UTC)
    stamp = when.strftime("%H:%M:%S.%f")[:-3]
    key = (item.key or b"").decode(errors="replace")
    return (
        f"{stamp} {item.topic.split('.', 1)[-1]:<10} {key:<14} {describe_record(item, max_bytes)}"
    )


def print_trace(out: Console, settings: Settings, label: str, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        traces = traces_of(read_spans(settings.trace_dir), label)
        if traces or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    # The release's own trace first; a lone span elsewhere (a person's approval, which
    # carries no trace of its own) is only mentioned.
    ordered = sorted(traces.items(), key=lambda item: -len(item[1]))
    lone = [spans[0] for _, spans in ordered if len(spans) == 1 and len(ordered) > 1]
    for trace_id, spans in ordered:
        if len(spans) == 1 and len(ordered) > 1:
            continue
        out.print(f"[bold]trace {trace_id}[/bold]  ({len(spans)} spans)")
        for line in render(build_tree(spans)):
            out.print(line, highlight=False, markup=False)
    if lone:
        names = ", ".join(sorted({f"{s.get('service')}: {s['name']}" for s in lone}))
        out.print(f"and {len(lone)} span(s) in traces of their own: {names}", highlight=False)
    return bool(traces)
