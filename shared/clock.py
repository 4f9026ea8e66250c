"""Time, passed in. Services read the time from a clock they are given, so tests of
windows and soak times move the clock instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class FileClock:
    """The time written in a file (ISO 8601 with a zone), read at each call: lets a test move
    the clock of services running as other processes. For tests and demos only."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self) -> datetime:
        moment = datetime.fromisoformat(self._path.read_text(encoding="utf-8").strip())
        if moment.tzinfo is None:
            raise ValueError(
                f"{self._path}: the time must carry its zone, e.g. 2026-12-22T10:00+01:00"
            )
        return moment


class ManualClock:
    """A clock that stands still until moved (for tests, and for testing your own agents)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a clock's time carries its zone")
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def advance(self, by: timedelta) -> datetime:
        self._now += by
        return self._now

    def set(self, to: datetime) -> None:
        self._now = to
