"""The Lockstep processes under a supervisor: ``kill`` sends SIGKILL on purpose; anything that
exits is started again; an exit nobody asked for is a crash, and ``CRASH_LOOP`` crashes of one
process make a crash loop (the run fails)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import REPO

CRASH_LOOP = 3  # unasked exits of one process
GRACE_S = 20.0  # after an outage ends, exits still count as during it


@dataclass
class Crash:
    process: str
    exit_code: int | None
    at_s: float
    log_tail: str
    during_outage: bool  # Kafka or Postgres down on purpose (or back less than GRACE_S ago)


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    kills: int = 0
    crashes: list[Crash] = field(default_factory=list)
    starts: int = 0
    _killing: bool = False

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        self._killing = False

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervisor:
    def __init__(self, t0: float) -> None:
        self.procs: list[Proc] = []
        self._t0 = t0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.outages: list[list[float]] = []  # [start, end] (monotonic); end inf while down

    def outage_begin(self) -> None:
        self.outages.append([time.monotonic(), float("inf")])

    def outage_end(self) -> None:
        if self.outages:
            self.outages[-1][1] = time.monotonic()

    def _in_outage(self, at: float) -> bool:
        return any(start <= at <= end + GRACE_S for start, end in self.outages)

    def add(self, name: str, args: list[str], env: dict[str, str], log: Path) -> Proc:
        proc = Proc(name, [sys.executable, "-P", "-m", "cli", *args], env, log)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        for proc in self.procs:
            proc.start()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while not self._stopping:
            for proc in self.procs:
                if proc.popen is None or proc.popen.poll() is None:
                    continue
                code = proc.popen.returncode
                if not proc._killing:
                    now = time.monotonic()
                    proc.crashes.append(
                        Crash(proc.name, code, round(now - self._t0, 1), proc.tail(),
                              self._in_outage(now))
                    )  # fmt: skip
                    await asyncio.sleep(1.0)  # a crash loop must not spin
                if not self._stopping:
                    proc.start()
            await asyncio.sleep(0.3)

    def kill(self, proc: Proc) -> None:
        if proc.popen is not None and proc.popen.poll() is None:
            proc._killing = True
            proc.kills += 1
            os.killpg(proc.popen.pid, signal.SIGKILL)

    def kill_random(self, rng: random.Random) -> Proc:
        proc = rng.choice(self.procs)
        self.kill(proc)
        return proc

    def crash_loops(self) -> list[str]:
        return [
            p.name for p in self.procs if sum(not c.during_outage for c in p.crashes) >= CRASH_LOOP
        ]

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM each (SIGKILL after 30 s); the exit code of each."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        codes: dict[str, int | None] = {}
        for proc in self.procs:
            if proc.popen is None:
                continue
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc.popen is None:
                continue
            try:
                await asyncio.to_thread(proc.popen.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.popen.wait, 10)
            codes[proc.name] = proc.popen.returncode
        return codes

    def figures(self) -> dict[str, Any]:
        return {
            p.name: {
                "starts": p.starts,
                "killed": p.kills,
                "crashes": [
                    {
                        "exit_code": c.exit_code,
                        "at_s": c.at_s,
                        "during_outage": c.during_outage,
                        "error": _last_error(c.log_tail),
                        "log_tail": c.log_tail,
                    }
                    for c in p.crashes
                ],
            }
            for p in self.procs
        }


def _last_error(tail: str) -> str:
    """The last line that names an exception (the crash's reason), or the last line."""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:300]
    return lines[-1][:300] if lines else ""
