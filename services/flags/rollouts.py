"""Gradual rollouts: "10 % now, 25 % after 1 h, 50 % after 4 h, then 100 %", written
``10%,25%@1h,50%@4h,100%@8h`` (offsets from the start). Each step sets the flag's targeting
to a ``fractional`` split of the rolled-out variant against the flag's default; 100 % makes
the variant the default and drops the targeting. Buckets are walked in order, so everyone
who had the variant at 10 % still has it at 25 %."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

_STEP_RE = re.compile(
    r"^\s*(?P<pct>\d{1,3})\s*%\s*(?:@\s*(?P<after>\d{1,9})\s*(?P<unit>[smhd]))?\s*$"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_OFFSET_S = 365 * 86400


class ScheduleError(ValueError):
    pass


class RolloutRefused(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    percent: int
    after: timedelta  # from the rollout's start

    def to_json(self) -> list[int]:
        return [self.percent, int(self.after.total_seconds())]

    @classmethod
    def from_json(cls, raw: list[int]) -> Step:
        return cls(int(raw[0]), timedelta(seconds=int(raw[1])))


def parse_schedule(text: str) -> list[Step]:
    """``10%,25%@1h,50%@4h,100%@8h`` -> steps; percents and offsets must both rise."""
    steps: list[Step] = []
    for i, part in enumerate(text.split(",")):
        match = _STEP_RE.match(part)
        if match is None:
            raise ScheduleError(
                f"step {i + 1} {part.strip()!r}: write PERCENT% or PERCENT%@AFTER, e.g. 25%@1h "
                "(units s, m, h, d; offsets from the start)"
            )
        percent = int(match["pct"])
        if not 1 <= percent <= 100:
            raise ScheduleError(f"step {i + 1}: {percent}% is not between 1% and 100%")
        if match["after"] is None and i > 0:
            raise ScheduleError(f"step {i + 1} {part.strip()!r}: say when, e.g. {percent}%@4h")
        seconds = int(match["after"] or 0) * _UNITS[match["unit"] or "s"]
        if seconds > MAX_OFFSET_S:
            raise ScheduleError(f"step {i + 1}: a rollout's steps come within 365 days")
        after = timedelta(seconds=seconds)
        if steps and percent <= steps[-1].percent:
            raise ScheduleError(f"step {i + 1}: {percent}% does not rise above the step before")
        if steps and after <= steps[-1].after:
            raise ScheduleError(f"step {i + 1}: @{match['after']}{match['unit']} is not later")
        steps.append(Step(percent, after))
    return steps


def describe(steps: list[Step]) -> str:
    return ", ".join(
        f"{s.percent}%" + (f" after {_human(s.after)}" if s.after else " now") for s in steps
    )


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def other_variant(definition: dict[str, Any], variant: str) -> str:
    """Who does not get ``variant``: the flag's default. Refuses what a rollout cannot split."""
    variants = definition.get("variants") or {}
    if variant not in variants:
        raise RolloutRefused(
            f"variant {variant!r} is not one of the flag's ({', '.join(map(repr, variants))})"
        )
    default = definition.get("defaultVariant")
    if default is None or default == variant:
        raise RolloutRefused(
            f"the default variant is {default!r}: a rollout moves traffic from the default to "
            "another variant; set the default to the variant users get today"
        )
    targeting = definition.get("targeting") or {}
    if targeting and not _is_rollout(targeting, variant, default):
        raise RolloutRefused(
            "the flag has targeting of its own, which a rollout would replace; remove it "
            "first (lockstep flags set) or roll out a flag without targeting"
        )
    return str(default)


def _is_rollout(targeting: Any, variant: str, other: str) -> bool:
    buckets = targeting.get("fractional") if isinstance(targeting, dict) else None
    return (
        isinstance(buckets, list)
        and len(targeting) == 1
        and [b[0] for b in buckets if isinstance(b, list) and b] == [variant, other]
    )


def at_percent(
    definition: dict[str, Any], variant: str, other: str, percent: int
) -> dict[str, Any]:
    """The flag with ``percent`` % of targeting keys on ``variant``, the rest on ``other``."""
    changed = copy.deepcopy(definition)
    if percent >= 100:
        changed["defaultVariant"] = variant
        changed.pop("targeting", None)
    else:
        changed["defaultVariant"] = other
        changed["targeting"] = {"fractional": [[variant, percent], [other, 100 - percent]]}
    return changed
