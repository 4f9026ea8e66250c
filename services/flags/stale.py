"""Which flags should go: past their type's expected lifetime, fully rolled out (the code
path is settled), or never evaluated by anyone since they were created."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.flags import taxonomy
from services.flags.store import StoredFlag


@dataclass(frozen=True)
class StaleFlag:
    environment: str
    key: str
    owner: str
    type: str
    reasons: list[str]


def _days(delta: timedelta) -> str:
    return f"{delta.days} d" if delta.days else f"{int(delta.total_seconds() // 3600)} h"


def fully_rolled_out(flag: StoredFlag, finished_rollout: bool) -> bool:
    """A rollout reached its last step, or every targeting key gets one variant."""
    targeting = flag.definition.get("targeting") or {}
    buckets = targeting.get("fractional") if isinstance(targeting, dict) else None
    if isinstance(buckets, list) and len(targeting) == 1:
        weighted = [b for b in buckets if isinstance(b, list) and b and [*b, 1][1] != 0]
        if len(weighted) == 1:
            return True
    return finished_rollout and not targeting


def stale_flags(
    flags: list[StoredFlag],
    last_evaluated: dict[tuple[str, str], datetime],
    finished_rollouts: set[tuple[str, str]],
    now: datetime,
    grace: timedelta,
) -> list[StaleFlag]:
    """``grace``: how long a new flag may go unevaluated before that counts against it."""
    found: list[StaleFlag] = []
    for flag in flags:
        metadata = flag.definition.get("metadata") or {}
        kind = taxonomy.of(metadata) if not taxonomy.problems(metadata) else None
        reasons: list[str] = []
        age = now - flag.created_at
        if kind is not None and kind.lifetime is not None and age > kind.lifetime:
            reasons.append(
                f"past the {_days(kind.lifetime)} a {kind.type} flag is expected to live "
                f"(created {_days(age)} ago)"
            )
        if fully_rolled_out(flag, (flag.environment, flag.key) in finished_rollouts):
            reasons.append("fully rolled out: one variant for everyone; remove the flag")
        if (flag.environment, flag.key) not in last_evaluated and age > grace:
            reasons.append(f"never evaluated in {_days(age)}")
        if reasons:
            found.append(
                StaleFlag(
                    environment=flag.environment,
                    key=flag.key,
                    owner=kind.owner if kind else "?",
                    type=kind.type if kind else "?",
                    reasons=reasons,
                )
            )
    return found
