"""Rollback criteria, evaluated signal by signal on the signals' own times (when each was
true, not when it arrived): a breach is acted on once more than ``tolerate`` checks have
failed and it has lasted ``hold``; a passing check ends it; it rolls back only ``within`` a
deployment."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from policy.model import RollbackCriterion, parse_duration

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Streak:
    started_at: datetime
    last_at: datetime
    failures: int = 1  # breaching checks in this breach


def limit(criterion: RollbackCriterion, baseline: float | None) -> float | None:
    """The value to compare with; None if it is relative and there is nothing to relate to."""
    if criterion.threshold is not None:
        return criterion.threshold
    if baseline is None or criterion.relative_to_previous is None:
        return None
    return criterion.relative_to_previous * baseline


def breaches(criterion: RollbackCriterion, value: float, baseline: float | None) -> bool | None:
    bound = limit(criterion, baseline)
    if bound is None:
        return None
    return _COMPARE[criterion.comparison](value, bound)


def step(
    criterion: RollbackCriterion, streak: Streak | None, breaching: bool, at: datetime
) -> tuple[Streak | None, bool]:
    """The breach after one check at ``at``, and whether it is now confirmed: more failed
    checks than ``tolerate``, over at least ``hold``. A passing check ends the breach (unless
    it was true before the breach's last failure: delivered late, it changes nothing)."""
    if not breaching:
        if streak is not None and at <= streak.last_at:
            return streak, False  # a late pass from before the breach's last failure
        return None, False
    if streak is None:
        current = Streak(at, at)
    else:
        current = Streak(min(at, streak.started_at), max(at, streak.last_at), streak.failures + 1)
    held = current.last_at - current.started_at >= parse_duration(criterion.hold)
    return current, held and current.failures > criterion.tolerate


def within_deploy(criterion: RollbackCriterion, deployed_at: datetime | None, at: datetime) -> bool:
    """Whether a breach at ``at`` falls in the criterion's window after the deployment."""
    if deployed_at is None:
        return False
    if criterion.within is None:
        return True
    return timedelta(0) <= at - deployed_at <= parse_duration(criterion.within)


def describe(criterion: RollbackCriterion, value: float, baseline: float | None) -> str:
    bound = limit(criterion, baseline)
    relative = (
        f" ({criterion.relative_to_previous:g} times the previous version's {baseline:g})"
        if criterion.relative_to_previous is not None and baseline is not None
        else ""
    )
    held = f" for {criterion.hold}" if parse_duration(criterion.hold) else ""
    return (
        f"{criterion.metric} {value:g} {criterion.comparison} {bound:g}{relative}{held} "
        f"({criterion.name})"
    )
