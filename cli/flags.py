"""``lockstep flags``: define, change, roll out, export and review feature flags.

Everything goes through the flags service's public face (``services.flags.api``): changes
through the same code as the admin API and Kafka requests (one transaction: the new version,
its history row, and ``flag.changed`` in the flags service's outbox, which the running
service publishes)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from cli.root import Root, of
from cli.signing import acting_person
from events.flags import ChangeAction
from services.flags.api import DefinitionError, Flags, open_flags

flags_app = typer.Typer(help="Feature flags (flagd-compatible, served over OFREP).",
                        no_args_is_help=True)  # fmt: skip
keys_app = typer.Typer(help="API keys for OFREP evaluation and the admin API.",
                       no_args_is_help=True)  # fmt: skip
flags_app.add_typer(keys_app, name="keys")

T = TypeVar("T")

Env = Annotated[str, typer.Option("--env", help="The environment (e.g. prod-eu)")]
By = Annotated[
    str, typer.Option(help="Who makes the change: you, as your person key says (default)")
]
Reason = Annotated[str, typer.Option(help="Why (kept in the flag's history)")]


def _with_flags(root: Root, work: Callable[[Flags], Awaitable[T]], *, traced: bool = False) -> T:
    """``work`` on the flags service (its changes traced as ``flags-cli`` if ``traced``)."""

    async def go() -> T:
        if not traced:
            async with open_flags(root.settings) as flags:
                return await work(flags)
        async with root.tracer("flags") as tracer, open_flags(root.settings, tracer=tracer) as f:
            return await work(f)

    return root.on_postgres(go())


def _change(
    root: Root,
    env: str,
    key: str,
    action: ChangeAction,
    by: str,
    reason: str,
    **extra: Any,
) -> None:
    from services.flags.api import Change, ChangeRefused, SchemaMissing, UnknownFlag

    change = Change(env, key, action, acting_person(root, by), reason, "cli", **extra)
    try:
        event = _with_flags(root, lambda flags: flags.apply(change), traced=True)
    except DefinitionError as exc:
        raise _refused(root, f"{env}/{key} is not a valid flag", exc) from None
    except (UnknownFlag, ChangeRefused, SchemaMissing) as exc:
        raise root.fail(str(exc.args[0]) if exc.args else str(exc)) from None
    if event is None:
        root.out.print(f"{env}/{key}: nothing to change", highlight=False)
        return
    c = event.subject.content
    root.out.print(f"{env}/{key} is now version {c.version} ({c.action} by {c.changed_by})",
                   highlight=False)  # fmt: skip


def _refused(root: Root, what: str, exc: DefinitionError) -> typer.Exit:
    root.err.print(f"[red]refused:[/red] {what}:")
    for problem in exc.problems:
        root.err.print(f"  {problem}", markup=False, highlight=False)
    return typer.Exit(2)


def _read_json(root: Root, path: Path | None, inline: str | None) -> Any:
    if (path is None) == (inline is None):
        raise root.fail("give the definition with --file FILE or --json '{...}'")
    try:
        text = path.read_text(encoding="utf-8") if path is not None else str(inline)
        return json.loads(text)
    except OSError as exc:
        raise root.fail(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise root.fail(f"not JSON: {exc}") from None


@flags_app.command("set")
def flags_set(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The flag key")],
    env: Env,
    reason: Reason,
    file: Annotated[Path | None, typer.Option(help="A JSON file with the flagd flag")] = None,
    json_: Annotated[str | None, typer.Option("--json", help="The flagd flag, inline")] = None,
    by: By = "",
) -> None:
    """Create or replace a flag with a flagd definition (checked against the flagd schema)."""
    root = of(ctx)
    _change(root, env, key, "set", by, reason, definition=_read_json(root, file, json_))


@flags_app.command("enable")
def flags_enable(ctx: typer.Context, key: str, env: Env, reason: Reason, by: By = "") -> None:
    """Turn a flag on (state ENABLED)."""
    _change(of(ctx), env, key, "enable", by, reason)


@flags_app.command("disable")
def flags_disable(ctx: typer.Context, key: str, env: Env, reason: Reason, by: By = "") -> None:
    """Turn a flag off (state DISABLED: every client gets its own default): a kill switch."""
    _change(of(ctx), env, key, "disable", by, reason)


@flags_app.command("rollout")
def flags_rollout(
    ctx: typer.Context,
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
    from services.flags.api import ScheduleError, describe_schedule, parse_schedule

    root = of(ctx)
    try:
        steps = parse_schedule(schedule)
    except ScheduleError as exc:
        raise root.fail(f"schedule: {exc}") from None
    root.out.print(f"rolling out {to!r} on {env}/{key}: {describe_schedule(steps)}",
                   highlight=False)  # fmt: skip
    _change(root, env, key, "rollout", by, reason, variant=to, steps=steps)


@flags_app.command("halt")
def flags_halt(ctx: typer.Context, key: str, env: Env, reason: Reason, by: By = "") -> None:
    """Halt a flag's rollout where it stands."""
    _change(of(ctx), env, key, "halt-rollout", by, reason)


@flags_app.command("import")
def flags_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A flagd flag set (JSON)")],
    env: Env,
    reason: Reason,
    by: By = "",
) -> None:
    """Load a flagd flag set into an environment: its $evaluators, metadata and flags."""
    from services.flags.api import ChangeRefused, SchemaMissing

    root = of(ctx)
    doc = _read_json(root, file, None)
    who = acting_person(root, by)

    async def work(flags: Flags) -> int:
        made = await flags.import_flag_set(env, doc, by=who, reason=reason)
        return len(made)

    try:
        changed = _with_flags(root, work, traced=True)
    except DefinitionError as exc:
        raise _refused(root, f"{file} is not a valid flag set", exc) from None
    except (ChangeRefused, SchemaMissing) as exc:
        raise root.fail(str(exc)) from None
    root.out.print(f"{env}: {changed} flag(s) changed from {file}", highlight=False)


@flags_app.command("export")
def flags_export(
    ctx: typer.Context,
    env: Env,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout")] = None,
) -> None:
    """Write the environment's flags as a flagd flag set (flagd loads it unchanged)."""
    root = of(ctx)
    text = json.dumps(_with_flags(root, lambda flags: flags.export(env)), indent=2) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        root.err.print(f"wrote {out_file}", highlight=False)


@flags_app.command("list")
def flags_list(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment")] = None,
) -> None:
    """Every flag: state, default, targeting, type, owner, version."""
    root = of(ctx)

    async def work(flags: Flags) -> Any:
        return await flags.listed(env), await flags.active_rollouts(env)

    found, active = _with_flags(root, work)
    rolling = {(r.environment, r.flag_key): r for r in active}
    table = Table("environment", "flag", "state", "default", "targeting", "type", "owner", "v")
    for f in found:
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
    root.out.print(table if found else "no flags yet")


def _rollout_label(definition: dict[str, Any]) -> str | None:
    buckets = (definition.get("targeting") or {}).get("fractional")
    if not isinstance(buckets, list):
        return None
    return " / ".join(f"{b[0]} {b[1]}%" for b in buckets if isinstance(b, list) and len(b) == 2)


@flags_app.command("show")
def flags_show(ctx: typer.Context, key: str, env: Env) -> None:
    """A flag's definition, its rollout, and its history (who, when, why)."""
    root = of(ctx)
    detail = _with_flags(root, lambda flags: flags.show(env, key))
    flag, rollout, history = detail.flag, detail.rollout, detail.history
    if flag is None and not history:
        raise root.fail(f"{env} has no flag {key!r}", code=1)
    if flag is not None:
        root.out.print_json(json.dumps(flag.definition))
    if rollout is not None:
        steps = ", ".join(f"{p}%@{s}s" for p, s in rollout.steps)
        root.out.print(
            f"rolling out {rollout.variant!r} since {rollout.started_at:%Y-%m-%d %H:%M:%SZ}: "
            f"{steps} (next step {rollout.next_step + 1})", highlight=False,
        )  # fmt: skip
    table = Table("v", "when", "action", "by", "via", "why")
    for h in history:
        table.add_row(str(h.version), f"{h.at.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}", h.action,
                      h.changed_by, h.source, h.reason)  # fmt: skip
    root.out.print(table)


_DURATION = re.compile(r"^(\d+)([smhd])$")


def _duration(root: Root, text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise root.fail(f"{text!r}: write a duration like 30m, 12h or 7d")
    return timedelta(seconds=int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]])


@flags_app.command("stale")
def flags_stale(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment")] = None,
    grace: Annotated[
        str, typer.Option(help="How long a new flag may go unevaluated (e.g. 1d)")
    ] = "1d",
) -> None:
    """Flags to remove: past their type's lifetime, fully rolled out, or never evaluated."""
    root = of(ctx)
    grace_delta = _duration(root, grace)
    found = _with_flags(root, lambda flags: flags.stale(env, grace_delta))
    table = Table("environment", "flag", "type", "owner", "why")
    for s in found:
        table.add_row(s.environment, s.key, s.type, s.owner, "; ".join(s.reasons))
    root.out.print(table if found else "no stale flags")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", help="The environment ('*' for admin keys)")],
    name: Annotated[str, typer.Option(help="Who or what uses the key")],
    role: Annotated[str, typer.Option(help="evaluate (OFREP) or admin (changes)")] = "evaluate",
) -> None:
    """Create an API key; it is shown once (only its sha256 is kept)."""
    root = of(ctx)
    try:
        key = _with_flags(root, lambda flags: flags.create_key(env, role, name))
    except ValueError as exc:
        raise root.fail(str(exc)) from None
    root.err.print(f"{role} key for {env} ({name}); keep it now, it is not shown again:",
                   highlight=False)  # fmt: skip
    print(key)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Keys by prefix, environment, role and name."""
    root = of(ctx)
    table = Table("prefix", "environment", "role", "name", "created", "revoked")
    for k in _with_flags(root, lambda flags: flags.keys()):
        table.add_row(k.prefix, k.environment, k.role, k.name, f"{k.created_at:%Y-%m-%d}",
                      f"{k.revoked_at:%Y-%m-%d}" if k.revoked_at else "")  # fmt: skip
    root.out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="The key's prefix (keys list)")],
) -> None:
    """Revoke a key: refused within seconds by every instance."""
    root = of(ctx)
    if _with_flags(root, lambda flags: flags.revoke_key(prefix)) == 0:
        raise root.fail(f"no active key with prefix {prefix!r}", code=1)
    root.out.print(f"revoked {prefix}")
