"""The frame of the latency benches (``artifacts_latency.py``, ``release_chain_latency.py``):
a fresh namespace with its topics, a Postgres commit probe, the Lockstep path measured at one
rate (or stepped up with ``--find-max``), the bare-Kafka floor at the same rate, and the
result file. A bench subclasses ``LatencyBench`` with its scenario: ``prepare``, ``lockstep``,
``floor`` and a ``table``."""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from events import topics
from harness.arrivals import Observer
from harness.load import WARNINGS, Item
from harness.machine import loadavg, machine_info, pg_commit_probe, postmaster_start
from harness.namespace import wait_for_leaders
from harness.report import failures
from harness.results import write_result
from harness.run import Run, guarded
from shared.bus.admin import ensure_topics, partitions_of

READY_TIMEOUT_S = 90.0  # a started process must answer its first event within this


class LatencyBench(Run):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("bench", child_spans=True, bench_spans=True)
        self.args = args
        self.artifacts: list[TopicPartition] = []  # the partitions of <ns>.artifacts

    async def prepare(self, result: dict[str, Any]) -> None:
        """After the topics and the commit probe, before anything is measured."""

    async def lockstep(self, *, find_max: bool) -> dict[str, Any]:
        raise NotImplementedError

    async def floor(self) -> dict[str, Any]:
        raise NotImplementedError

    async def measure(self) -> dict[str, Any]:
        settings, args = self.settings, self.args
        result: dict[str, Any] = {"namespace": self.ns}
        result["machine"] = await machine_info(settings)
        pg_started = await postmaster_start(settings)
        await ensure_topics(settings)
        self.artifacts = await partitions_of(settings, [settings.topic(topics.ARTIFACTS)])
        await wait_for_leaders(settings, settings.all_topics())
        result["postgres_commit_probe_ms"] = await pg_commit_probe(settings)
        await self.prepare(result)
        if args.find_max:
            result["find_max"] = await self.lockstep(find_max=True)
        else:
            result["lockstep"] = await self.lockstep(find_max=False)
            if not args.no_floor:
                result["floor"] = await self.floor()
                lp, fp = result["lockstep"]["figures"], result["floor"]["figures"]
                result["ratio_lockstep_over_floor"] = {
                    q: round(lp["latency_ms"][q] / fp["latency_ms"][q], 2)
                    if fp["latency_ms"][q]
                    else math.nan
                    for q in ("p50", "p99")
                }
        result["postgres_restarted"] = await postmaster_start(settings) != pg_started
        result["client_warning_sample"] = WARNINGS.sample
        return result

    async def observer(self, topic: str, match: Any) -> Observer:
        """An observer on every partition of the physical ``topic``, closed at clean-up."""
        parts = await partitions_of(self.settings, [topic])
        observer = Observer(self.settings, parts, match)
        await observer.start()
        self.closing(observer.stop)
        return observer

    async def probe(
        self, make_item: Callable[[], Item], observer: Observer, alive: Callable[[], None]
    ) -> float:
        """One event through the path; returns how long the first answer took (start-up)."""
        t0 = time.perf_counter()
        event_id, send = make_item()
        await asyncio.wait_for(send(), 30)
        missing = await observer.wait_for([event_id], READY_TIMEOUT_S, alive)
        if missing:
            raise RuntimeError(f"no answer to the warm-up event within {READY_TIMEOUT_S:.0f}s")
        return round(time.perf_counter() - t0, 3)


async def run_latency_bench(
    name: str, bench: LatencyBench, table: Callable[[dict[str, Any]], str]
) -> int:
    """Measure, clean up, write ``bench/results/<name>-<stamp>.json`` (or ``--out``), print the
    table and every problem; exit status 0 only without problems."""
    args = bench.args
    result, error = await guarded(
        bench, bench.measure, timeout_s=args.timeout, keep_temp=args.keep_temp
    )
    if error is not None or result is None:
        return 1
    result["machine"]["loadavg_at_end"] = loadavg()
    result["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["cleanup_errors"] = bench.errors
    problems = failures(result) + [f"clean-up: {m}" for m in bench.errors]
    result["problems"] = problems
    out = write_result(name, result, args.out)
    print(table(result))
    print(f"\nresult written to {out}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0
