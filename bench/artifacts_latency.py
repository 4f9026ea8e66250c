"""End-to-end latency and throughput of the artifacts service, against a bare-Kafka floor.

    .venv/bin/python bench/artifacts_latency.py [--rate 200] [--seconds 20] [--warmup 3]
                                                 [--out PATH]
    .venv/bin/python bench/artifacts_latency.py --find-max [--steps 100,200,400,800,1600]

Lockstep path: a CI-like publisher (``shared.bus.Publisher``) sends ``artifact.packaged`` at a
steady, scheduled rate to ``<ns>.artifacts``; the artifacts service runs as its own process
(``python -m cli run artifacts``) and registers each build in Postgres (inbox,
tables, outbox, one transaction per partition batch); its outbox relay publishes
``artifact.published`` back to ``<ns>.artifacts``, where an observer consumer reads it. The
latency of one event is publish call start -> its ``artifact.published`` consumed (matched by
``customData.packagedEventId``). Two Kafka hops.

Floor: the same number of records (the same encoded events, so the same size) at the same rate,
through a bare aiokafka chain with the same two hops: producer -> topic A -> a "hop" process
(consume, produce to B, commit; what the service does minus Postgres) -> topic B -> observer.

Everything lives in a fresh namespace (``bench_<hex>``): its topics, consumer groups and
Postgres schemas are removed at the end, also on failure. The frame (load, observers, floor,
clean-up, result file) is ``bench/harness``'s; this file is the scenario. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import harness  # noqa: F401 - first: it puts the repository on sys.path
from harness.arrivals import Observer, header
from harness.floor import Floor
from harness.latency import LatencyBench, run_latency_bench
from harness.load import (
    KEEP_UP_P99_MS,
    KEEP_UP_SHARE,
    Item,
    Phase,
    find_max_summary,
    run_phase,
    service_names,
    step_up,
)
from harness.report import grid, say
from harness.run import main as run_main
from harness.stats import p50_p99

from events import ArtifactPackaged, ArtifactPublished, ArtifactRejected, decode, topics
from shared.bus import Publisher
from shared.bus.consumer import record_from_kafka
from shared.telemetry import read_spans

# --- the events --------------------------------------------------------------------------------


class EventFactory:
    """Unique (service, version) per event, over several service names."""

    def __init__(self, namespace: str, services: list[str]) -> None:
        self._namespace = namespace
        self._services = services
        self._seq = 0

    def next(self) -> ArtifactPackaged:
        self._seq += 1
        seed = f"{self._namespace}/{self._seq}"
        return ArtifactPackaged.build(
            service=self._services[self._seq % len(self._services)],
            version=f"1.{self._seq}.0",
            digest="sha256:" + hashlib.sha256(seed.encode()).hexdigest(),
            commit=hashlib.sha1(seed.encode()).hexdigest(),
            source="bench/ci",
            repo="https://git.example.invalid/bench",
        )


def match_published(record: Any, counts: Counter[str]) -> str | None:
    """The packaged event id an ``artifact.published`` answers (rejections are counted)."""
    ce_type = header(record, "ce_type")
    if ce_type == ArtifactPublished.TYPE:
        event = decode(record_from_kafka(record)).event
        assert isinstance(event, ArtifactPublished)
        return event.custom_data.packaged_event_id
    if ce_type == ArtifactRejected.TYPE:
        counts["rejected"] += 1
    return None


class ArtifactsBench(LatencyBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.factory: EventFactory | None = None

    async def prepare(self, result: dict[str, Any]) -> None:
        self.factory = EventFactory(self.ns, service_names(len(self.artifacts)))

    # -- the Lockstep path --

    async def lockstep(self, *, find_max: bool) -> dict[str, Any]:
        assert self.factory is not None
        factory, settings, args = self.factory, self.settings, self.args
        observer = await self.observer(settings.topic(topics.ARTIFACTS), match_published)
        service = self.child(
            "artifacts service",
            shlex.split(args.service_cmd)
            if args.service_cmd
            else [sys.executable, "-m", "cli", "run", "artifacts"],
            "artifacts-service.log",
        )
        service.start()
        phases: list[Phase] = []
        out: dict[str, Any] = {}
        async with Publisher(settings, client_id="bench-ci") as publisher:

            def make_item() -> Item:
                event = factory.next()
                return event.id, lambda: publisher.publish(event)

            out["ready_s"] = await self.probe(make_item, observer, service.alive)

            async def phase_at(rate: float, warmup: float, seconds: float) -> dict[str, Any]:
                phase = await run_phase(
                    "lockstep",
                    rate=rate,
                    warmup_s=warmup,
                    seconds=seconds,
                    make_item=make_item,
                    observer=observer,
                    drain_timeout_s=args.drain_timeout,
                    alive=service.alive,
                    worker_pid=service.pid,
                )
                phases.append(phase)
                return phase.figures

            if find_max:
                steps = await step_up(
                    args.steps,
                    lambda rate: phase_at(rate, args.step_warmup, args.step_seconds),
                    lambda rate: (
                        f"lockstep: {rate:g}/s for {args.step_seconds:g}s (+{args.step_warmup:g}s)"
                    ),
                )
                out |= find_max_summary(
                    steps,
                    f"registered/s >= {KEEP_UP_SHARE:.0%} of offered, p99 < {KEEP_UP_P99_MS:g} ms, "
                    "nothing lost (stepping goes on while throughput keeps up)",
                )
            else:
                say(f"lockstep: {args.rate:g}/s for {args.seconds:g}s (+{args.warmup:g}s warm-up)")
                out["figures"] = await phase_at(args.rate, args.warmup, args.seconds)
        out["rejected"] = observer.counts["rejected"]
        out["duplicates"] = observer.duplicates
        out["redelivered"] = observer.redelivered
        out["service_exit_code"] = await service.stop()
        out["service_killed"] = service.killed
        if service.exit_code != 0:
            out["service_log_tail"] = service.tail()
        await observer.stop()
        self.closed(observer.stop)
        spans = {
            s["attributes"].get("cloudevents.event_id"): s
            for s in read_spans(self.trace_dir)
            if s.get("name") == "process artifact.packaged"
        }
        for phase, target in zip(
            phases, out["steps"] if find_max else [out["figures"]], strict=True
        ):
            target["stages_ms"] = lockstep_stages(phase, observer, spans)
        return out

    # -- the floor: one bare consume->produce hop --

    async def floor(self) -> dict[str, Any]:
        assert self.factory is not None
        factory, args, ns = self.factory, self.args, self.ns
        floor = Floor(
            self, [f"{ns}.bench_floor_in", f"{ns}.bench_floor_out"], [f"{ns}.bench-hop"],
            ["floor hop"],
        )  # fmt: skip
        await floor.start()
        observer, (hop,) = floor.observer, floor.hops
        assert observer is not None

        def make_item() -> Item:
            return floor.item(factory.next())

        out: dict[str, Any] = {}
        out["ready_s"] = await self.probe(make_item, observer, floor.alive)
        say(f"floor: {args.rate:g}/s for {args.seconds:g}s (+{args.warmup:g}s warm-up)")
        phase = await run_phase(
            "floor",
            rate=args.rate,
            warmup_s=args.warmup,
            seconds=args.seconds,
            make_item=make_item,
            observer=observer,
            drain_timeout_s=args.drain_timeout,
            alive=floor.alive,
            worker_pid=hop.pid,
        )
        out["figures"] = phase.figures
        out["figures"]["stages_ms"] = floor_stages(phase, observer)
        out["value_bytes"] = floor.value_bytes
        out["duplicates"] = observer.duplicates
        out["redelivered"] = observer.redelivered
        out["hop_exit_code"] = (await floor.stop())[hop.name]
        if hop.exit_code != 0:
            out["hop_log_tail"] = hop.tail()
        return out


# --- where the time goes -----------------------------------------------------------------------


def lockstep_stages(
    phase: Phase, observer: Observer, spans: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Split each measured latency with the service's span and the published record's
    CreateTime (all on this machine's wall clock; CreateTime has 1 ms resolution)."""
    parts: dict[str, list[float]] = {
        "to_handler": [],  # publish start -> service span start (hop 1, fetch, decode)
        "handler": [],  # span: inbox claim, registry queries, outbox write
        "commit_to_relay_send": [],  # span end -> relay sends (batch commit, NOTIFY, SELECT)
        "relay_send_to_observed": [],  # hop 2: linger, acks=all, fetch by the observer
    }
    for event_id in phase.measured:
        s, a, span = phase.sent[event_id], observer.seen.get(event_id), spans.get(event_id)
        if a is None or span is None or not s.start_wall_ns:
            continue
        created_ns = a.created_ms * 1_000_000
        parts["to_handler"].append((span["start_ns"] - s.start_wall_ns) / 1e6)
        parts["handler"].append((span["end_ns"] - span["start_ns"]) / 1e6)
        parts["commit_to_relay_send"].append((created_ns - span["end_ns"]) / 1e6)
        parts["relay_send_to_observed"].append((a.wall_ns - created_ns) / 1e6)
    return p50_p99(parts)


def floor_stages(phase: Phase, observer: Observer) -> dict[str, Any]:
    parts: dict[str, list[float]] = {"to_hop_send": [], "hop_send_to_observed": []}
    for event_id in phase.measured:
        s, a = phase.sent[event_id], observer.seen.get(event_id)
        if a is None or not s.start_wall_ns:
            continue
        created_ns = a.created_ms * 1_000_000
        parts["to_hop_send"].append((created_ns - s.start_wall_ns) / 1e6)
        parts["hop_send_to_observed"].append((a.wall_ns - created_ns) / 1e6)
    return p50_p99(parts)


# --- output ------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Lockstep artifacts latency bench  {m['date']}  git {m['git']}  ns {result['namespace']}",
        f"machine: {m['cpu_model']} x{m['cpu_count']}, {m['memory_mib']} MiB, {m['platform']}",
        f"Python {m['python']}, Kafka {m['kafka_version']}, {str(m['postgres_version'])[:16]} "
        f"(synchronous_commit={m['postgres_settings']['synchronous_commit']})",
        "Postgres INSERT+COMMIT probe: p50 "
        f"{result['postgres_commit_probe_ms']['p50']:.2f} ms, "
        f"p99 {result['postgres_commit_probe_ms']['p99']:.2f} ms",
        "",
    ]
    if "find_max" in result:
        fm = result["find_max"]
        head = ("offered/s", "sent/s", "registered/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
        head += ("lost", "svc CPU %", "CPU ms/ev", "keeps up")
        rows = [
            (
                s["offered_rate"],
                s["achieved_publish_rate"],
                s["throughput_per_s"],
                s["latency_ms"]["p50"],
                s["latency_ms"]["p90"],
                s["latency_ms"]["p99"],
                s["latency_ms"]["max"],
                s["lost"],
                s["cpu"]["worker_percent"],
                s["cpu"]["worker_ms_per_event"],
                "yes" if s["keeps_up"] else ("p99" if s["throughput_kept"] else "NO"),
            )
            for s in fm["steps"]
        ]
        lines += grid(head, rows)
        lines += [
            "",
            f"sustained releases/s: {fm['sustained_releases_per_s']:g}  ({fm['criterion']})",
            f"highest registered/s in any step: {fm['max_registered_per_s']:g}",
            f"service exit code {fm['service_exit_code']}; duplicates {fm['duplicates']}; "
            f"redelivered {fm['redelivered']}; "
            f"rejected {fm['rejected']}",
        ]
        return "\n".join(lines)
    head = ("path", "events", "offered/s", "sent/s", "registered/s", "p50 ms", "p90 ms")
    head += ("p99 ms", "max ms", "lost")
    rows = []
    for path in ("lockstep", "floor"):
        if path not in result:
            continue
        f = result[path]["figures"]
        lat = f["latency_ms"]
        rows.append(
            (
                path,
                f["events"],
                f["offered_rate"],
                f["achieved_publish_rate"],
                f["throughput_per_s"],
                lat["p50"],
                lat["p90"],
                lat["p99"],
                lat["max"],
                f["lost"],
            )
        )
    lines += grid(head, rows)
    if "ratio_lockstep_over_floor" in result:
        r = result["ratio_lockstep_over_floor"]
        lines += ["", f"lockstep / floor:  p50 x{r['p50']}   p99 x{r['p99']}"]
    lines += ["", "CPU over each phase (100 % = one core):"]
    for path, who in (("lockstep", "service"), ("floor", "hop")):
        if path in result:
            c = result[path]["figures"]["cpu"]
            lines.append(
                f"  {path:9}{who} {c['worker_percent']:.0f} % ({c['worker_ms_per_event']:.2f} ms "
                f"CPU/event), bench {c['bench_percent']:.0f} %, machine "
                f"{c['machine_busy_percent_of_all_cores']:.0f} % of {c['cores']} cores busy"
            )
    lines += ["", "where the time goes (ms, p50 / p99):"]
    for path in ("lockstep", "floor"):
        if path in result:
            stages = result[path]["figures"]["stages_ms"]
            lines.append(
                f"  {path:9}"
                + "  ".join(f"{k} {v['p50']:.1f}/{v['p99']:.1f}" for k, v in stages.items())
            )
    lp = result["lockstep"]
    lines.append(
        f"service exit code {lp['service_exit_code']}; duplicates {lp['duplicates']}; "
        f"redelivered {lp['redelivered']}; "
        f"rejected {lp['rejected']}; publish->ack p50 "
        f"{lp['figures']['publish_ack_ms']['p50']:.1f} ms; max send lag "
        f"{lp['figures']['send_lag_ms']['max']:.1f} ms"
    )
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (3)")
    p.add_argument(
        "--out",
        type=Path,
        help="JSON result (default bench/results/artifacts_latency-<stamp>.json)",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the bare-Kafka floor")
    p.add_argument("--find-max", action="store_true", help="step the rate up; report the max")
    p.add_argument(
        "--steps",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[100.0, 200.0, 400.0, 800.0, 1600.0],
        help="--find-max rates, comma-separated (default 100,200,400,800,1600)",
    )
    p.add_argument("--step-seconds", type=float, default=10.0, help="--find-max: per step (10)")
    p.add_argument("--step-warmup", type=float, default=1.0, help="--find-max: warm-up (1)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="after the last send, wait this long for stragglers before counting them lost (30)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="overall limit, seconds (600)")
    p.add_argument("--keep-temp", action="store_true", help="keep service log and spans")
    p.add_argument(
        "--service-cmd",
        help="run this instead of `python -m cli run artifacts` (e.g. a profiled "
        "service); it gets the same LOCKSTEP_* environment",
    )
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.warmup < 0 or any(r <= 0 for r in args.steps):
        p.error("rates and durations must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run_latency_bench("artifacts_latency", ArtifactsBench(args), table))


if __name__ == "__main__":
    sys.exit(main())
