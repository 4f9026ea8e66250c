"""``lockstep incidents``, ``lockstep drill`` and ``lockstep hold``: what on-call engineers
do during an incident, and after it.

Acknowledging, resolving, continuing or aborting a runbook go through the same code as the
incidents service (one transaction, events through its outbox)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from opentelemetry.trace import Tracer
from rich.console import Console
from rich.table import Table

from cli.service_pool import Unreachable, traced, whoami, with_service_pool
from shared.bus.handlers import HandlerContext
from shared.settings import Settings

incidents_app = typer.Typer(help="Incidents: list, acknowledge, resolve, runbooks, postmortems.",
                            no_args_is_help=True)  # fmt: skip
drill_app = typer.Typer(help="Prove that rollback works, on purpose.", no_args_is_help=True)
hold_app = typer.Typer(help="Holds on promotion after a rollback.", no_args_is_help=True)

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
T = TypeVar("T")

By = Annotated[str, typer.Option(help="Who (default: your login)")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _with_pool(work: Callable[[asyncpg.Pool, Settings], Awaitable[T]]) -> T:
    try:
        return with_service_pool("incidents", work)
    except Unreachable as exc:
        raise _fail(str(exc)) from None


def _act(name: str, work: Callable[[HandlerContext, Any], Awaitable[T]]) -> T:
    """``work(ctx, model)`` in a transaction of the incidents service's, events to its outbox."""
    from policy.in_force import in_force
    from services.incidents.actions import ActionRefused, NoSuchIncident
    from shared.bus.direct import in_transaction

    async def go(pool: asyncpg.Pool, settings: Settings, tracer: Tracer) -> T:
        async def with_model(ctx: HandlerContext) -> T:
            found = await in_force(ctx.conn)
            return await work(ctx, found[1] if found else None)

        return await in_transaction(
            pool, settings, "incidents", with_model, tracer=tracer, span=name
        )

    try:
        return _with_pool(traced("incidents", go))
    except (NoSuchIncident, ActionRefused) as exc:
        raise _fail(str(exc), code=1) from None


@incidents_app.command("list")
def incidents_list(
    all_: Annotated[bool, typer.Option("--all", help="Resolved ones too")] = False,
) -> None:
    """Open incidents (newest first)."""
    from services.incidents import store

    async def work(pool: asyncpg.Pool, _settings: Settings) -> list[store.Incident]:
        async with pool.acquire() as conn:
            return await store.listed(conn, all_)

    found = _with_pool(work)
    table = Table("id", "state", "service", "env", "version", "detected", "rollback", "title")
    for i in found:
        rollback = (f"to {i.rolled_back_to}" if i.rolled_back_to
                    else "asked" if i.rollback_at else "")  # fmt: skip
        table.add_row(i.id, i.state, i.service, i.environment, i.version or "",
                      f"{i.detected_at.astimezone(UTC):%m-%d %H:%M:%S}", rollback,
                      i.title)  # fmt: skip
    out.print(table if found else "no open incidents")


@incidents_app.command("show")
def incidents_show(incident_id: str) -> None:
    """An incident and its timeline."""
    from services.incidents import store

    async def work(pool: asyncpg.Pool, _settings: Settings) -> Any:
        async with pool.acquire() as conn:
            return await store.get(conn, incident_id), await store.timeline(conn, incident_id)

    incident, timeline = _with_pool(work)
    if incident is None:
        raise _fail(f"no incident {incident_id}", code=1)
    out.print(f"{incident.id} [{incident.state}] {incident.service} in {incident.environment}: "
              f"{incident.title}", highlight=False, markup=False)  # fmt: skip
    table = Table("time (UTC)", "what", "detail")
    for row in timeline:
        table.add_row(f"{row.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}", row.kind, row.detail)
    out.print(table)


@incidents_app.command("ack")
def incidents_ack(incident_id: str, by: By = "") -> None:
    """Acknowledge: you have it; escalation stops."""
    from services.incidents.actions import acknowledge

    who = by or whoami()
    _act(f"incidents: ack {incident_id}", lambda ctx, model: acknowledge(ctx, model, incident_id,
                                                                         who))  # fmt: skip
    out.print(f"{incident_id} acknowledged by {who}", highlight=False)


@incidents_app.command("resolve")
def incidents_resolve(
    incident_id: str,
    by: By = "",
    reason: Annotated[str, typer.Option(help="How it ended")] = "resolved by hand",
) -> None:
    """Resolve: the incident is over; promotion of the service there may go on."""
    from services.incidents.actions import resolve

    who = by or whoami()
    _act(f"incidents: resolve {incident_id}",
         lambda ctx, model: resolve(ctx, model, incident_id, who, reason))  # fmt: skip
    out.print(f"{incident_id} resolved by {who}", highlight=False)


def _resume(incident_id: str, by: str, go_on: bool) -> None:
    from services.incidents.runbooks import resume

    who = by or whoami()
    run = _act(f"incidents: {'continue' if go_on else 'abort'} {incident_id}",
               lambda ctx, model: resume(ctx, model, incident_id, who, go_on))  # fmt: skip
    verb = "continued" if go_on else "aborted"
    out.print(f"{incident_id}: runbook {run.runbook} step {run.next_step + 1} {verb} by {who}",
              highlight=False)  # fmt: skip


@incidents_app.command("continue")
def incidents_continue(incident_id: str, by: By = "") -> None:
    """Continue a runbook paused for a person."""
    _resume(incident_id, by, go_on=True)


@incidents_app.command("abort")
def incidents_abort(incident_id: str, by: By = "") -> None:
    """Abort a runbook paused for a person."""
    _resume(incident_id, by, go_on=False)


@incidents_app.command("postmortem")
def incidents_postmortem(
    incident_id: str,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout")] = None,
) -> None:
    """A Markdown timeline from the events and the trace, with time to detect and restore."""
    from cli.views import read_only_view
    from services.incidents import store
    from services.incidents.actions import trace_id_of
    from services.incidents.postmortem import Release, markdown
    from shared.telemetry import read_spans

    async def work(pool: asyncpg.Pool, settings: Settings) -> Any:
        async with pool.acquire() as conn:
            incident = await store.get(conn, incident_id)
            timeline = await store.timeline(conn, incident_id)
        commit = repo = None
        if incident is not None and incident.version is not None:
            try:
                artifacts = await read_only_view(settings, "artifacts")
            except (OSError, asyncpg.PostgresError):
                artifacts = None
            if artifacts is not None:
                try:
                    row = await artifacts.fetchrow(
                        "SELECT commit, commit_source FROM artifacts "
                        "WHERE service = $1 AND version = $2",
                        incident.service, incident.version,
                    )  # fmt: skip
                except asyncpg.PostgresError:
                    row = None
                finally:
                    await artifacts.close()
                if row is not None:
                    commit, repo = row["commit"], row["commit_source"]
        return incident, timeline, commit, repo, settings.trace_dir

    incident, timeline, commit, repo, trace_dir = _with_pool(work)
    if incident is None:
        raise _fail(f"no incident {incident_id}", code=1)
    trace_id = trace_id_of(incident.traceparent)
    spans = [s for s in read_spans(trace_dir) if trace_id and s.get("trace_id") == trace_id]
    text = markdown(incident, timeline, Release(commit=commit, repo=repo, spans=spans))
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote {out_file}", highlight=False)


@drill_app.command("rollback")
def drill_rollback(
    service: Annotated[str, typer.Option(help="The service to roll back")],
    env: Annotated[str, typer.Option("--env", help="The environment (e.g. staging)")],
    by: By = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the rollback")] = 120.0,
) -> None:
    """Roll a service back on purpose, through the whole path (incident, rollback.requested,
    promotion, deployer, service.rolledback), and record how long it took. A drill neither
    marks the version bad nor holds promotion."""
    from services.incidents import actions, store

    who = by or whoami()

    async def start(ctx: HandlerContext, model: Any) -> str:
        deployment = await store.latest_deployment(ctx.conn, service, env)
        if deployment is None:
            raise actions.ActionRefused(f"nothing of {service} has been deployed to {env}")
        incident, _ = await actions.open_incident(
            ctx, model, dedup_key=f"drill:{service}/{env}:{uuid.uuid4().hex[:8]}",
            service=service, environment=env,
            title=f"rollback drill of {service}@{deployment.version} in {env} by {who}",
            criterion=None, deployment=deployment, first_signal_at=ctx.now(), drill=True,
        )  # fmt: skip
        await ctx.conn.execute(
            "INSERT INTO drills (incident_id, service, environment, started_at) "
            "VALUES ($1, $2, $3, $4)",
            incident.id, service, env, ctx.now(),
        )  # fmt: skip
        await actions.request_rollback(ctx, incident, deployment, f"drill by {who}")
        return incident.id

    incident_id = _act(f"drill: roll back {service} in {env}", start)
    out.print(f"drill {incident_id}: rollback of {service} in {env} requested", highlight=False)

    async def wait(pool: asyncpg.Pool, _settings: Settings) -> asyncpg.Record | None:
        deadline = time.monotonic() + timeout
        async with pool.acquire() as conn:
            while time.monotonic() < deadline:
                row = await conn.fetchrow(
                    "SELECT started_at, finished_at, outcome, detail FROM drills "
                    "WHERE incident_id = $1", incident_id,
                )  # fmt: skip
                if row is not None and row["finished_at"] is not None:
                    return row
                await asyncio.sleep(0.2)
            await conn.execute(
                "UPDATE drills SET finished_at = $2, outcome = 'timed out', detail = $3 "
                "WHERE incident_id = $1 AND finished_at IS NULL",
                incident_id, datetime.now(UTC), f"no service.rolledback within {timeout:g}s",
            )  # fmt: skip
            return None

    row = _with_pool(wait)
    if row is None:
        raise _fail(
            f"drill {incident_id}: no rollback within {timeout:g}s. Is an earlier version of "
            f"{service} recorded in {env}, and are the promotion service and a deployer agent "
            f"for {env} running? (lockstep incidents show {incident_id})",
            code=1,
        )
    took = (row["finished_at"] - row["started_at"]).total_seconds()
    out.print(f"drill {incident_id}: {row['detail']} — rolled back in {took:.1f} s",
              highlight=False)  # fmt: skip


@hold_app.command("release")
def hold_release(
    service: Annotated[str, typer.Option(help="The service held")],
    reason: Annotated[str, typer.Option(help="Why promotion may go on")],
    env: Annotated[str | None, typer.Option("--env", help="Lift its incident hold here")] = None,
    version: Annotated[
        str | None, typer.Option(help="Let a version marked bad by a rollback be promoted again")
    ] = None,
    by: By = "",
) -> None:
    """Release a hold the promotion service keeps after a rollback (hold.released)."""
    from events.promotions import HoldReleased, HoldReleasedContent, HoldReleasedSubject
    from shared.bus import Publisher

    if env is None and version is None:
        raise _fail("say what to release: --env ENV (the incident hold) and/or --version V")
    event = HoldReleased(
        context=HoldReleased.new_context("lockstep/cli"),
        subject=HoldReleasedSubject(
            id=service,
            content=HoldReleasedContent(
                service=service, environment=env, version=version, by=by or whoami(),
                reason=reason,
            ),
        ),
    )  # fmt: skip

    async def send() -> None:
        async with Publisher(Settings(), client_id="lockstep-cli") as publisher:
            await publisher.publish(event)

    asyncio.run(send())
    out.print(event.describe(), highlight=False)
