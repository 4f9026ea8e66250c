"""CPU used over a phase: one process (from /proc/<pid>/stat), the bench itself, the machine."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall: float
    worker_s: float  # CPU seconds of the service (or hop) process so far
    bench_s: float  # CPU seconds of this process so far
    machine_busy: int  # /proc/stat ticks, all CPUs, not idle
    machine_total: int


def cpu_sample(pid: int | None) -> CpuSample:
    tick = os.sysconf("SC_CLK_TCK")
    worker = math.nan
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        worker = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    busy = total = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        total = sum(ticks[:8])
        busy = total - ticks[3] - ticks[4]  # minus idle and iowait
    t = os.times()
    return CpuSample(time.monotonic(), worker, t.user + t.system, busy, total)


def cpu_figures(a: CpuSample, b: CpuSample, events: int) -> dict[str, float]:
    """CPU over the whole phase (warm-up, measured, drain): 100 % = one core."""
    wall = b.wall - a.wall
    cores = os.cpu_count() or 1
    worker = b.worker_s - a.worker_s
    total = b.machine_total - a.machine_total
    return {
        "worker_percent": round(100 * worker / wall, 1),
        "worker_ms_per_event": round(1000 * worker / events, 3),
        "bench_percent": round(100 * (b.bench_s - a.bench_s) / wall, 1),
        "machine_busy_percent_of_all_cores": round(
            100 * (b.machine_busy - a.machine_busy) / total, 1
        )
        if total
        else math.nan,
        "cores": cores,
    }
