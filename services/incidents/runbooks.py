"""Runbooks: the release model's codified steps, run for an incident whose criterion names
one. Each step's result is a ``runbookstep.finished`` event. ``wait`` steps and the service's
clock move a run on; a ``pause`` step stops it for a person ("guided failure"), who continues
or aborts it from the command line."""

from __future__ import annotations

from typing import Any

from events.incidents import RunbookStepFinished, StepContent, StepOutcome, StepSubject
from policy.model import ReleaseModel, fill, parse_duration
from services.incidents import actions, store
from services.incidents.store import Incident, RunbookRun
from shared.bus.handlers import HandlerContext


def render(template: str, incident: Incident) -> str:
    """A step's parameter with its {service}, {environment}, {version}, {incident} and
    {criterion} filled in (the model refuses any other field when it is loaded)."""
    values = {
        "service": incident.service, "environment": incident.environment,
        "version": incident.version or "", "incident": incident.id,
        "criterion": incident.criterion or "",
    }  # fmt: skip
    return fill(template, values)


def _said(ctx: HandlerContext, incident: Incident, run: RunbookRun, index: int,
          outcome: StepOutcome, detail: str, by: str | None = None) -> None:  # fmt: skip
    ctx.emit(
        RunbookStepFinished(
            context=RunbookStepFinished.new_context(actions.SOURCE),
            subject=StepSubject(
                id=incident.id,
                content=StepContent(
                    incident_id=incident.id, runbook=run.runbook,
                    step=str(run.steps[index]["name"]), index=index, outcome=outcome,
                    detail=detail, by=by,
                ),
            ),
        )
    )  # fmt: skip


async def start(ctx: HandlerContext, model: ReleaseModel, incident: Incident, name: str) -> None:
    runbook = model.runbooks.get(name)
    if runbook is None:
        return
    steps = [step.model_dump(mode="json") for step in runbook.steps]
    await store.start_runbook(ctx.conn, incident.id, name, steps)
    await store.note(ctx.conn, incident.id, ctx.now(), "runbook", f"runbook {name} started")
    run = await store.runbook_run(ctx.conn, incident.id)
    if run is not None:
        await advance(ctx, model, incident, run)


async def advance_all(ctx: HandlerContext, model: ReleaseModel | None) -> None:
    for run in await store.running_runbooks(ctx.conn):
        incident = await store.get(ctx.conn, run.incident_id)
        if incident is not None:
            await advance(ctx, model, incident, run)


async def advance(
    ctx: HandlerContext, model: ReleaseModel | None, incident: Incident, run: RunbookRun
) -> None:
    """Run steps until one waits, pauses, or the runbook ends."""
    now = ctx.now()
    index = run.next_step
    started = run.step_started_at
    while index < len(run.steps):
        step: dict[str, Any] = run.steps[index]
        params: dict[str, str] = step.get("params") or {}
        action = step["action"]
        if action == "wait":
            if started is None:
                started = now
                await store.set_runbook(ctx.conn, incident.id, step_started_at=now)
            if now - started < parse_duration(params["duration"]):
                return
            detail = f"waited {params['duration']}"
        elif action == "pause":
            prompt = render(params.get("prompt", "continue or abort"), incident)
            await store.set_runbook(ctx.conn, incident.id, next_step=index, state="paused")
            await store.note(ctx.conn, incident.id, now, "runbook",
                             f"step {index + 1} {step['name']!r} paused: {prompt}")  # fmt: skip
            _said(ctx, incident, run, index, "paused", prompt)
            return
        elif action == "notify":
            message = params.get("message")
            detail = render(message, incident) if message is not None else incident.title
            if model is not None:
                for recipient in actions.recipients(model, incident.service, ["owner"]):
                    level = max(incident.escalation_level, 0)
                    await actions.notify(ctx, model, incident, level, recipient, detail)
        else:  # disable-flag / enable-flag
            flag = render(params["flag"], incident)
            verb = "disable" if action == "disable-flag" else "enable"
            await actions.set_flag(ctx, incident, flag, verb, f"runbook {run.runbook}")
            detail = f"asked to {verb} {flag}"
        await store.note(ctx.conn, incident.id, now, "runbook",
                         f"step {index + 1} {step['name']!r}: {detail}")  # fmt: skip
        _said(ctx, incident, run, index, "done", detail)
        index += 1
        started = None
        await store.set_runbook(ctx.conn, incident.id, next_step=index, step_started_at=None)
    await store.set_runbook(ctx.conn, incident.id, state="done")


async def resume(
    ctx: HandlerContext, model: ReleaseModel | None, incident_id: str, by: str, go_on: bool
) -> RunbookRun:
    """A person continues (or aborts) a paused runbook."""
    run = await store.runbook_run(ctx.conn, incident_id)
    incident = await store.get(ctx.conn, incident_id)
    if run is None or incident is None:
        raise actions.NoSuchIncident(f"{incident_id} has no runbook")
    if run.state != "paused":
        raise actions.ActionRefused(f"{incident_id}'s runbook is {run.state}, not paused")
    now = ctx.now()
    index = run.next_step
    name = run.steps[index]["name"]
    if not go_on:
        await store.set_runbook(ctx.conn, incident_id, state="aborted")
        await store.note(ctx.conn, incident_id, now, "runbook",
                         f"step {index + 1} {name!r} aborted by {by}")  # fmt: skip
        _said(ctx, incident, run, index, "aborted", "aborted", by=by)
        return run
    await store.set_runbook(ctx.conn, incident_id, state="running", next_step=index + 1,
                            step_started_at=None)  # fmt: skip
    await store.note(ctx.conn, incident_id, now, "runbook",
                     f"step {index + 1} {name!r} continued by {by}")  # fmt: skip
    _said(ctx, incident, run, index, "continued", "continued", by=by)
    moved = await store.runbook_run(ctx.conn, incident_id)
    assert moved is not None
    await advance(ctx, model, incident, moved)
    return moved
