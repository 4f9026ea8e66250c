"""End-to-end latency of a release through the chain artifacts -> gates -> promotion, against a
bare-Kafka floor with the same number of hops.

    .venv/bin/python bench/release_chain_latency.py [--rate 50] [--seconds 15] [--warmup 3]
    .venv/bin/python bench/release_chain_latency.py --find-max [--steps 50,100,200,300,400]
    .venv/bin/python bench/release_chain_latency.py --instances 2 --rebalance [--together]

Lockstep path: a release model with one environment, ``dev``, whose gate asks for passing tests
is put in force (``policy.updated``). For each release (a unique ``service@version``; 12 service
names, unique versions) a CI-like publisher sends ``testsuiterun.finished`` (success) and waits
for Kafka's ack, then sends ``artifact.packaged``. The three services run as their own processes
(``python -m cli run artifacts|gates|promotion``). The hops:

    artifact.packaged -> artifacts -> artifact.published (+ evidence.recorded)
                      -> gates -> gate.passed -> promotion -> promotion.approved

``--together`` runs the three in one process (``cli run artifacts gates promotion``);
``--instances N`` starts N of each (N processes of the three with ``--together``), in one
consumer group per service; ``--rebalance`` stops the last instance of each service halfway
through the measured phase (SIGTERM: it drains) and starts it again, two rebalances under
load. Each instance's share is counted from its spans (one per event it handled).

What Postgres did per release (statements of the services' roles, transactions, WAL fsyncs)
is counted over each phase (``bench/harness/pgstats.py``).

A deployer-like consumer reads ``<ns>.promotions``. The latency of one release is the start of
its ``artifact.packaged`` publish call -> its ``promotion.approved`` consumed (matched on
service@version). Observers on the intermediate topics split it into stages.

Floor: the same number of records (the encoded ``artifact.packaged``, so the same size) at the
same rate through a bare aiokafka chain with the same three consume->produce hops between four
topics (three hop processes, ``bench/harness/hop.py``).

Everything else (open-loop load, fresh namespace, clean-up on failure, machine figures, the
JSON file) is ``bench/harness``'s; this file is the scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness  # noqa: F401 - first: it puts the repository on sys.path
from harness.arrivals import Matcher, Observer, header
from harness.children import Child
from harness.cpu import cpu_figures, cpu_sample
from harness.floor import Floor
from harness.latency import LatencyBench, run_latency_bench
from harness.load import (
    KEEP_UP_SHARE,
    Item,
    Phase,
    figures,
    find_max_summary,
    run_phase,
    service_names,
    step_up,
)
from harness.pgstats import FLUSH_LAG_S, per_release, pg_counters
from harness.report import grid, say
from harness.run import main as run_main
from harness.stats import p50_p99, summary_ms

from events import (
    ArtifactPackaged,
    ArtifactPublished,
    ArtifactRef,
    EvidenceRecorded,
    GateFailed,
    GatePassed,
    PromotionApproved,
    PromotionBlocked,
    TestSuiteRunFinished,
    decode,
    topics,
)
from policy import load_text, policy_updated
from shared.bus import Publisher
from shared.bus.consumer import record_from_kafka

SERVICES = ("artifacts", "gates", "promotion")
MODEL = """\
version: 1
environments:
  - name: dev
gates:
  dev:
    criteria:
      - evidence: tests
        key: true
"""
# the intermediate announcements observed for the stage split: (topic, event type, stage name)
STAGES = (
    (topics.ARTIFACTS, ArtifactPublished.TYPE, "published"),
    (topics.EVIDENCE, EvidenceRecorded.TYPE, "evidence_recorded"),
    (topics.GATES, GatePassed.TYPE, "gate_passed"),
)


# --- releases ----------------------------------------------------------------------------------


class ReleaseFactory:
    """A unique service@version per release over a few service names: tests, then the build."""

    def __init__(self, namespace: str, services: list[str]) -> None:
        self._namespace = namespace
        self._services = services
        self._seq = 0

    def next(self) -> tuple[str, TestSuiteRunFinished, ArtifactPackaged]:
        self._seq += 1
        seed = f"{self._namespace}/{self._seq}"
        service = self._services[self._seq % len(self._services)]
        version = f"1.{self._seq}.0"
        digest = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
        packaged = ArtifactPackaged.build(
            service=service,
            version=version,
            digest=digest,
            commit=hashlib.sha1(seed.encode()).hexdigest(),
            source="bench/ci",
            repo="https://git.example.invalid/bench",
        )
        tests = TestSuiteRunFinished.build(
            artifact=ArtifactRef(service, version, digest),
            suite="bench",
            outcome="success",
            passed=1,
            source="bench/ci",
        )
        return f"{service}@{version}", tests, packaged


def match_label(wanted: str, counts_as: dict[str, str] | None = None) -> Matcher:
    """service@version of each record of type ``wanted``; other types named in ``counts_as``
    are counted under their name."""

    def match(record: Any, counts: Counter[str]) -> str | None:
        ce_type = header(record, "ce_type")
        if ce_type == wanted:
            return decode(record_from_kafka(record)).event.artifact_label()
        if counts_as and ce_type in counts_as:
            counts[counts_as[ce_type]] += 1
        return None

    return match


# --- the bench ---------------------------------------------------------------------------------


class ChainBench(LatencyBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.releases: ReleaseFactory | None = None
        self.pids: dict[str, list[int | None]] = {}  # instance -> its processes' pids

    async def prepare(self, result: dict[str, Any]) -> None:
        self.releases = ReleaseFactory(self.ns, service_names(len(self.artifacts)))
        async with Publisher(
            self.settings, client_id="bench-platform", signing_key=self.key("platform")
        ) as publisher:
            loaded = load_text(MODEL.encode())
            await publisher.publish(policy_updated(loaded, updated_by="bench"))
        result["model_sha256"] = loaded.sha256
        result["signing"] = self.args.signing

    def cli_argv(self) -> list[str]:
        """How a service process is started: the command line, or with ``--signing off`` the
        benchmark's own entry point that turns signing and verification off first."""
        if self.args.signing == "off":
            return [sys.executable, str(Path(__file__).parent / "harness" / "unsigned.py")]
        return [sys.executable, "-m", "cli"]

    async def _observer(self, logical: str, match: Matcher) -> Observer:
        return await self.observer(self.settings.topic(logical), match)

    # -- the services: their processes, instances, a forced rebalance --

    def start_services(self) -> list[Child]:
        """``--instances`` processes of each service (of the three together, ``--together``)."""
        args = self.args
        groups = [list(SERVICES)] if args.together else [[name] for name in SERVICES]
        services: list[Child] = []
        for names in groups:
            label = "+".join(names)
            for i in range(1, args.instances + 1):
                child = self.child(
                    f"{label} service #{i}",
                    [*self.cli_argv(), "run", *names],
                    f"{label}-service-{i}.log",
                )
                child.start()
                self.pids.setdefault(child.name, []).append(child.pid)
                services.append(child)
        return services

    async def rebalance(self, services: list[Child], after_s: float) -> dict[str, Any]:
        """After ``after_s``, the last instance of each service stops (SIGTERM: it drains and
        leaves its groups) and starts again (it joins them again): two rebalances under load."""
        await asyncio.sleep(after_s)
        last = [c for c in services if c.name.endswith(f"#{self.args.instances}")]
        t0 = time.perf_counter()
        codes = await asyncio.gather(*(c.stop() for c in last))
        stopped_s = time.perf_counter() - t0
        for child in last:
            child.start()
            self.pids[child.name].append(child.pid)
        say(f"rebalance: {', '.join(c.name for c in last)} stopped in {stopped_s:.1f}s, started")
        return {
            "at_s": after_s,
            "stopped_in_s": round(stopped_s, 2),
            "exit_codes": {c.name: code for c, code in zip(last, codes, strict=True)},
        }

    def instance_shares(self, services: list[Child]) -> dict[str, dict[str, float]]:
        """Per service, the share of its events each instance handled, over the whole run: its
        spans (``spans-<service>-<pid>.jsonl``, one per event handled; a redelivery skipped
        is not counted)."""
        handled: Counter[tuple[str, int]] = Counter()
        if self.trace_dir is not None:
            for path in self.trace_dir.glob("spans-*-*.jsonl"):
                service, _, pid = path.stem.removeprefix("spans-").rpartition("-")
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    try:
                        attributes = json.loads(line).get("attributes") or {}
                    except ValueError:
                        continue  # a torn last line
                    if attributes.get("messaging.operation.type") != "process":
                        continue
                    if not attributes.get("lockstep.duplicate"):
                        handled[(service, int(pid))] += 1
        shares: dict[str, dict[str, float]] = {}
        for name in SERVICES:
            counts = {
                child.name: sum(handled[(name, pid)] for pid in self.pids[child.name] if pid)
                for child in services
                if name in child.name
            }
            total = sum(counts.values())
            shares[name] = {who: round(n / total, 3) if total else 0.0 for who, n in counts.items()}
        return shares

    # -- the Lockstep path --

    async def lockstep(self, *, find_max: bool) -> dict[str, Any]:
        assert self.releases is not None
        releases, settings, args = self.releases, self.settings, self.args
        deployer = await self._observer(
            topics.PROMOTIONS,
            match_label(PromotionApproved.TYPE, {PromotionBlocked.TYPE: "blocked"}),
        )
        stage_observers: dict[str, Observer] = {}
        if not args.no_stages:
            for logical, ce_type, name in STAGES:
                counts = {GateFailed.TYPE: "gate_failed"} if logical == topics.GATES else None
                stage_observers[name] = await self._observer(logical, match_label(ce_type, counts))
        services = self.start_services()

        def alive() -> None:
            for child in services:
                child.alive()

        # packaged publish start per release: (perf_counter, wall ns), and the evidence ack time
        packaged_start: dict[str, tuple[float, int]] = {}
        evidence_ms: dict[str, float] = {}
        phases: list[tuple[Phase, dict[str, Any]]] = []
        out: dict[str, Any] = {}
        async with Publisher(settings, client_id="bench-ci") as publisher:

            def make_item() -> Item:
                key, tests, packaged = releases.next()

                async def send() -> None:
                    t0 = time.perf_counter()
                    await publisher.publish(tests)  # the evidence is in Kafka before the build
                    t1 = time.perf_counter()
                    evidence_ms[key] = (t1 - t0) * 1000
                    packaged_start[key] = (t1, time.time_ns())
                    await publisher.publish(packaged)

                return key, send

            out["ready_s"] = await self.probe(make_item, deployer, alive)

            async def phase_at(rate: float, warmup: float, seconds: float) -> dict[str, Any]:
                before = {c.name: cpu_sample(c.pid) for c in services}
                pids_before = {c.name: c.pid for c in services}
                pg_before = await pg_counters(settings)
                rebalancing = (
                    asyncio.ensure_future(self.rebalance(services, warmup + seconds / 2))
                    if args.rebalance
                    else None
                )
                phase = await run_phase(
                    "lockstep",
                    rate=rate,
                    warmup_s=warmup,
                    seconds=seconds,
                    make_item=make_item,
                    observer=deployer,
                    drain_timeout_s=args.drain_timeout,
                    alive=alive,
                )
                if rebalancing is not None:
                    f_rebalance = await rebalancing
                after = {c.name: cpu_sample(c.pid) for c in services}
                await asyncio.sleep(FLUSH_LAG_S)  # Postgres's own figures come in late
                pg = per_release(pg_before, await pg_counters(settings), len(phase.ids))
                # measure from the packaged publish, not from the evidence publish before it
                for key, s in phase.sent.items():
                    if key in packaged_start:
                        s.start, s.start_wall_ns = packaged_start[key]
                kept = {k: phase.figures[k] for k in ("client_warnings", "cpu")}
                f = figures(phase, deployer) | kept
                cpu = {  # an instance restarted mid-phase: its CPU is not measured
                    c.name: cpu_figures(before[c.name], after[c.name], len(phase.ids))
                    if c.pid == pids_before[c.name]
                    else {"worker_percent": math.nan, "worker_ms_per_event": math.nan}
                    for c in services
                }
                f["cpu_services"] = {
                    name: {k: c[k] for k in ("worker_percent", "worker_ms_per_event")}
                    for name, c in cpu.items()
                }
                f["cpu_services_total_percent"] = round(
                    sum(c["worker_percent"] for c in cpu.values()), 1
                )
                f["evidence_publish_ms"] = summary_ms(
                    [evidence_ms[k] for k in phase.measured if k in evidence_ms]
                )
                f["stages_ms"] = chain_stages(phase, deployer, stage_observers)
                f["postgres"] = pg
                if rebalancing is not None:
                    f["rebalance"] = f_rebalance
                phases.append((phase, f))
                return f

            if find_max:
                steps = await step_up(
                    args.steps,
                    lambda rate: phase_at(rate, args.step_warmup, args.step_seconds),
                    lambda rate: f"lockstep: {rate:g}/s for {args.step_seconds:g}s",
                    args.p99_limit_ms,
                )
                out |= find_max_summary(
                    steps,
                    f"approved/s >= {KEEP_UP_SHARE:.0%} of offered, "
                    f"p99 < {args.p99_limit_ms:g} ms, nothing lost",
                )
            else:
                say(f"lockstep: {args.rate:g}/s for {args.seconds:g}s (+{args.warmup:g}s)")
                out["figures"] = await phase_at(args.rate, args.warmup, args.seconds)
        out["blocked"] = deployer.counts["blocked"]
        out["gate_failed"] = (
            stage_observers["gate_passed"].counts["gate_failed"] if stage_observers else None
        )
        out["duplicates"] = deployer.duplicates
        out["redelivered"] = deployer.redelivered
        out["service_exit_codes"] = {c.name: await c.stop() for c in services}
        out["instance_shares"] = self.instance_shares(services)
        out["service_exit_code"] = max(
            (abs(code) for code in out["service_exit_codes"].values() if code is not None),
            default=None,
        )
        for c in services:
            if c.exit_code != 0:
                out[f"{c.name} log tail"] = c.tail()
        for observer in [deployer, *stage_observers.values()]:
            await observer.stop()
            self.closed(observer.stop)
        return out

    # -- the floor: three bare consume->produce hops --

    async def floor(self) -> dict[str, Any]:
        assert self.releases is not None
        releases, args, ns = self.releases, self.args, self.ns
        floor = Floor(
            self,
            [f"{ns}.bench_chain_{i}" for i in range(4)],
            [f"{ns}.bench-chain-hop{i}" for i in range(3)],
            [f"floor hop {i}" for i in range(3)],
        )
        await floor.start()
        observer, hops = floor.observer, floor.hops
        assert observer is not None

        def make_item() -> Item:
            _, _, packaged = releases.next()
            return floor.item(packaged)

        out: dict[str, Any] = {"ready_s": await self.probe(make_item, observer, floor.alive)}
        say(f"floor: {args.rate:g}/s for {args.seconds:g}s (+{args.warmup:g}s warm-up)")
        before = [cpu_sample(h.pid) for h in hops]
        phase = await run_phase(
            "floor",
            rate=args.rate,
            warmup_s=args.warmup,
            seconds=args.seconds,
            make_item=make_item,
            observer=observer,
            drain_timeout_s=args.drain_timeout,
            alive=floor.alive,
        )
        after = [cpu_sample(h.pid) for h in hops]
        out["figures"] = phase.figures
        out["figures"]["cpu_hops_total_percent"] = round(
            sum(
                cpu_figures(b, a, len(phase.ids))["worker_percent"]
                for b, a in zip(before, after, strict=True)
            ),
            1,
        )
        out["value_bytes"] = floor.value_bytes
        out["duplicates"] = observer.duplicates
        out["redelivered"] = observer.redelivered
        out["hop_exit_codes"] = await floor.stop()
        out["hop_exit_code"] = max(
            (abs(code) for code in out["hop_exit_codes"].values() if code is not None),
            default=None,
        )
        return out


# --- where the time goes -----------------------------------------------------------------------


def chain_stages(phase: Phase, deployer: Observer, stages: dict[str, Observer]) -> dict[str, Any]:
    """packaged publish -> artifact.published seen -> gate.passed seen -> approved seen (each
    "seen" by the bench's own observers), plus evidence.recorded relative to published."""
    if not stages:
        return {}
    parts: dict[str, list[float]] = {
        "to_published": [],  # hop 1: artifacts service (inbox, registry, outbox relay)
        "published_to_gate_passed": [],  # hop 2: gates (after the later of published/evidence)
        "gate_passed_to_approved": [],  # hop 3: promotion, and the deployer's fetch
        "evidence_recorded_after_published": [],
    }
    pub, ev, gate = stages["published"], stages["evidence_recorded"], stages["gate_passed"]
    for key in phase.measured:
        s, a = phase.sent[key], deployer.seen.get(key)
        p, e, g = pub.seen.get(key), ev.seen.get(key), gate.seen.get(key)
        if s.start is None or a is None or p is None or g is None:
            continue
        parts["to_published"].append((p.perf - s.start) * 1000)
        parts["published_to_gate_passed"].append((g.perf - p.perf) * 1000)
        parts["gate_passed_to_approved"].append((a.perf - g.perf) * 1000)
        if e is not None:
            parts["evidence_recorded_after_published"].append((e.perf - p.perf) * 1000)
    return p50_p99(parts)


# --- output ------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Lockstep release chain latency bench  {m['date']}  git {m['git']}  "
        f"ns {result['namespace']}",
        f"machine: {m['cpu_model']} x{m['cpu_count']}, {m['memory_mib']} MiB, {m['platform']}",
        f"Python {m['python']}, Kafka {m['kafka_version']}, {str(m['postgres_version'])[:16]} "
        f"(synchronous_commit={m['postgres_settings']['synchronous_commit']})",
        "packaged -> artifacts -> published -> gates -> gate.passed -> promotion -> approved",
        "",
    ]
    head = ("path", "releases", "offered/s", "sent/s", "approved/s", "p50 ms", "p90 ms")
    head += ("p99 ms", "max ms", "lost", "CPU %")

    def row(label: str, f: dict[str, Any], cpu: float) -> tuple[Any, ...]:
        lat = f["latency_ms"]
        return (
            label,
            f["events"],
            f["offered_rate"],
            f["achieved_publish_rate"],
            f["throughput_per_s"],
            lat["p50"],
            lat["p90"],
            lat["p99"],
            lat["max"],
            f["lost"],
            cpu,
        )

    if "find_max" in result:
        fm = result["find_max"]
        rows = [
            (
                *row("lockstep", f, f["cpu_services_total_percent"]),
                "yes" if f["keeps_up"] else "no",
            )
            for f in fm["steps"]
        ]
        lines += grid((*head, "keeps up"), rows)
        lines += [
            "",
            f"sustained releases/s: {fm['sustained_releases_per_s']:g}  ({fm['criterion']})",
            f"highest approved/s in any step: {fm['max_registered_per_s']:g}",
        ]
        figs = fm["steps"]
        block = fm
    else:
        rows = [
            row(
                "lockstep",
                result["lockstep"]["figures"],
                result["lockstep"]["figures"]["cpu_services_total_percent"],
            )
        ]
        if "floor" in result:
            ff = result["floor"]["figures"]
            rows.append(row("floor", ff, ff["cpu_hops_total_percent"]))
        lines += grid(head, rows)
        if "ratio_lockstep_over_floor" in result:
            r = result["ratio_lockstep_over_floor"]
            lines += ["", f"lockstep / floor:  p50 x{r['p50']}   p99 x{r['p99']}"]
        figs = [result["lockstep"]["figures"]]
        block = result["lockstep"]
    lines += ["", "where the time goes (ms, p50 / p99), CPU % of one core per service:"]
    for f in figs:
        stages = "  ".join(f"{k} {v['p50']:.1f}/{v['p99']:.1f}" for k, v in f["stages_ms"].items())
        cpu = "  ".join(
            f"{k.replace(' service', '')} {v['worker_percent']:.0f}%"
            for k, v in f["cpu_services"].items()
        )
        lines.append(f"  {f['offered_rate']:g}/s: {stages or '(stages off)'}  | {cpu}")
    lines += ["", "Postgres per release (services' statements, all transactions, WAL fsyncs):"]
    for f in figs:
        pg = f["postgres"]
        by_role = "  ".join(
            f"{role.removeprefix('lockstep_svc_')} {n:g}"
            for role, n in (pg.get("statements_per_release_by_role") or {}).items()
        )
        lines.append(
            f"  {f['offered_rate']:g}/s: statements {pg['statements_per_release']} ({by_role})"
            f"  transactions {pg['transactions_per_release']:g}"
            f"  WAL fsyncs {pg['wal_fsyncs_per_release']:g}"
            + (f"  [{pg['note']}]" if pg.get("note") else "")
        )
        if "rebalance" in f:
            r = f["rebalance"]
            lines.append(
                f"  rebalance at {r['at_s']:g}s: stopped in {r['stopped_in_s']:g}s, "
                f"exit codes {r['exit_codes']}"
            )
    shares = block.get("instance_shares") or {}
    if any(len(s) > 1 for s in shares.values()):
        lines.append("share of each service's events per instance:")
        for name, per in shares.items():
            lines.append(f"  {name}: " + "  ".join(f"{k} {v:.0%}" for k, v in per.items()))
    lines.append(
        f"service exit codes {block['service_exit_codes']}; duplicates {block['duplicates']}; "
        f"blocked {block['blocked']}; gate.failed {block['gate_failed']}"
    )
    if "floor" in result:
        lines.append(
            f"floor hop exit codes {result['floor']['hop_exit_codes']}; "
            f"record {result['floor']['value_bytes']} bytes"
        )
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=50.0, help="releases per second (50)")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds (15)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (3)")
    p.add_argument(
        "--out",
        type=Path,
        help="JSON result (default bench/results/release_chain_latency-<stamp>.json)",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the bare-Kafka floor")
    p.add_argument(
        "--instances", type=int, default=1, help="processes of each service, one group (1)"
    )
    p.add_argument("--together", action="store_true", help="the three services in one process each")
    p.add_argument(
        "--rebalance",
        action="store_true",
        help="halfway through, stop and start the last instance of each service",
    )
    p.add_argument("--no-stages", action="store_true", help="no intermediate-topic observers")
    p.add_argument("--find-max", action="store_true", help="step the rate up; report the max")
    p.add_argument(
        "--steps",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[50.0, 100.0, 200.0, 300.0, 400.0],
        help="--find-max rates (default 50,100,200,300,400)",
    )
    p.add_argument("--step-seconds", type=float, default=10.0, help="--find-max: per step (10)")
    p.add_argument("--step-warmup", type=float, default=2.0, help="--find-max: warm-up (2)")
    p.add_argument(
        "--p99-limit-ms",
        type=float,
        default=1000.0,
        help="--find-max: a step keeps up while its p99 is under this (1000: issue 12's 1 s)",
    )
    p.add_argument("--drain-timeout", type=float, default=30.0, help="straggler wait (30)")
    p.add_argument("--timeout", type=float, default=600.0, help="overall limit, seconds (600)")
    p.add_argument("--keep-temp", action="store_true", help="keep service logs and spans")
    p.add_argument(
        "--signing",
        choices=("on", "off"),
        default="on",
        help="off: the services neither sign nor verify (bench/harness/unsigned.py), to set "
        "the chain's latency with signatures against without (on)",
    )
    args = p.parse_args(argv)
    if args.instances < 1:
        p.error("--instances must be 1 or more")
    if args.rate <= 0 or args.seconds <= 0 or args.warmup < 0 or any(r <= 0 for r in args.steps):
        p.error("rates and durations must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run_latency_bench("release_chain_latency", ChainBench(args), table))


if __name__ == "__main__":
    sys.exit(main())
