"""Every change to a flag, from any door (the command line, the admin API, a
``flagchange.requested`` from Kafka, a rollout step), goes through ``apply``: checked against
the flagd schema, written as a new version with who, when, why and the definition before,
announced to the evaluators, and emitted as ``flag.changed`` — all in one transaction."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from opentelemetry.trace import Tracer

from events.flags import ChangeAction, ChangedContent, ChangedSubject, ChangeSource, FlagChanged
from events.flags import flag_subject_id as subject_id
from services.flags import rollouts, store, taxonomy
from services.flags.definitions import check_flag, check_flag_set
from shared.bus.direct import in_transaction
from shared.bus.handlers import HandlerContext
from shared.clock import Clock, system_clock
from shared.db import is_transient
from shared.settings import Settings

log = logging.getLogger(__name__)


class UnknownFlag(LookupError):
    pass


class ChangeRefused(ValueError):
    pass


@dataclass(frozen=True)
class Change:
    environment: str
    flag_key: str
    action: ChangeAction
    by: str
    reason: str
    source: ChangeSource
    definition: dict[str, Any] | None = None  # for `set`
    variant: str | None = None  # for `rollout`: the variant rolled out
    steps: list[rollouts.Step] = field(default_factory=list)  # for `rollout`
    request_id: str | None = None


def schema_of(ctx: HandlerContext) -> str:
    return ctx.settings.db_schema("flags")


async def apply(ctx: HandlerContext, change: Change) -> FlagChanged | None:
    """Make ``change`` in the caller's transaction. None if it changes nothing (enabling an
    enabled flag); UnknownFlag, ChangeRefused, or DefinitionError if it cannot be made."""
    conn, now = ctx.conn, ctx.now()
    env, key = change.environment, change.flag_key
    flag_set = await store.lock_environment(conn, env)
    current = await store.get_flag(conn, env, key)
    previous = None if current is None else current.definition
    if change.action != "set" and previous is None:
        raise UnknownFlag(f"{env} has no flag {key!r}")
    assert change.action == "set" or previous is not None

    if change.action == "set":
        if change.definition is None:
            raise ChangeRefused("`set` needs the flag's definition")
        new: dict[str, Any] | None = change.definition
    elif change.action in ("enable", "disable"):
        assert previous is not None
        new = {**previous, "state": "ENABLED" if change.action == "enable" else "DISABLED"}
    elif change.action == "delete":
        new = None
    elif change.action == "rollout":
        assert previous is not None
        new = await _start_rollout(ctx, change, previous)
    elif change.action == "halt-rollout":
        halted = await store.end_rollout(
            conn, env, key, "halted", now, f"halted by {change.by}: {change.reason}"
        )
        if not halted:
            raise ChangeRefused(f"{env}/{key} has no rollout in progress")
        new = previous
    else:  # pragma: no cover - ChangeAction is closed
        raise ChangeRefused(f"unknown action {change.action!r}")

    if new == previous and change.action not in ("halt-rollout", "rollout"):
        return None  # nothing changes (a rollout's start is a change even at the same split)
    if new is not None and new != previous:
        check_flag(key, new, flag_set.evaluators, ctx.settings.flagd_schema_dir)
    if change.source != "rollout" and change.action in ("set", "enable", "disable", "delete"):
        # A person (or an incident) took the flag over: the rollout must not undo it.
        await store.end_rollout(
            conn, env, key, "halted", now, f"{change.action} by {change.by}: {change.reason}"
        )
    return await record(ctx, change, previous, new)


async def record(
    ctx: HandlerContext,
    change: Change,
    previous: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> FlagChanged:
    """Write the new version, announce it, and emit ``flag.changed`` (environment locked)."""
    conn, now = ctx.conn, ctx.now()
    env, key = change.environment, change.flag_key
    version = await store.last_version(conn, env, key) + 1
    await store.write_flag(conn, env, key, version, new, now, change.by)
    await store.record_change(
        conn,
        environment=env,
        key=key,
        version=version,
        action=change.action,
        source=change.source,
        by=change.by,
        reason=change.reason,
        previous=previous,
        definition=new,
        request_id=change.request_id,
        at=now,
    )
    await store.bump_revision(conn, env)
    await conn.execute("SELECT pg_notify($1, $2)", store.channel(schema_of(ctx)), env)
    event = FlagChanged(
        context=FlagChanged.new_context("lockstep/flags"),
        subject=ChangedSubject(
            id=subject_id(env, key),
            content=ChangedContent(
                environment=env,
                flag_key=key,
                version=version,
                action=change.action,
                changed_by=change.by,
                reason=change.reason,
                source=change.source,
                definition=copy.deepcopy(new),
                previous=copy.deepcopy(previous),
                request_id=change.request_id,
            ),
        ),
    )
    ctx.emit(event)
    ctx.span.set_attribute("lockstep.flag", subject_id(env, key))
    ctx.span.set_attribute("lockstep.flag.version", version)
    return event


async def _start_rollout(
    ctx: HandlerContext, change: Change, current: dict[str, Any]
) -> dict[str, Any]:
    if change.variant is None or not change.steps:
        raise ChangeRefused("a rollout needs the variant to roll out and its schedule")
    try:
        other = rollouts.other_variant(current, change.variant)
    except rollouts.RolloutRefused as exc:
        raise ChangeRefused(str(exc)) from exc
    await store.start_rollout(
        ctx.conn,
        environment=change.environment,
        key=change.flag_key,
        variant=change.variant,
        other=other,
        steps=[s.to_json() for s in change.steps],
        at=ctx.now(),
        by=change.by,
    )
    return rollouts.at_percent(current, change.variant, other, change.steps[0].percent)


async def advance_rollouts(ctx: HandlerContext) -> int:
    """Make every rollout step that is due; a flag changed by other hands since halts its
    rollout instead. Each rollout in a savepoint: one that fails stops only itself. Returns
    how many steps were made."""
    made = 0
    for rollout in await store.active_rollouts(ctx.conn, None):
        try:
            async with ctx.conn.transaction():
                made += await _advance(ctx, rollout)
        except Exception as exc:
            if is_transient(exc):
                raise  # the whole turn is tried again
            log.exception("flags: rollout %s of %s/%s could not advance", rollout.id,
                          rollout.environment, rollout.flag_key)  # fmt: skip
    return made


async def _advance(ctx: HandlerContext, rollout: store.Rollout) -> int:
    now = ctx.now()
    step = rollouts.Step.from_json(rollout.steps[rollout.next_step])
    if rollout.started_at + step.after > now:
        return 0
    await store.lock_environment(ctx.conn, rollout.environment)
    current = await store.get_flag(ctx.conn, rollout.environment, rollout.flag_key)
    fresh = await store.active_rollout(ctx.conn, rollout.environment, rollout.flag_key)
    if current is None or fresh is None or fresh.next_step != rollout.next_step:
        return 0  # deleted, or moved on by another instance meanwhile
    try:
        rollouts.other_variant(current.definition, rollout.variant)
    except rollouts.RolloutRefused as exc:
        await store.end_rollout(
            ctx.conn, rollout.environment, rollout.flag_key, "halted", now,
            f"the flag changed under the rollout: {exc}",
        )  # fmt: skip
        return 0
    new = rollouts.at_percent(current.definition, rollout.variant, rollout.other_variant,
                              step.percent)  # fmt: skip
    last = rollout.next_step + 1 == len(rollout.steps)
    await store.step_rollout(ctx.conn, rollout.id, rollout.next_step + 1, last, now)
    change = Change(
        environment=rollout.environment,
        flag_key=rollout.flag_key,
        action="rollout",
        by=rollout.started_by,
        reason=f"rollout step {rollout.next_step + 1} of {len(rollout.steps)}: "
        f"{step.percent}% on {rollout.variant!r}",
        source="rollout",
    )
    await record(ctx, change, current.definition, new)
    return 1


async def halt_rollouts_of_service(
    ctx: HandlerContext, environment: str, service: str, why: str
) -> list[str]:
    """Halt the rollouts in ``environment`` of flags that belong to a release of ``service``."""
    halted: list[str] = []
    for rollout in await store.active_rollouts(ctx.conn, environment):
        flag = await store.get_flag(ctx.conn, environment, rollout.flag_key)
        metadata = (flag.definition.get("metadata") if flag else None) or {}
        if taxonomy.problems(metadata) or taxonomy.of(metadata).service != service:
            continue
        change = Change(
            environment=environment,
            flag_key=rollout.flag_key,
            action="halt-rollout",
            by="lockstep/incidents",
            reason=why,
            source="kafka",
        )
        if await apply(ctx, change) is not None:
            halted.append(rollout.flag_key)
    return halted


async def apply_now(
    pool: asyncpg.Pool,
    settings: Settings,
    change: Change,
    *,
    tracer: Tracer,
    clock: Clock = system_clock,
) -> FlagChanged | None:
    """``apply`` in a transaction of its own, for the command line and the admin API: the
    change, its history row and its ``flag.changed`` (in the outbox) commit together."""

    async def work(ctx: HandlerContext) -> FlagChanged | None:
        ctx.span.set_attribute("lockstep.flag.changed_by", change.by)
        return await apply(ctx, change)

    name = f"flags: {change.action} {subject_id(change.environment, change.flag_key)}"
    return await in_transaction(pool, settings, "flags", work, tracer=tracer, span=name,
                                clock=clock)  # fmt: skip


async def import_flag_set(
    pool: asyncpg.Pool,
    settings: Settings,
    environment: str,
    doc: dict[str, Any],
    *,
    by: str,
    reason: str,
    source: ChangeSource,
    tracer: Tracer,
    clock: Clock = system_clock,
) -> list[FlagChanged]:
    """Load a whole flagd flag set into ``environment``: its ``$evaluators`` and metadata, and
    every flag in it (a new version of each that differs). Flags not in the file are kept."""
    check_flag_set(doc, settings.flagd_schema_dir)
    evaluators = doc.get("$evaluators") or {}
    metadata = {
        k: v for k, v in (doc.get("metadata") or {}).items() if k not in ("flagSetId", "version")
    }

    async def work(ctx: HandlerContext) -> list[FlagChanged]:
        before = await store.lock_environment(ctx.conn, environment)
        await store.set_parts(ctx.conn, environment, evaluators, metadata)
        made: list[FlagChanged] = []
        for key, definition in doc["flags"].items():
            change = Change(environment, key, "set", by, reason, source, definition=definition)
            event = await apply(ctx, change)
            if event is not None:
                made.append(event)
        # The flags the file leaves alone must still stand with the new $evaluators.
        for kept in await store.flags_of(ctx.conn, environment):
            if kept.key not in doc["flags"]:
                check_flag(kept.key, kept.definition, evaluators, settings.flagd_schema_dir)
        if (before.evaluators, before.metadata) != (evaluators, metadata) and not made:
            await store.bump_revision(ctx.conn, environment)  # the evaluators must reload
            await ctx.conn.execute(
                "SELECT pg_notify($1, $2)", store.channel(schema_of(ctx)), environment
            )
        return made

    return await in_transaction(pool, settings, "flags", work, tracer=tracer,
                                span=f"flags: import into {environment}", clock=clock)  # fmt: skip
