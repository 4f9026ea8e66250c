"""Open-loop load and one measured phase: send *i* starts at ``t0 + i/rate`` whatever the
earlier sends are doing, so a slow system builds a queue instead of slowing the load down."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import murmur2

from harness.arrivals import Observer
from harness.cpu import cpu_figures, cpu_sample
from harness.report import say, step_line
from harness.stats import pct, summary_ms

KEEP_UP_SHARE = 0.95  # --find-max: throughput must be >= 95 % of the offered rate
KEEP_UP_P99_MS = 100.0  # ... and p99 latency under 100 ms
Item = tuple[str, Callable[[], Awaitable[Any]]]  # (event id, coroutine factory that sends it)


class WarningCounter(logging.Handler):
    """Counts client-library warnings (reconnects, leader changes): a phase that saw any ran on
    a disturbed broker, and its figures say so."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.sample: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.sample) < 5:
            self.sample.append(f"{record.name}: {record.getMessage()}"[:200])


WARNINGS = WarningCounter()


def service_names(partitions: int, per_partition: int = 2) -> list[str]:
    """Service names whose keys land ``per_partition`` on each partition (Kafka's murmur2),
    interleaved so consecutive events go to different partitions."""
    buckets: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for i in range(100_000):
        if all(len(b) >= per_partition for b in buckets.values()):
            break
        name = f"bench-svc-{i:03d}"
        p = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if len(buckets[p]) < per_partition:
            buckets[p].append(name)
    return [buckets[p][k] for k in range(per_partition) for p in range(partitions)]


@dataclass(slots=True)
class Sent:
    due: float  # scheduled send time (perf_counter)
    start: float | None = None  # publish call start (perf_counter)
    start_wall_ns: int = 0
    acked: float | None = None
    error: str | None = None


async def send_open_loop(
    items: Sequence[Item], rate: float, start_at: float, timeout_s: float
) -> dict[str, Sent]:
    """Start send i at ``start_at + i / rate`` whatever the earlier sends are doing."""
    sent: dict[str, Sent] = {}
    tasks: list[asyncio.Task[None]] = []

    async def one(s: Sent, send: Callable[[], Awaitable[Any]]) -> None:
        s.start, s.start_wall_ns = time.perf_counter(), time.time_ns()
        try:
            await send()
            s.acked = time.perf_counter()
        except Exception as exc:
            s.error = f"{type(exc).__name__}: {exc}"

    for i, (event_id, send) in enumerate(items):
        due = start_at + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        s = Sent(due=due)
        sent[event_id] = s
        tasks.append(asyncio.create_task(one(s, send)))
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return sent


@dataclass
class Phase:
    path: str  # "lockstep" or "floor"
    rate: float
    warmup_s: float
    seconds: float
    ids: list[str]
    n_warm: int
    sent: dict[str, Sent]
    window: tuple[float, float]
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> list[str]:
        return self.ids[self.n_warm :]


async def run_phase(
    path: str,
    *,
    rate: float,
    warmup_s: float,
    seconds: float,
    make_item: Callable[[], Item],
    observer: Observer,
    drain_timeout_s: float,
    alive: Callable[[], None],
    worker_pid: int | None = None,
) -> Phase:
    """``warmup_s`` then ``seconds`` of load at ``rate``; then wait for stragglers."""
    n_warm = round(rate * warmup_s)
    n_meas = max(2, round(rate * seconds))
    items = [make_item() for _ in range(n_warm + n_meas)]
    warnings_before = WARNINGS.count
    cpu_before = cpu_sample(worker_pid)
    start_at = time.perf_counter() + 0.2
    window = (start_at + n_warm / rate, start_at + (n_warm + n_meas) / rate)
    sent = await send_open_loop(items, rate, start_at, timeout_s=(n_warm + n_meas) / rate + 60)
    ids = [event_id for event_id, _ in items]
    await observer.wait_for(ids, drain_timeout_s, alive)
    phase = Phase(path, rate, warmup_s, seconds, ids, n_warm, sent, window)
    phase.figures = figures(phase, observer)
    phase.figures["client_warnings"] = WARNINGS.count - warnings_before
    phase.figures["cpu"] = cpu_figures(cpu_before, cpu_sample(worker_pid), len(ids))
    return phase


def figures(phase: Phase, observer: Observer) -> dict[str, Any]:
    seen, sent = observer.seen, phase.sent
    measured = phase.measured
    # publish call start of each measured event that was sent without error
    start = {i: s.start for i in measured if (s := sent[i]).start is not None and s.error is None}
    arrived = [i for i in start if i in seen]
    latencies = [(seen[i].perf - start[i]) * 1000 for i in arrived]
    acked = [(a - start[i]) * 1000 for i in start if (a := sent[i].acked) is not None]
    lags = [(start[i] - sent[i].due) * 1000 for i in start]
    starts = sorted(start.values())
    w0, w1 = phase.window
    in_window = sum(1 for i in phase.ids if i in seen and w0 <= seen[i].perf < w1)
    last = max((seen[i].perf for i in arrived), default=math.nan)
    last_due = w1 - 1 / phase.rate  # the last scheduled send
    return {
        "events": len(measured),
        "send_errors": len(measured) - len(start),
        "send_error_sample": [sent[i].error for i in measured if sent[i].error][:3],
        "lost": len(start) - len(arrived),
        "latency_ms": summary_ms(latencies),
        "publish_ack_ms": summary_ms(acked),
        "offered_rate": phase.rate,
        "achieved_publish_rate": round((len(starts) - 1) / (starts[-1] - starts[0]), 1)
        if len(starts) > 1 and starts[-1] > starts[0]
        else math.nan,
        "send_lag_ms": {"p50": round(pct(lags, 50), 3), "max": round(max(lags, default=0), 3)},
        "throughput_per_s": round(in_window / (w1 - w0), 1),
        "drain_after_last_send_ms": round((last - last_due) * 1000, 1),
        "partitions_used": len({seen[i].partition for i in arrived}),
    }


async def step_up(
    rates: Sequence[float],
    run_step: Callable[[float], Awaitable[dict[str, Any]]],
    announce: Callable[[float], str],
    p99_limit_ms: float = KEEP_UP_P99_MS,
) -> list[dict[str, Any]]:
    """``--find-max``: one phase per rate, going on while throughput keeps up (even after p99
    has gone over ``p99_limit_ms``), stopping at the first step where it falls behind."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        say(announce(rate))
        f = await run_step(rate)
        f["throughput_kept"] = (
            f["lost"] == 0
            and f["send_errors"] == 0
            and f["throughput_per_s"] >= KEEP_UP_SHARE * rate
        )
        f["keeps_up"] = f["throughput_kept"] and f["latency_ms"]["p99"] < p99_limit_ms
        steps.append(f)
        say(step_line(f))
        if not f["throughput_kept"]:
            break  # saturated: the backlog only grows from here
    return steps


def find_max_summary(steps: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    """The highest rate such that it and every lower step kept up, and the ceiling."""
    sustained = 0.0
    for f in steps:
        if not f["keeps_up"]:
            break
        sustained = f["offered_rate"]
    return {
        "steps": steps,
        "sustained_releases_per_s": sustained,
        "max_registered_per_s": max(f["throughput_per_s"] for f in steps),
        "criterion": criterion,
    }
