"""``lockstep incidents``, ``lockstep drill`` and ``lockstep hold``: what on-call engineers
do during an incident, and after it.

Everything goes through the incidents service's public face (``services.incidents.api``):
acknowledging, resolving, continuing or aborting a runbook go through the same code as the
service (one transaction, events through its outbox)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from cli.root import Root, of
from cli.signing import acting_person
from services.incidents.api import ActionRefused, Incidents, NoSuchIncident, open_incidents

incidents_app = typer.Typer(help="Incidents: list, acknowledge, resolve, runbooks, postmortems.",
                            no_args_is_help=True)  # fmt: skip
drill_app = typer.Typer(help="Prove that rollback works, on purpose.", no_args_is_help=True)
hold_app = typer.Typer(help="Holds on promotion after a rollback.", no_args_is_help=True)

T = TypeVar("T")

By = Annotated[str, typer.Option(help="Who: you, as your person key says (default)")]


def _with_incidents(
    root: Root, work: Callable[[Incidents], Awaitable[T]], *, traced: bool = False
) -> T:
    """``work`` on the incidents service (its commands traced as ``incidents-cli`` if
    ``traced``); a refused command is one line and exit 1."""

    async def go() -> T:
        if not traced:
            async with open_incidents(root.settings) as incidents:
                return await work(incidents)
        async with (
            root.tracer("incidents") as tracer,
            open_incidents(root.settings, tracer=tracer) as incidents,
        ):
            return await work(incidents)

    try:
        return root.on_postgres(go())
    except (NoSuchIncident, ActionRefused) as exc:
        raise root.fail(str(exc), code=1) from None


@incidents_app.command("list")
def incidents_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Resolved ones too")] = False,
) -> None:
    """Open incidents (newest first)."""
    root = of(ctx)
    found = _with_incidents(root, lambda incidents: incidents.listed(all_))
    table = Table("id", "state", "service", "env", "version", "detected", "rollback", "title")
    for i in found:
        rollback = (f"to {i.rolled_back_to}" if i.rolled_back_to
                    else "asked" if i.rollback_at else "")  # fmt: skip
        table.add_row(i.id, i.state, i.service, i.environment, i.version or "",
                      f"{i.detected_at.astimezone(UTC):%m-%d %H:%M:%S}", rollback,
                      i.title)  # fmt: skip
    root.out.print(table if found else "no open incidents")


async def _incident_and_timeline(incidents: Incidents, incident_id: str) -> Any:
    return await incidents.get(incident_id), await incidents.timeline(incident_id)


@incidents_app.command("show")
def incidents_show(ctx: typer.Context, incident_id: str) -> None:
    """An incident and its timeline."""
    root = of(ctx)
    incident, timeline = _with_incidents(
        root, lambda incidents: _incident_and_timeline(incidents, incident_id)
    )
    if incident is None:
        raise root.fail(f"no incident {incident_id}", code=1)
    root.out.print(f"{incident.id} [{incident.state}] {incident.service} in "
                   f"{incident.environment}: {incident.title}", highlight=False,
                   markup=False)  # fmt: skip
    table = Table("time (UTC)", "what", "detail")
    for row in timeline:
        table.add_row(f"{row.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}", row.kind, row.detail)
    root.out.print(table)


@incidents_app.command("ack")
def incidents_ack(ctx: typer.Context, incident_id: str, by: By = "") -> None:
    """Acknowledge: you have it; escalation stops."""
    root = of(ctx)
    who = acting_person(root, by)
    _with_incidents(root, lambda incidents: incidents.acknowledge(incident_id, who),
                    traced=True)  # fmt: skip
    root.out.print(f"{incident_id} acknowledged by {who}", highlight=False)


@incidents_app.command("resolve")
def incidents_resolve(
    ctx: typer.Context,
    incident_id: str,
    by: By = "",
    reason: Annotated[str, typer.Option(help="How it ended")] = "resolved by hand",
) -> None:
    """Resolve: the incident is over; promotion of the service there may go on."""
    root = of(ctx)
    who = acting_person(root, by)
    _with_incidents(root, lambda incidents: incidents.resolve(incident_id, who, reason),
                    traced=True)  # fmt: skip
    root.out.print(f"{incident_id} resolved by {who}", highlight=False)


def _resume(root: Root, incident_id: str, by: str, go_on: bool) -> None:
    who = acting_person(root, by)

    async def work(incidents: Incidents) -> Any:
        if go_on:
            return await incidents.continue_runbook(incident_id, who)
        return await incidents.abort_runbook(incident_id, who)

    run = _with_incidents(root, work, traced=True)
    verb = "continued" if go_on else "aborted"
    root.out.print(f"{incident_id}: runbook {run.runbook} step {run.next_step + 1} {verb} by "
                   f"{who}", highlight=False)  # fmt: skip


@incidents_app.command("continue")
def incidents_continue(ctx: typer.Context, incident_id: str, by: By = "") -> None:
    """Continue a runbook paused for a person."""
    _resume(of(ctx), incident_id, by, go_on=True)


@incidents_app.command("abort")
def incidents_abort(ctx: typer.Context, incident_id: str, by: By = "") -> None:
    """Abort a runbook paused for a person."""
    _resume(of(ctx), incident_id, by, go_on=False)


@incidents_app.command("postmortem")
def incidents_postmortem(
    ctx: typer.Context,
    incident_id: str,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout")] = None,
) -> None:
    """A Markdown timeline from the events and the trace, with time to detect and restore."""
    import asyncpg

    from services.artifacts.api import Commit, open_artifacts
    from services.incidents.api import Release, postmortem_markdown, trace_id_of
    from shared.telemetry import read_spans

    root = of(ctx)
    settings = root.settings

    async def commit_of(service: str, version: str) -> Commit | None:
        # The registry may be elsewhere, or never have run: the postmortem goes without.
        try:
            async with open_artifacts(settings) as artifacts:
                return await artifacts.commit_of(service, version)
        except (OSError, asyncpg.PostgresError):
            return None

    async def work(incidents: Incidents) -> Any:
        incident, timeline = await _incident_and_timeline(incidents, incident_id)
        commit = None
        if incident is not None and incident.version is not None:
            commit = await commit_of(incident.service, incident.version)
        return incident, timeline, commit

    incident, timeline, commit = _with_incidents(root, work)
    if incident is None:
        raise root.fail(f"no incident {incident_id}", code=1)
    trace_id = trace_id_of(incident.traceparent)
    spans = [
        s for s in read_spans(settings.trace_dir) if trace_id and s.get("trace_id") == trace_id
    ]
    release = Release(
        commit=commit.commit if commit else None, repo=commit.repo if commit else None,
        spans=spans,
    )  # fmt: skip
    text = postmortem_markdown(incident, timeline, release)
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        root.err.print(f"wrote {out_file}", highlight=False)


@drill_app.command("rollback")
def drill_rollback(
    ctx: typer.Context,
    service: Annotated[str, typer.Option(help="The service to roll back")],
    env: Annotated[str, typer.Option("--env", help="The environment (e.g. staging)")],
    by: By = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the rollback")] = 120.0,
) -> None:
    """Roll a service back on purpose, through the whole path (incident, rollback.requested,
    promotion, deployer, service.rolledback), and record how long it took. A drill neither
    marks the version bad nor holds promotion."""
    root = of(ctx)
    who = acting_person(root, by)
    incident_id = _with_incidents(
        root, lambda incidents: incidents.start_drill(service, env, who), traced=True
    )
    root.out.print(f"drill {incident_id}: rollback of {service} in {env} requested",
                   highlight=False)  # fmt: skip
    drill = _with_incidents(root, lambda incidents: incidents.wait_for_drill(incident_id, timeout))
    if drill is None:
        raise root.fail(
            f"drill {incident_id}: no rollback within {timeout:g}s. Is an earlier version of "
            f"{service} recorded in {env}, and are the promotion service and a deployer agent "
            f"for {env} running? (lockstep incidents show {incident_id})",
            code=1,
        )
    assert drill.finished_at is not None
    took = (drill.finished_at - drill.started_at).total_seconds()
    root.out.print(f"drill {incident_id}: {drill.detail} — rolled back in {took:.1f} s",
                   highlight=False)  # fmt: skip


@hold_app.command("release")
def hold_release(
    ctx: typer.Context,
    service: Annotated[str, typer.Option(help="The service held")],
    reason: Annotated[str, typer.Option(help="Why promotion may go on")],
    env: Annotated[str | None, typer.Option("--env", help="Lift its incident hold here")] = None,
    version: Annotated[
        str | None, typer.Option(help="Let a version marked bad by a rollback be promoted again")
    ] = None,
    by: Annotated[
        str, typer.Option(help="Who releases it (default: whose person key is here)")
    ] = "",
) -> None:
    """Release a hold the promotion service keeps after a rollback (hold.released), signed
    with your person key."""
    from cli.publish import publish
    from cli.signing import person
    from services.promotion.api import hold_released

    root = of(ctx)
    if env is None and version is None:
        raise root.fail("say what to release: --env ENV (the incident hold) and/or --version V")
    key = person(root, by)  # a person's decision: signed with their key, in their name
    assert key.name is not None
    event = hold_released(service, environment=env, version=version, by=key.name,
                          reason=reason)  # fmt: skip
    publish(root, event, client_id="lockstep-cli", signing_key=key, principal="person")
    root.out.print(event.describe(), highlight=False)
