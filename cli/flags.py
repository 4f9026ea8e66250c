"""``lockstep flags``: define, change, roll out, export and review feature flags.

Changes go through the same code as the admin API and Kafka requests (one transaction:
the new version, its history row, and ``flag.changed`` in the flags service's outbox, which
the running service publishes)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from opentelemetry.trace import Tracer
from rich.console import Console
from rich.table import Table

from cli.service_pool import Unreachable, traced, whoami, with_service_pool
from events.flags import ChangeAction
from services.flags.definitions import DefinitionError
from shared.settings import Settings

flags_app = typer.Typer(help="Feature flags (flagd-compatible, served over OFREP).",
                        no_args_is_help=True)  # fmt: skip
keys_app = typer.Typer(help="API keys for OFREP evaluation and the admin API.",
                       no_args_is_help=True)  # fmt: skip
flags_app.add_typer(keys_app, name="keys")

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
T = TypeVar("T")

Env = Annotated[str, typer.Option("--env", help="The environment (e.g. prod-eu)")]
By = Annotated[str, typer.Option(help="Who makes the change (default: your login)")]
Reason = Annotated[str, typer.Option(help="Why (kept in the flag's history)")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _with_pool(work: Callable[[asyncpg.Pool, Settings], Awaitable[T]]) -> T:
    try:
        return with_service_pool("flags", work)
    except Unreachable as exc:
        raise _fail(str(exc)) from None


def _change(
    env: str,
    key: str,
    action: ChangeAction,
    by: str,
    reason: str,
    **extra: Any,
) -> None:
    from services.flags.changes import Change, ChangeRefused, UnknownFlag, apply_now
    from services.flags.definitions import SchemaMissing

    by = by or whoami()

    async def work(pool: asyncpg.Pool, settings: Settings, tracer: Tracer) -> Any:
        change = Change(env, key, action, by, reason, "cli", **extra)
        return await apply_now(pool, settings, change, tracer=tracer)

    try:
        event = _with_pool(traced("flags", work))
    except DefinitionError as exc:
        raise _refused(f"{env}/{key} is not a valid flag", exc) from None
    except (UnknownFlag, ChangeRefused, SchemaMissing) as exc:
        raise _fail(str(exc.args[0]) if exc.args else str(exc)) from None
    if event is None:
        out.print(f"{env}/{key}: nothing to change", highlight=False)
        return
    c = event.subject.content
    out.print(f"{env}/{key} is now version {c.version} ({c.action} by {c.changed_by})",
              highlight=False)  # fmt: skip


def _refused(what: str, exc: DefinitionError) -> typer.Exit:
    err.print(f"[red]refused:[/red] {what}:")
    for problem in exc.problems:
        err.print(f"  {problem}", markup=False, highlight=False)
    return typer.Exit(2)


def _read_json(path: Path | None, inline: str | None) -> Any:
    if (path is None) == (inline is None):
        raise _fail("give the definition with --file FILE or --json '{...}'")
    try:
        text = path.read_text(encoding="utf-8") if path is not None else str(inline)
        return json.loads(text)
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise _fail(f"not JSON: {exc}") from None


@flags_app.command("set")
def flags_set(
    key: Annotated[str, typer.Argument(help="The flag key")],
    env: Env,
    reason: Reason,
    file: Annotated[Path | None, typer.Option(help="A JSON file with the flagd flag")] = None,
    json_: Annotated[str | None, typer.Option("--json", help="The flagd flag, inline")] = None,
    by: By = "",
) -> None:
    """Create or replace a flag with a flagd definition (checked against the flagd schema)."""
    _change(env, key, "set", by, reason, definition=_read_json(file, json_))


@flags_app.command("enable")
def flags_enable(key: str, env: Env, reason: Reason, by: By = "") -> None:
    """Turn a flag on (state ENABLED)."""
    _change(env, key, "enable", by, reason)


@flags_app.command("disable")
def flags_disable(key: str, env: Env, reason: Reason, by: By = "") -> None:
    """Turn a flag off (state DISABLED: every client gets its own default): a kill switch."""
    _change(env, key, "disable", by, reason)


@flags_app.command("rollout")
def flags_rollout(
    key: str,
    env: Env,
    reason: Reason,
    to: Annotated[str, typer.Option(help="The variant to roll out (e.g. on)")],
    schedule: Annotated[
        str, typer.Option(help="Steps from now: '10%,25%@1h,50%@4h,100%@8h' (s, m, h, d)")
    ],
    by: By = "",
) -> None:
    """Roll a variant out gradually; the service makes each step when it is due, and halts
    the rollout when someone changes the flag or the service has an incident."""
    from services.flags.rollouts import ScheduleError, describe, parse_schedule

    try:
        steps = parse_schedule(schedule)
    except ScheduleError as exc:
        raise _fail(f"schedule: {exc}") from None
    out.print(f"rolling out {to!r} on {env}/{key}: {describe(steps)}", highlight=False)
    _change(env, key, "rollout", by, reason, variant=to, steps=steps)


@flags_app.command("halt")
def flags_halt(key: str, env: Env, reason: Reason, by: By = "") -> None:
    """Halt a flag's rollout where it stands."""
    _change(env, key, "halt-rollout", by, reason)


@flags_app.command("import")
def flags_import(
    file: Annotated[Path, typer.Argument(help="A flagd flag set (JSON)")],
    env: Env,
    reason: Reason,
    by: By = "",
) -> None:
    """Load a flagd flag set into an environment: its $evaluators, metadata and flags."""
    from services.flags.changes import ChangeRefused, import_flag_set
    from services.flags.definitions import SchemaMissing

    doc = _read_json(file, None)

    async def work(pool: asyncpg.Pool, settings: Settings, tracer: Tracer) -> int:
        made = await import_flag_set(
            pool, settings, env, doc, by=by or whoami(), reason=reason, source="cli",
            tracer=tracer,
        )  # fmt: skip
        return len(made)

    try:
        changed = _with_pool(traced("flags", work))
    except DefinitionError as exc:
        raise _refused(f"{file} is not a valid flag set", exc) from None
    except (ChangeRefused, SchemaMissing) as exc:
        raise _fail(str(exc)) from None
    out.print(f"{env}: {changed} flag(s) changed from {file}", highlight=False)


@flags_app.command("export")
def flags_export(
    env: Env,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout")] = None,
) -> None:
    """Write the environment's flags as a flagd flag set (flagd loads it unchanged)."""
    from services.flags.flag_sets import document

    async def work(pool: asyncpg.Pool, _settings: Settings) -> dict[str, Any]:
        async with pool.acquire() as conn:
            doc, _ = await document(conn, env)
        return doc

    text = json.dumps(_with_pool(work), indent=2) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote {out_file}", highlight=False)


@flags_app.command("list")
def flags_list(
    env: Annotated[str | None, typer.Option("--env", help="Only this environment")] = None,
) -> None:
    """Every flag: state, default, targeting, type, owner, version."""
    from services.flags import store

    async def work(pool: asyncpg.Pool, _settings: Settings) -> Any:
        async with pool.acquire() as conn:
            return await store.flags_of(conn, env), await store.active_rollouts(conn, env)

    flags, active = _with_pool(work)
    rolling = {(r.environment, r.flag_key): r for r in active}
    table = Table("environment", "flag", "state", "default", "targeting", "type", "owner", "v")
    for f in flags:
        d = f.definition
        meta = d.get("metadata") or {}
        targeting = "—"
        if d.get("targeting"):
            targeting = _rollout_label(d) or "rules"
            if (f.environment, f.key) in rolling:
                targeting += " (rolling out)"
        table.add_row(
            f.environment, f.key, d.get("state", ""), str(d.get("defaultVariant")), targeting,
            str(meta.get("type", "")), str(meta.get("owner", "")), str(f.version),
        )  # fmt: skip
    out.print(table if flags else "no flags yet")


def _rollout_label(definition: dict[str, Any]) -> str | None:
    buckets = (definition.get("targeting") or {}).get("fractional")
    if not isinstance(buckets, list):
        return None
    return " / ".join(f"{b[0]} {b[1]}%" for b in buckets if isinstance(b, list) and len(b) == 2)


@flags_app.command("show")
def flags_show(key: str, env: Env) -> None:
    """A flag's definition, its rollout, and its history (who, when, why)."""
    from services.flags import store

    async def work(pool: asyncpg.Pool, _settings: Settings) -> Any:
        async with pool.acquire() as conn:
            return (
                await store.get_flag(conn, env, key),
                await store.active_rollout(conn, env, key),
                await store.history(conn, env, key),
            )

    flag, rollout, history = _with_pool(work)
    if flag is None and not history:
        raise _fail(f"{env} has no flag {key!r}", code=1)
    if flag is not None:
        out.print_json(json.dumps(flag.definition))
    if rollout is not None:
        steps = ", ".join(f"{p}%@{s}s" for p, s in rollout.steps)
        out.print(
            f"rolling out {rollout.variant!r} since {rollout.started_at:%Y-%m-%d %H:%M:%SZ}: "
            f"{steps} (next step {rollout.next_step + 1})", highlight=False,
        )  # fmt: skip
    table = Table("v", "when", "action", "by", "via", "why")
    for h in history:
        table.add_row(str(h.version), f"{h.at.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}", h.action,
                      h.changed_by, h.source, h.reason)  # fmt: skip
    out.print(table)


_DURATION = re.compile(r"^(\d+)([smhd])$")


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise _fail(f"{text!r}: write a duration like 30m, 12h or 7d")
    return timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]])


@flags_app.command("stale")
def flags_stale(
    env: Annotated[str | None, typer.Option("--env", help="Only this environment")] = None,
    grace: Annotated[
        str, typer.Option(help="How long a new flag may go unevaluated (e.g. 1d)")
    ] = "1d",
) -> None:
    """Flags to remove: past their type's lifetime, fully rolled out, or never evaluated."""
    from services.flags import store
    from services.flags.stale import stale_flags

    grace_delta = _duration(grace)

    async def work(pool: asyncpg.Pool, _settings: Settings) -> Any:
        async with pool.acquire() as conn:
            flags = await store.flags_of(conn, env)
            finished = {
                (f.environment, f.key)
                for f in flags
                if await store.finished_rollout(conn, f.environment, f.key)
            }
            return flags, await store.last_evaluations(conn), finished

    flags, evaluated, finished = _with_pool(work)
    found = stale_flags(flags, evaluated, finished, datetime.now(UTC), grace_delta)
    table = Table("environment", "flag", "type", "owner", "why")
    for s in found:
        table.add_row(s.environment, s.key, s.type, s.owner, "; ".join(s.reasons))
    out.print(table if found else "no stale flags")


@keys_app.command("create")
def keys_create(
    env: Annotated[str, typer.Option("--env", help="The environment ('*' for admin keys)")],
    name: Annotated[str, typer.Option(help="Who or what uses the key")],
    role: Annotated[str, typer.Option(help="evaluate (OFREP) or admin (changes)")] = "evaluate",
) -> None:
    """Create an API key; it is shown once (only its sha256 is kept)."""
    from services.flags import keys

    async def work(pool: asyncpg.Pool, _settings: Settings) -> str:
        async with pool.acquire() as conn:
            return await keys.create(conn, env, role, name, datetime.now(UTC))

    try:
        key = _with_pool(work)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    err.print(f"{role} key for {env} ({name}); keep it now, it is not shown again:",
              highlight=False)  # fmt: skip
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """Keys by prefix, environment, role and name."""
    from services.flags import keys

    async def work(pool: asyncpg.Pool, _settings: Settings) -> Any:
        async with pool.acquire() as conn:
            return await keys.listed(conn)

    table = Table("prefix", "environment", "role", "name", "created", "revoked")
    for r in _with_pool(work):
        table.add_row(r["key_prefix"], r["environment"], r["role"], r["name"],
                      f"{r['created_at']:%Y-%m-%d}",
                      f"{r['revoked_at']:%Y-%m-%d}" if r["revoked_at"] else "")  # fmt: skip
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (keys list)")],
) -> None:
    """Revoke a key: refused within seconds by every instance."""
    from services.flags import keys

    async def work(pool: asyncpg.Pool, _settings: Settings) -> int:
        async with pool.acquire() as conn:
            return await keys.revoke(conn, prefix, datetime.now(UTC))

    if _with_pool(work) == 0:
        raise _fail(f"no active key with prefix {prefix!r}", code=1)
    out.print(f"revoked {prefix}")
