"""Rollout schedules, the definitions each step writes, and the stale-flag report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.flags.rollouts import (
    RolloutRefused,
    ScheduleError,
    Step,
    at_percent,
    other_variant,
    parse_schedule,
)
from services.flags.stale import stale_flags
from services.flags.store import StoredFlag

H = timedelta(hours=1)


def test_the_issue_schedule_reads_as_written() -> None:
    assert parse_schedule("10%, 25%@1h, 50%@4h, 100%@8h") == [
        Step(10, timedelta(0)),
        Step(25, H),
        Step(50, 4 * H),
        Step(100, 8 * H),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10,20%@1h", "write PERCENT%"),
        ("10%,25%", "say when"),
        ("10%,5%@1h", "does not rise"),
        ("10%,20%@2h,30%@1h", "is not later"),
        ("0%", "between 1% and 100%"),
        ("10%,150%@1h", "between 1% and 100%"),
        ("10%@1x", "write PERCENT%"),
    ],
)
def test_bad_schedules_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        parse_schedule(text)


FLAG: dict[str, Any] = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "metadata": {"type": "release", "owner": "payments"},
}


def test_each_step_is_a_fractional_split_and_the_last_makes_it_the_default() -> None:
    assert other_variant(FLAG, "on") == "off"
    ten = at_percent(FLAG, "on", "off", 10)
    assert ten["targeting"] == {"fractional": [["on", 10], ["off", 90]]}
    assert other_variant(ten, "on") == "off"  # a rollout may continue its own split
    done = at_percent(ten, "on", "off", 100)
    assert done["defaultVariant"] == "on" and "targeting" not in done
    assert FLAG["defaultVariant"] == "off"  # the input is not changed


def test_a_rollout_refuses_what_it_would_destroy_or_cannot_split() -> None:
    with pytest.raises(RolloutRefused, match="not one of"):
        other_variant(FLAG, "maybe")
    with pytest.raises(RolloutRefused, match="default variant is 'off'"):
        other_variant(FLAG, "off")
    ruled = {**FLAG, "targeting": {"if": [{"var": "beta"}, "on", "off"]}}
    with pytest.raises(RolloutRefused, match="targeting of its own"):
        other_variant(ruled, "on")


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def stored(key: str, definition: dict[str, Any], age: timedelta) -> StoredFlag:
    return StoredFlag("prod-eu", key, 1, definition, NOW - age, NOW - age, "alice")


def test_stale_flags_are_past_lifetime_fully_rolled_out_or_never_evaluated() -> None:
    release_old = stored("old-release", FLAG, timedelta(days=45))
    kill = stored(
        "kill", {**FLAG, "metadata": {"type": "kill-switch", "owner": "sre"}}, timedelta(days=400)
    )
    split_all = stored(
        "all-on", {**FLAG, "targeting": {"fractional": [["on", 100], ["off", 0]]}}, H
    )
    rolled = stored("rolled", {**FLAG, "defaultVariant": "on"}, 2 * H)
    fresh = stored("fresh", FLAG, timedelta(minutes=5))
    evaluated = {("prod-eu", k.key): NOW for k in (release_old, kill, split_all, rolled)}
    found = {
        s.key: s.reasons
        for s in stale_flags(
            [release_old, kill, split_all, rolled, fresh],
            evaluated,
            {("prod-eu", "rolled")},
            NOW,
            grace=timedelta(days=1),
        )
    }
    assert set(found) == {"old-release", "all-on", "rolled"}
    assert found["old-release"] == [
        "past the 30 d a release flag is expected to live (created 45 d ago)"
    ]
    assert "fully rolled out" in found["all-on"][0]
    assert "fully rolled out" in found["rolled"][0]
    never = stale_flags([fresh], {}, set(), NOW + timedelta(days=2), grace=timedelta(days=1))
    assert never[0].reasons == ["never evaluated in 2 d"]


def test_a_step_beyond_a_year_is_refused() -> None:
    with pytest.raises(ScheduleError, match="within 365 days"):
        parse_schedule("10%,50%@3000000d")
    with pytest.raises(ScheduleError, match="write PERCENT"):
        parse_schedule("10%,50%@99999999999d")
