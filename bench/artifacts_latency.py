"""End-to-end latency and throughput of the artifacts service, against a bare-Kafka floor.

    .venv/bin/python bench/artifacts_latency.py [--rate 200] [--seconds 20] [--warmup 3]
                                                 [--out bench/results/NAME.json]
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
Postgres schemas are removed at the end, also on failure. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from aiokafka.protocol.admin import DeleteGroupsRequest

from events import ArtifactPackaged, ArtifactPublished, ArtifactRejected, decode, encode, topics
from shared.bus import Publisher
from shared.bus.admin import delete_namespace_topics, ensure_topics, partitions_of
from shared.bus.consumer import record_from_kafka
from shared.db import drop_namespace_schemas
from shared.settings import Settings
from shared.telemetry import read_spans

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
KEEP_UP_SHARE = 0.95  # --find-max: registered throughput must be >= 95 % of the offered rate
KEEP_UP_P99_MS = 100.0  # ... and p99 latency under 100 ms
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
READY_TIMEOUT_S = 90.0  # a started process must answer its first event within this
STOP_TIMEOUT_S = 30.0  # SIGTERM -> exit, before SIGKILL
Item = tuple[str, Callable[[], Awaitable[Any]]]  # (event id, coroutine factory that sends it)


# --- small helpers -----------------------------------------------------------------------------


def now_wall_ns() -> int:
    return time.time_ns()


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (already in any order)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {k: math.nan for k in ("min", "p50", "p90", "p99", "max", "mean")}
    return {
        "min": round(min(values), 3),
        "p50": round(pct(values, 50), 3),
        "p90": round(pct(values, 90), 3),
        "p99": round(pct(values, 99), 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
    }


def header(record: Any, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("utf-8", errors="replace")
    return None


def check_loopback(settings: Settings) -> None:
    hosts = [h.rsplit(":", 1)[0].strip("[]") for h in settings.kafka_bootstrap.split(",")]
    pg_host = re.sub(r"^.*@", "", settings.pg_dsn.split("//", 1)[-1]).split("/", 1)[0]
    pg_host = pg_host.rsplit(":", 1)[0].strip("[]")
    bad = [h for h in [*hosts, pg_host] if h not in LOOPBACK]
    if bad:
        raise SystemExit(f"refusing to run against non-loopback hosts {bad}: this bench is local")


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


async def wait_for_leaders(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> None:
    """Until every partition of ``names`` has a leader (new topics take a moment)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_topics(names)
            ready = [
                d
                for d in described
                if d.get("error_code", 0) == 0
                and d.get("partitions")
                and all(p.get("leader", -1) >= 0 and not p["error_code"] for p in d["partitions"])
            ]
            if len(ready) == len(names):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"partitions of {names} have no leader after {timeout_s:g}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


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


# --- the observer: consumption times of the events we wait for --------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    perf: float  # time.perf_counter() when the consumer returned the record
    wall_ns: int  # the same moment, wall clock (to compare with spans and record timestamps)
    created_ms: int  # the record's Kafka timestamp (CreateTime: the producer's send time)
    partition: int


Matcher = Callable[[Any, Counter[str]], str | None]


class Observer:
    """Reads every partition of a topic from its end (positioned before anything is sent) and
    notes when each awaited id arrives."""

    def __init__(self, bootstrap: str, partitions: list[TopicPartition], match: Matcher) -> None:
        self._bootstrap = bootstrap
        self._partitions = partitions
        self._match = match
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.seen: dict[str, Arrival] = {}
        self.duplicates = 0  # a second, different announcement for one id (a real double)
        self.redelivered = 0  # the same announcement (same ce_id) again: at-least-once relay
        self._ce_ids: dict[str, str | None] = {}
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id="bench-observer",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        self._consumer = consumer
        consumer.assign(self._partitions)
        await consumer.seek_to_end(*self._partitions)
        for tp in self._partitions:  # resolve the end offsets now, before anything is published
            await consumer.position(tp)
        self._task = asyncio.create_task(self._run(consumer), name="observer")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            if not batches:
                continue
            perf, wall = time.perf_counter(), now_wall_ns()
            for records in batches.values():
                for r in records:
                    key = self._match(r, self.counts)
                    if key is None:
                        continue
                    ce_id = header(r, "ce_id")
                    if key not in self.seen:
                        self.seen[key] = Arrival(perf, wall, r.timestamp, r.partition)
                        self._ce_ids[key] = ce_id
                    elif self._ce_ids[key] == ce_id:
                        self.redelivered += 1
                    else:
                        self.duplicates += 1

    async def wait_for(
        self, ids: Sequence[str], timeout_s: float, alive: Callable[[], None]
    ) -> list[str]:
        """Wait until every id has arrived or ``timeout_s`` passed; returns the missing ones."""
        missing = set(ids)
        deadline = time.monotonic() + timeout_s
        while True:
            missing = {i for i in missing if i not in self.seen}
            if not missing or time.monotonic() > deadline:
                return sorted(missing)
            if self._task is not None and self._task.done():
                raise RuntimeError(f"observer stopped: {self._task.exception()!r}")
            alive()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


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


def match_ce_id(record: Any, counts: Counter[str]) -> str | None:
    return header(record, "ce_id")


# --- open-loop sending ------------------------------------------------------------------------


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
        s.start, s.start_wall_ns = time.perf_counter(), now_wall_ns()
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


# --- one measured phase ------------------------------------------------------------------------


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


# --- child processes ---------------------------------------------------------------------------


class Child:
    """A process we started; stopped with SIGTERM (SIGKILL only if it does not exit in time)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self._argv = argv
        self._env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.killed = False

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._argv,
                cwd=REPO,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited early with {self.proc.returncode}:\n{self.tail()}"
            )

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        self.exit_code = self.proc.returncode
        return self.exit_code

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- the hop worker of the floor (runs as its own process: --hop-worker) -----------------------


async def hop_worker(bootstrap: str, src: str, dst: str, group: str, linger_ms: int) -> None:
    """Consume ``src``, produce each record to ``dst`` (idempotent, acks=all), commit offsets:
    the artifacts service's Kafka work, minus Postgres. Stops on SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=f"{group}-consumer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=f"{group}-producer",
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
    )
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            futures = [
                await producer.send(dst, value=r.value, key=r.key, headers=list(r.headers))
                for records in batches.values()
                for r in records
            ]
            await asyncio.gather(*futures)
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batches.items()})
    finally:
        await producer.stop()
        await consumer.stop()


# --- machine -----------------------------------------------------------------------------------


def kafka_version() -> str | None:
    pom = REPO / "infra" / "pom.xml"
    with contextlib.suppress(OSError):
        found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
        if found:
            return found.group(1).strip()
    libs = REPO / ".lockstep" / "kafka" / "libs"
    for jar in sorted(libs.glob("kafka-clients-*.jar")) if libs.is_dir() else []:
        return jar.name.removeprefix("kafka-clients-").removesuffix(".jar")
    return None


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def memory_mib() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages: anything else busy on the machine shows here."""
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


async def machine_info(settings: Settings) -> dict[str, Any]:
    conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
    try:
        pg_version = await conn.fetchval("SELECT version()")
        pg_settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay")
        }
    finally:
        await conn.close()
    libs = {}
    for dist in ("aiokafka", "asyncpg", "pydantic", "opentelemetry-sdk"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            libs[dist] = importlib.metadata.version(dist)
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_mib": memory_mib(),
        "python": platform.python_version(),
        "kafka_version": kafka_version(),
        "postgres_version": pg_version,
        "postgres_settings": pg_settings,
        "libraries": libs,
        "git": git_revision(),
        "loadavg_at_start": loadavg(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def postmaster_start(settings: Settings) -> datetime:
    conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
    try:
        started: datetime = await conn.fetchval("SELECT pg_postmaster_start_time()")
    finally:
        await conn.close()
    return started


async def pg_commit_probe(settings: Settings, n: int = 200) -> dict[str, float]:
    """What one small INSERT + COMMIT costs on this Postgres (the WAL flush per transaction)."""
    schema = f"{settings.namespace}_probe"
    conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".t (id bigserial PRIMARY KEY, v text)')
        timings = []
        for i in range(n):
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute(f'INSERT INTO "{schema}".t (v) VALUES ($1)', str(i))
            timings.append((time.perf_counter() - t0) * 1000)
    finally:
        await conn.close()
    return summary_ms(timings)


# --- the bench ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, settings: Settings, tmp: Path) -> None:
        self.args = args
        self.settings = settings
        self.tmp = tmp
        self.ns = settings.namespace
        self.floor_topics = [f"{self.ns}.bench_floor_in", f"{self.ns}.bench_floor_out"]
        self.hop_group = f"{self.ns}.bench-hop"
        self.children: list[Child] = []
        self.closers: list[Callable[[], Awaitable[Any]]] = []
        self.factory: EventFactory | None = None
        self.cleanup_errors: list[str] = []

    # -- set-up --

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
        env.update(
            LOCKSTEP_NAMESPACE=self.ns,
            LOCKSTEP_TRACE_DIR=str(self.tmp / "traces"),
            LOCKSTEP_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        return env

    async def run(self) -> dict[str, Any]:
        settings = self.settings
        result: dict[str, Any] = {"namespace": self.ns}
        result["machine"] = await machine_info(settings)
        pg_started = await postmaster_start(settings)
        await ensure_topics(settings)
        artifacts = await partitions_of(settings, [settings.topic(topics.ARTIFACTS)])
        await wait_for_leaders(settings.kafka_bootstrap, settings.all_topics())
        self.factory = EventFactory(self.ns, service_names(len(artifacts)))
        result["postgres_commit_probe_ms"] = await pg_commit_probe(settings)
        if self.args.find_max:
            result["find_max"] = await self.lockstep(artifacts, find_max=True)
        else:
            result["lockstep"] = await self.lockstep(artifacts, find_max=False)
            if not self.args.no_floor:
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

    # -- the Lockstep path --

    async def lockstep(self, partitions: list[TopicPartition], *, find_max: bool) -> dict[str, Any]:
        assert self.factory is not None
        factory, settings, args = self.factory, self.settings, self.args
        observer = Observer(settings.kafka_bootstrap, partitions, match_published)
        await observer.start()
        self.closers.append(observer.stop)
        service = Child(
            "artifacts service",
            shlex.split(args.service_cmd)
            if args.service_cmd
            else [sys.executable, "-m", "cli", "run", "artifacts"],
            self.child_env(),
            self.tmp / "artifacts-service.log",
        )
        self.children.append(service)
        service.start()
        phases: list[Phase] = []
        out: dict[str, Any] = {}
        async with Publisher(settings, client_id="bench-ci") as publisher:

            def make_item() -> Item:
                event = factory.next()
                return event.id, lambda: publisher.publish(event)

            out["ready_s"] = await self.probe(make_item, observer, service.alive)
            if find_max:
                steps: list[dict[str, Any]] = []
                for rate in args.steps:
                    say(f"lockstep: {rate:g}/s for {args.step_seconds:g}s (+{args.step_warmup:g}s)")
                    phase = await run_phase(
                        "lockstep",
                        rate=rate,
                        warmup_s=args.step_warmup,
                        seconds=args.step_seconds,
                        make_item=make_item,
                        observer=observer,
                        drain_timeout_s=args.drain_timeout,
                        alive=service.alive,
                        worker_pid=service.pid,
                    )
                    phases.append(phase)
                    f = phase.figures
                    f["throughput_kept"] = (
                        f["lost"] == 0
                        and f["send_errors"] == 0
                        and f["throughput_per_s"] >= KEEP_UP_SHARE * rate
                    )
                    f["keeps_up"] = f["throughput_kept"] and f["latency_ms"]["p99"] < KEEP_UP_P99_MS
                    steps.append(f)
                    say(step_line(f))
                    if not f["throughput_kept"]:
                        break  # saturated: the backlog only grows from here
                # the highest rate such that it and every lower step kept up
                sustained = 0.0
                for f in steps:
                    if not f["keeps_up"]:
                        break
                    sustained = f["offered_rate"]
                out["steps"] = steps
                out["sustained_releases_per_s"] = sustained
                out["max_registered_per_s"] = max(f["throughput_per_s"] for f in steps)
                out["criterion"] = (
                    f"registered/s >= {KEEP_UP_SHARE:.0%} of offered, p99 < {KEEP_UP_P99_MS:g} ms, "
                    "nothing lost (stepping goes on while throughput keeps up)"
                )
            else:
                say(f"lockstep: {args.rate:g}/s for {args.seconds:g}s (+{args.warmup:g}s warm-up)")
                phase = await run_phase(
                    "lockstep",
                    rate=args.rate,
                    warmup_s=args.warmup,
                    seconds=args.seconds,
                    make_item=make_item,
                    observer=observer,
                    drain_timeout_s=args.drain_timeout,
                    alive=service.alive,
                    worker_pid=service.pid,
                )
                phases.append(phase)
                out["figures"] = phase.figures
        out["rejected"] = observer.counts["rejected"]
        out["duplicates"] = observer.duplicates
        out["redelivered"] = observer.redelivered
        out["service_exit_code"] = await service.stop()
        out["service_killed"] = service.killed
        if service.exit_code != 0:
            out["service_log_tail"] = service.tail()
        await observer.stop()
        self.closers.remove(observer.stop)
        spans = {
            s["attributes"].get("cloudevents.event_id"): s
            for s in read_spans(self.tmp / "traces")
            if s.get("name") == "process artifact.packaged"
        }
        for phase, target in zip(
            phases, out["steps"] if find_max else [out["figures"]], strict=True
        ):
            target["stages_ms"] = lockstep_stages(phase, observer, spans)
        return out

    # -- the floor --

    async def floor(self) -> dict[str, Any]:
        assert self.factory is not None
        factory, settings, args = self.factory, self.settings, self.args
        src, dst = self.floor_topics
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap, client_id="bench-admin"
        )
        await admin.start()
        try:  # partitions and replication as ensure_topics makes them
            brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
            await admin.create_topics(
                [
                    NewTopic(t, settings.topic_partitions, max(1, min(3, brokers)))
                    for t in self.floor_topics
                ]
            )
        finally:
            await admin.close()
        partitions = await partitions_of(settings, [dst])
        await wait_for_leaders(settings.kafka_bootstrap, self.floor_topics)
        observer = Observer(settings.kafka_bootstrap, partitions, match_ce_id)
        await observer.start()
        self.closers.append(observer.stop)
        hop = Child(
            "floor hop",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--hop-worker",
                f"--hop-src={src}",
                f"--hop-dst={dst}",
                f"--hop-group={self.hop_group}",
                f"--hop-bootstrap={settings.kafka_bootstrap}",
                f"--hop-linger-ms={settings.producer_linger_ms}",
            ],
            self.child_env(),
            self.tmp / "floor-hop.log",
        )
        self.children.append(hop)
        hop.start()
        producer = AIOKafkaProducer(  # what ReliableProducer builds, minus its wrapper
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="bench-floor-producer",
            enable_idempotence=True,
            acks="all",
            linger_ms=settings.producer_linger_ms,
        )
        await producer.start()
        self.closers.append(producer.stop)
        sizes: list[int] = []

        def make_item() -> Item:
            record = encode(factory.next(), topic=src)
            sizes.append(len(record.value or b""))

            async def send() -> None:
                future = await producer.send(
                    src, value=record.value, key=record.key, headers=list(record.headers)
                )
                await future

            return header(record, "ce_id") or "", send

        out: dict[str, Any] = {}
        out["ready_s"] = await self.probe(make_item, observer, hop.alive)
        say(f"floor: {args.rate:g}/s for {args.seconds:g}s (+{args.warmup:g}s warm-up)")
        phase = await run_phase(
            "floor",
            rate=args.rate,
            warmup_s=args.warmup,
            seconds=args.seconds,
            make_item=make_item,
            observer=observer,
            drain_timeout_s=args.drain_timeout,
            alive=hop.alive,
            worker_pid=hop.pid,
        )
        out["figures"] = phase.figures
        out["figures"]["stages_ms"] = floor_stages(phase, observer)
        out["value_bytes"] = round(sum(sizes) / len(sizes)) if sizes else None
        out["duplicates"] = observer.duplicates
        out["redelivered"] = observer.redelivered
        await producer.stop()
        self.closers.remove(producer.stop)
        await observer.stop()
        self.closers.remove(observer.stop)
        out["hop_exit_code"] = await hop.stop()
        if hop.exit_code != 0:
            out["hop_log_tail"] = hop.tail()
        return out

    # -- clean-up: always, each step bounded --

    async def cleanup(self) -> None:
        for child in self.children:
            with contextlib.suppress(Exception):
                await child.stop()
        for close in reversed(self.closers):
            await self._try("close a client", close(), 15)
        await self._try("delete namespace topics", delete_namespace_topics(self.settings), 30)
        await self._try("delete floor topics", self._delete_floor_topics(), 30)
        await self._try("drop Postgres schemas", drop_namespace_schemas(self.settings), 30)
        await self._try("delete consumer groups", self._delete_groups(), 30)

    async def _try(self, what: str, work: Awaitable[Any], timeout_s: float) -> None:
        try:
            await asyncio.wait_for(work, timeout_s)
        except Exception as exc:
            self.cleanup_errors.append(f"{what}: {type(exc).__name__}: {exc}")

    async def _delete_floor_topics(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.kafka_bootstrap, client_id="bench-admin"
        )
        await admin.start()
        try:
            doomed = [t for t in self.floor_topics if t in set(await admin.list_topics())]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()

    async def _delete_groups(self) -> None:
        await delete_groups(self.settings, [self.settings.group_id("artifacts"), self.hop_group])


async def delete_groups(settings: Settings, groups: list[str]) -> None:
    """Remove a run's consumer groups (aiokafka has no public call: DeleteGroupsRequest)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="bench-admin")
    await admin.start()
    try:
        existing = {g[0] for g in await admin.list_consumer_groups()}
        for group in (g for g in groups if g in existing):
            coordinator = await admin.find_coordinator(group)
            await admin._send_request(DeleteGroupsRequest([group]), coordinator)
    finally:
        await admin.close()


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
    return {k: {"p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)} for k, v in parts.items()}


def floor_stages(phase: Phase, observer: Observer) -> dict[str, Any]:
    parts: dict[str, list[float]] = {"to_hop_send": [], "hop_send_to_observed": []}
    for event_id in phase.measured:
        s, a = phase.sent[event_id], observer.seen.get(event_id)
        if a is None or not s.start_wall_ns:
            continue
        created_ns = a.created_ms * 1_000_000
        parts["to_hop_send"].append((created_ns - s.start_wall_ns) / 1e6)
        parts["hop_send_to_observed"].append((a.wall_ns - created_ns) / 1e6)
    return {k: {"p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)} for k, v in parts.items()}


# --- output ------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def step_line(f: dict[str, Any]) -> str:
    lat = f["latency_ms"]
    return (
        f"  offered {f['offered_rate']:>6g}/s  sent {f['achieved_publish_rate']:>7}/s  "
        f"registered {f['throughput_per_s']:>7}/s  p50 {lat['p50']:.1f}  p99 {lat['p99']:.1f}  "
        f"max {lat['max']:.1f} ms  lost {f['lost']}  -> "
        + (
            "keeps up"
            if f["keeps_up"]
            else ("p99 too high" if f["throughput_kept"] else "saturated")
        )
    )


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.1f}"
    return str(value)


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


def grid(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [list(head), *[[fmt(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def failures(result: dict[str, Any]) -> list[str]:
    """What makes the run fail: lost events, publish errors, a process not exiting 0."""
    found = []
    for name in ("lockstep", "floor", "find_max"):
        block = result.get(name)
        if not block:
            continue
        checked = block["steps"] if name == "find_max" else [block["figures"]]
        for n, f in enumerate(checked):
            # --find-max: the last step may be the overloaded one; it may not drain in time
            overloaded_last = (
                name == "find_max" and n == len(checked) - 1 and not f["throughput_kept"]
            )
            if f["lost"] and not overloaded_last:
                found.append(f"{name}: {f['lost']} event(s) never announced")
            if f["send_errors"]:
                found.append(f"{name}: {f['send_errors']} publish error(s)")
            if f.get("client_warnings"):
                found.append(
                    f"{name}: Kafka clients logged {f['client_warnings']} warning(s) during a "
                    "measured phase (broker restart or leader change?): figures are disturbed"
                )
        for key in ("service_exit_code", "hop_exit_code"):
            if key in block and block[key] != 0:
                found.append(f"{name}: {key} = {block[key]}")
        if block.get("duplicates"):
            found.append(f"{name}: {block['duplicates']} duplicate announcement(s)")
    if result.get("postgres_restarted"):
        found.append("Postgres restarted during the run: figures are disturbed")
    return found


def jsonable(value: Any) -> Any:
    """NaN (no data) as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (3)")
    p.add_argument("--out", type=Path, help="JSON result (default bench/results/<stamp>.json)")
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
    p.add_argument("--hop-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hop-src", help=argparse.SUPPRESS)
    p.add_argument("--hop-dst", help=argparse.SUPPRESS)
    p.add_argument("--hop-group", help=argparse.SUPPRESS)
    p.add_argument("--hop-bootstrap", help=argparse.SUPPRESS)
    p.add_argument("--hop-linger-ms", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.warmup < 0 or any(r <= 0 for r in args.steps):
        p.error("rates and durations must be positive")
    return args


async def main_async(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    tmp = Path(tempfile.mkdtemp(prefix="lockstep-bench-"))
    # Client-library chatter (aiokafka retries) goes to a file; its tail is shown on failure.
    log_file = tmp / "bench.log"
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(log_file), WARNINGS],
    )
    settings = Settings(namespace="bench_" + uuid.uuid4().hex[:8], trace_dir=tmp / "traces")
    check_loopback(settings)
    bench = Bench(args, settings, tmp)
    say(f"namespace {settings.namespace}; temp dir {tmp}")
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(args.timeout):
            result = await bench.run()
    except TimeoutError:
        error = f"overall timeout of {args.timeout:g}s reached"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        say("cleaning up (processes, topics, consumer groups, schemas)…")
        await bench.cleanup()
        for child in bench.children:
            if child.exit_code not in (0, None) or child.killed:
                say(f"{child.name}: exit code {child.exit_code}; log tail:\n{child.tail()}")
        if error is not None:
            with contextlib.suppress(OSError):
                lines = log_file.read_text(errors="replace").splitlines()
                if lines:
                    say(f"last client-library messages ({len(lines)} in all):")
                    say("\n".join(lines[-15:]))
        if args.keep_temp:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if error is not None or result is None:
        say(f"bench failed: {error}")
        for message in bench.cleanup_errors:
            say(f"clean-up: {message}")
        return 1
    result["machine"]["loadavg_at_end"] = loadavg()
    result["args"] = {k: v for k, v in vars(args).items() if not k.startswith("hop")}
    result["args"]["out"] = str(args.out) if args.out else None
    result["cleanup_errors"] = bench.cleanup_errors
    problems = failures(result) + [f"clean-up: {m}" for m in bench.cleanup_errors]
    result["problems"] = problems
    out = args.out
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        mode = "find-max" if args.find_max else f"rate{args.rate:g}"
        out = RESULTS / f"artifacts_latency-{stamp}-{mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(jsonable(result), indent=2, default=str) + "\n")
    print(table(result))
    print(f"\nresult written to {out}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.hop_worker:
        asyncio.run(
            hop_worker(
                args.hop_bootstrap, args.hop_src, args.hop_dst, args.hop_group, args.hop_linger_ms
            )
        )
        return 0
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted (cleaned up)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
