"""The chaos suite: the real processes on a Kafka and a Postgres of the run's own, killed on
purpose, and the topics counted afterwards.

    .venv/bin/python bench/chaos.py [--releases 1000] [--rate 10] [--kill-every 4]
                                    [--scenarios chain,fuzz,leader] [--leader-releases 200]
                                    [--flag-every 10] [--incident-every 20]

Scenarios (each on loopback only, bounded by --limit-s):

- ``chain``: N releases (a unique service each, tests then the build) through artifacts ->
  gates -> promotion -> deployer at --rate, while every --kill-every seconds one of the
  processes (artifacts, gates, promotion, flags, incidents, the deployer) gets SIGKILL; the
  broker is killed (SIGKILL) and restarted once, Postgres stopped (immediate) and started once.
  Meanwhile a platform team changes flags through the flags admin API (HTTP, an admin key from
  ``lockstep flags keys create``): one change per --flag-every releases' time, from the first
  release until the last kill and outage are over; a call that fails is made again, the same
  request (a PUT of a whole definition, or enable/disable: again, it changes nothing), for up
  to 120 s, and a change counts once a call for it was answered 2xx (the API has no
  idempotency key). And for one in --incident-every releases, once its ``service.deployed`` is
  on the topic and the incidents service has committed past it, two ``signal.observed`` breach
  the model's rollback criterion (error_rate > 0.05, tolerate 1, hold 30s, within 30m).
  Then, from the topics: for each release one ``promotion.approved``, for each promotion one
  ``service.deployed``, for each acknowledged flag change one ``flag.changed``, for each
  breached service one ``incident.detected`` and one ``rollback.requested`` (expected, exactly
  once, lost, duplicated).
- ``fuzz``: malformed records of 80 kinds (raw aiokafka) on the topics the services read, and
  malformed HTTP requests to the flags and incidents edges; then good releases that must all
  flow. For each kind: its dead letter (and reason), its answer event, or nothing.
- ``leader``: the same chain on a three-broker cluster (``lockstep-infra up --brokers 3``:
  replication 3, min.insync.replicas 2) whose leader of the input topic's partition 0 is killed
  mid-stream: every acknowledged release flows, nothing twice.

The run fails (exit 1) on any loss, duplicate, unacknowledged or refused flag change, breach
never signalled, crash loop (a process that exits again and again without being killed), stuck
partition (a group's committed offset unmoved for --stuck-s with lag), unanswered malformed
kind or 5xx/no answer at an edge. The figures go to
``bench/results/chaos-<UTC stamp>.json``. Everything it made (topics, groups, schemas,
processes, its Kafka and Postgres) is removed at the end, also on failure and Ctrl-C.
Not covered yet: the slow network (tc netem; the run records whether the machine has it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # noqa: F401 - first: it puts the repository on sys.path
from chaos import count, fuzz
from chaos.infra import OwnKafka, OwnPostgres, free_port, netem_available
from chaos.platform import Breaches, FlagChanges, Platform, publish_retrying
from chaos.procs import CRASH_LOOP, Supervisor
from harness.machine import cpu_model, git_revision, kafka_version, loadavg, memory_mib
from harness.report import say
from harness.results import write_result
from harness.run import Run, guarded
from harness.run import main as run_main

from events import (
    ArtifactPackaged,
    ArtifactRef,
    PromotionApproved,
    ServiceDeployed,
    TestSuiteRunFinished,
    topics,
)
from policy import load_text, policy_updated
from shared.bus import Publisher
from shared.bus.admin import ensure_topics
from shared.bus.kafka_client import kafka_producer

REPO = Path(__file__).resolve().parents[1]
MODEL = b"""\
version: 1
environments:
  - name: dev
gates:
  dev:
    criteria:
      - evidence: tests
        key: true
rollback:
  - name: chaos-errors
    metric: error_rate
    threshold: 0.05
    hold: 30s
    tolerate: 1
    within: 30m
"""
KINDS = ("artifacts", "gates", "promotion", "flags", "incidents", "deployer")
ANSWER_TYPES = ("rejected", "published", "recorded", "detected", "changed", "observed")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--releases", type=int, default=1000, help="releases in the chain scenario")
    p.add_argument("--rate", type=float, default=10.0, help="releases per second")
    p.add_argument("--kill-every", type=float, default=4.0, help="seconds between SIGKILLs")
    p.add_argument("--scenarios", default="chain,fuzz,leader", help="any of chain,fuzz,leader")
    p.add_argument("--leader-releases", type=int, default=200)
    p.add_argument(
        "--flag-every",
        type=int,
        default=10,
        help="a flag change per this many releases' time (0: none)",
    )
    p.add_argument(
        "--incident-every",
        type=int,
        default=20,
        help="breach the rollback criterion for one in this many releases (0: none)",
    )
    p.add_argument("--fuzz-good", type=int, default=20, help="good releases after the fuzz")
    p.add_argument("--stuck-s", type=float, default=90.0, help="lag unmoved this long: stuck")
    p.add_argument("--drain-s", type=float, default=600.0, help="most time to drain a scenario")
    p.add_argument("--limit-s", type=float, default=3600.0, help="the whole run's time limit")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep-temp", action="store_true", help="keep the logs' temp dir")
    p.add_argument("--out", type=Path, default=None, help="result file (default: dated)")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in wanted if s not in ("chain", "fuzz", "leader")]
    if bad or not wanted:
        p.error(
            f"--scenarios takes chain, fuzz and leader (comma-separated), not {bad or 'nothing'}"
        )
    if args.releases < 1 or args.leader_releases < 1 or args.rate <= 0 or args.kill_every <= 0:
        p.error("--releases/--leader-releases must be >= 1, --rate and --kill-every above 0")
    if args.flag_every < 0 or args.incident_every < 0:
        p.error("--flag-every and --incident-every must be >= 0 (0: none)")
    args.scenarios = wanted
    return args


def credentials_of(kafka: OwnKafka, pg: OwnPostgres) -> Path:
    """One ``LOCKSTEP_CREDENTIALS_DIR`` for a scenario, as ``infra/lockstep-infra up`` keeps
    it: the Kafka users' passwords of its own Kafka (``kafka.json``) and the service roles'
    of the run's Postgres (``postgres.json``), linked from where each was made."""
    where = pg.dir / f"credentials-{kafka.port}"
    if not where.exists():
        where.mkdir(mode=0o700)
        (where / "kafka.json").symlink_to(kafka.credentials_dir / "kafka.json")
        (where / "postgres.json").symlink_to(pg.credentials_dir / "postgres.json")
    return where


class Mesh:
    """One namespace on one Kafka and Postgres with the six processes supervised."""

    def __init__(self, run: Run, kafka: OwnKafka, pg: OwnPostgres, t0: float) -> None:
        self.run, self.kafka, self.pg = run, kafka, pg
        self.settings = run.settings
        self.flags_port = free_port(18470)
        self.incidents_port = free_port(self.flags_port + 1)
        self.webhook_token = secrets.token_urlsafe(16)  # the webhooks are closed without one
        env = run.env(
            LOCKSTEP_KAFKA_BOOTSTRAP=kafka.bootstrap,
            LOCKSTEP_PG_DSN=pg.dsn,
            # each service its own Kafka user and Postgres role
            LOCKSTEP_CREDENTIALS_DIR=str(credentials_of(kafka, pg)),
            LOCKSTEP_FLAGS_HTTP_PORT=str(self.flags_port),
            LOCKSTEP_INCIDENTS_HTTP_PORT=str(self.incidents_port),
            LOCKSTEP_INCIDENTS_WEBHOOK_TOKEN=self.webhook_token,
            LOCKSTEP_FLAGD_SCHEMA_DIR=str(REPO / ".lockstep" / "flagd-schemas"),
        )
        self.env = env
        self.sup = Supervisor(t0)
        for name in KINDS[:-1]:
            self.sup.add(name, ["run", name], env, run.tmp / f"{name}.log")
        self.sup.add(
            "deployer",
            ["deployer", "--agent", "chaos", "--env", "dev", "--state-dir",
             str(run.tmp / "deployed")],
            env, run.tmp / "deployer.log",
        )  # fmt: skip
        self.acked: dict[str, str] = {}  # service -> version of the releases Kafka acknowledged
        self.unacked: list[str] = []
        self.send_s = 0.0  # how long the last send_releases took (the rate it reached)

    async def start(self) -> None:
        await ensure_topics(self.settings)
        async with Publisher(
            self.settings, client_id="chaos-platform", signing_key=self.run.key("platform")
        ) as pub:
            await pub.publish(policy_updated(load_text(MODEL), updated_by="chaos"))
        self.sup.start()
        self.run.closing(self.sup.stop)

    async def send_releases(
        self, n: int, rate: float, tag: str, on_acked: Callable[[int, str], None] | None = None
    ) -> None:
        """Open loop at ``rate``; a publish that fails is tried again (the same event: an inbox
        skips it if it did arrive) for up to 120 s, then the release counts as unacknowledged.
        ``on_acked(i, service)`` for each release Kafka acknowledged."""
        t0 = time.monotonic()
        suffix = self.settings.namespace[-6:]
        async with Publisher(self.settings, client_id="chaos-ci") as pub:
            for i in range(n):
                due = t0 + i / rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                service, version = f"{tag}-{suffix}-{i:05d}", "1.0.0"
                ref = ArtifactRef(service, version, fuzz_digest(service))
                tests = TestSuiteRunFinished.build(artifact=ref, suite="chaos", outcome="success")
                packaged = ArtifactPackaged.build(
                    service=service, version=version, digest=ref.digest or "", commit="c0ffee",
                    source="chaos/ci",
                )  # fmt: skip
                if await publish_retrying(pub, [tests, packaged], say):
                    self.acked[service] = version
                    if on_acked is not None:
                        on_acked(i, service)
                else:
                    self.unacked.append(service)
                self.send_s = time.monotonic() - t0
                if i and i % 100 == 0:
                    say(f"{tag}: {i}/{n} releases sent ({len(self.unacked)} unacknowledged)")

    async def tallies(self) -> tuple[count.Tally, count.Tally]:
        approved = count.Tally(
            "promotion.approved", {f"{s}@{v}@dev" for s, v in self.acked.items()}
        )
        promo_ids: set[str] = set()
        ce_ids: set[str] = set()
        for _raw, event in count.decoded(await count.read_all(self.settings, topics.PROMOTIONS)):
            if isinstance(event, PromotionApproved):
                c = event.subject.content
                approved.note(f"{c.service}@{c.version}@{c.environment}", c.promotion_id,
                              event.context.id, ce_ids)  # fmt: skip
                promo_ids.add(c.promotion_id)
        deployed = count.Tally("service.deployed", promo_ids)
        dep_ids: set[str] = set()
        for _raw, event in count.decoded(await count.read_all(self.settings, topics.DEPLOYMENTS)):
            if isinstance(event, ServiceDeployed):
                deployed.note(str(event.custom_data.promotion_id), event.context.id,
                              event.context.id, dep_ids)  # fmt: skip
        return approved, deployed

    async def drain(
        self, args: argparse.Namespace, platform: Platform | None = None
    ) -> dict[str, Any]:
        """Until every expected event is on its topic (and, with ``platform``, every breach
        signalled), a partition is stuck, or --drain-s; then the tallies."""
        lag = count.Lag(self.settings, args.stuck_s)

        async def done() -> bool:
            approved, deployed = await self.tallies()
            if approved.figures()["lost"] or deployed.figures()["lost"]:
                return False
            if platform is None:
                return True
            if not platform.ready:
                return False
            return Platform.lost(*await platform.figures()) == 0

        drained, stuck, lags = await count.wait_drained(lag, done, args.drain_s, say)
        await asyncio.sleep(5)  # room for a duplicate to show
        approved, deployed = await self.tallies()
        extra: dict[str, Any] = {}
        if platform is not None:
            extra["flag_changes"], extra["incidents"] = await platform.figures()
        return {
            "drained": drained,
            "stuck_partitions": stuck,
            "lag_at_end": lags,
            "sending_s": round(self.send_s, 1),
            "acknowledged_releases": len(self.acked),
            "unacknowledged_releases": len(self.unacked),
            "promotion_approved": approved.figures(),
            "service_deployed": deployed.figures(),
            **extra,
        }


def fuzz_digest(seed: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


async def chaos_loop(mesh: Mesh, args: argparse.Namespace, rng: random.Random,
                     span_s: float, log: list[dict[str, Any]], *, broker: str) -> None:  # fmt: skip
    """SIGKILL a random process every --kill-every s (each kind at least once), the broker
    once at a third of ``span_s``, Postgres once at two thirds."""
    t0 = time.monotonic()
    order = list(mesh.sup.procs)
    rng.shuffle(order)
    broker_done = pg_done = False
    while True:
        await asyncio.sleep(args.kill_every)
        at = time.monotonic() - t0
        if order:  # each kind once first, then at random
            proc = order.pop()
            mesh.sup.kill(proc)
        else:
            proc = mesh.sup.kill_random(rng)
        log.append({"at_s": round(at, 1), "kill": proc.name})
        if not broker_done and at > span_s / 3:
            broker_done = True
            await kill_broker(mesh, log, at, broker)
        if not pg_done and at > 2 * span_s / 3:
            pg_done = True
            log.append({"at_s": round(at, 1), "postgres": "stop -m immediate"})
            await pg_outage(mesh)
            log.append({"at_s": round(time.monotonic() - t0, 1), "postgres": "started"})


async def pg_outage(mesh: Mesh) -> None:
    mesh.sup.outage_begin()
    try:
        await mesh.pg.stop_immediate()
        await asyncio.sleep(5)
    finally:
        await mesh.pg.start()
        mesh.sup.outage_end()


async def kill_broker(mesh: Mesh, log: list[dict[str, Any]], at: float, broker: str) -> None:
    node = 1
    if broker == "leader":
        node = await mesh.kafka.leader_of(mesh.settings.topic(topics.ARTIFACTS), 0)
    if broker != "leader":  # a cluster stays up when one node goes
        mesh.sup.outage_begin()
    try:
        pid = await mesh.kafka.kill(node)
        log.append({"at_s": round(at, 1), "broker": f"SIGKILL node {node} (pid {pid}, {broker})"})
        await asyncio.sleep(10 if broker == "leader" else 5)
    finally:
        await mesh.kafka.restart_missing()
        if broker != "leader":
            mesh.sup.outage_end()
    log.append({"at_s": round(at, 1), "broker": f"node {node} started again"})


async def chain(mesh: Mesh, args: argparse.Namespace, rng: random.Random, n: int,
                tag: str, broker: str) -> dict[str, Any]:  # fmt: skip
    span = n / args.rate
    events: list[dict[str, Any]] = []
    suffix = mesh.settings.namespace[-6:]
    platform = Platform(
        FlagChanges(mesh.env, mesh.flags_port, tag, say),
        Breaches(mesh.settings, args.incident_every, say),
        mesh.settings, f"{tag}-{suffix}-",
    )  # fmt: skip
    await platform.flags.prepare()  # the admin key, before anything is killed
    changes_n = -(-n // args.flag_every) if args.flag_every else 0
    say(
        f"{tag}: {n} releases at {args.rate:g}/s (~{span:.0f}s) with kills; "
        f"{changes_n}+ flag changes, a breach per {args.incident_every or 'no'} releases"
    )
    killer = asyncio.create_task(chaos_loop(mesh, args, rng, span, events, broker=broker))
    enough_changes, stop_breaches = asyncio.Event(), asyncio.Event()
    changer = asyncio.create_task(
        platform.flags.run(args.flag_every / args.rate if args.flag_every else 0.0,
                           changes_n, enough_changes)
    )  # fmt: skip
    if not args.flag_every:
        enough_changes.set()
    breacher = asyncio.create_task(platform.breaches.run(stop_breaches))
    try:
        await chain_under_chaos(mesh, args, n, tag, broker, span, events, platform, killer)
        # the flag changes went on through the kills and outages after the sending
        enough_changes.set()
        await changer
        say(f"{tag}: sent, {len(platform.flags.calls)} flag changes made; draining")
        out = await mesh.drain(args, platform)
    finally:
        enough_changes.set()
        stop_breaches.set()
        failed: list[str] = []
        for what, task in (("chaos", killer), ("flag changes", changer), ("breaches", breacher)):
            if not task.done():
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                failed.append(f"{what}: {type(exc).__name__}: {exc}")
    out["chaos"] = events
    out["driver_errors"] = failed
    return out


async def chain_under_chaos(
    mesh: Mesh, args: argparse.Namespace, n: int, tag: str, broker: str, span: float,
    events: list[dict[str, Any]], platform: Platform, killer: asyncio.Task[None],
) -> None:  # fmt: skip
    try:
        await mesh.send_releases(n, args.rate, tag, platform.breaches.consider)
    finally:
        platform.breaches.sending_done.set()
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
    # at least one kill of each kind, the broker and Postgres, even if the sending was quick
    killed = {e.get("kill") for e in events}
    for proc in mesh.sup.procs:
        if proc.name not in killed:
            mesh.sup.kill(proc)
            events.append({"at_s": "after", "kill": proc.name})
    if not any("broker" in e for e in events):
        await kill_broker(mesh, events, span, broker)
    if not any("postgres" in e for e in events):
        await pg_outage(mesh)
        events.append({"at_s": "after", "postgres": "stop -m immediate, started"})


async def fuzz_pass(mesh: Mesh, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    records = fuzz.records()
    say(f"fuzz: {len(records)} malformed records of {len(fuzz.kinds())} kinds")
    crashes_before = {p.name: len(p.crashes) for p in mesh.sup.procs}
    producer = kafka_producer(
        mesh.settings, acks="all", max_request_size=8 * 1024 * 1024,
        client_id="chaos-fuzz",
    )  # fmt: skip
    sent: dict[str, str] = {}
    own: set[tuple[str, int, int]] = set()
    await producer.start()
    try:
        for f in records:
            try:
                headers = [(k, v if v is not None else None) for k, v in f.headers]
                meta = await producer.send_and_wait(
                    mesh.settings.topic(f.topic),
                    value=f.value,
                    key=f.key,
                    headers=headers,
                )
                own.add((meta.topic, meta.partition, meta.offset))
                sent[f.kind] = "sent"
            except Exception as exc:
                sent.setdefault(
                    f.kind, f"not sent: the producer refused it ({type(exc).__name__}: {exc})"
                )
    finally:
        await producer.stop()
    http: dict[str, Any] = {}
    ports = {"flags": mesh.flags_port, "incidents": mesh.incidents_port}
    async with httpx.AsyncClient(timeout=30) as client:
        for case in fuzz.http_cases():
            url = f"http://127.0.0.1:{ports[case.edge]}{case.path}"
            try:
                headers = dict(case.headers)
                if case.edge == "incidents" and case.token:
                    headers["authorization"] = f"Bearer {mesh.webhook_token}"
                r = await client.request(case.method, url, content=case.body, headers=headers)
                body = r.text[:300]
                clear = 400 <= r.status_code < 500 and bool(body.strip())
                http[case.kind] = {"status": r.status_code, "body": body, "clear_error": clear}
            except Exception as exc:
                http[case.kind] = {"status": None, "error": f"{type(exc).__name__}: {exc}",
                                   "clear_error": False}  # fmt: skip
    say("fuzz: sending good releases that must all flow")
    mesh.acked.clear()
    await mesh.send_releases(args.fuzz_good, args.rate, "good")
    drained = await mesh.drain(args)
    # what answered each kind: a dead letter (its reason) or an event naming fuzz-<kind>
    answers: dict[str, list[str]] = {f.kind: [] for f in records}
    for raw in await count.read_all(mesh.settings, topics.DLQ):
        key = raw.key or b""
        for kind in answers:
            if f"fuzz:{kind}".encode() == key[-len(f"fuzz:{kind}") :]:
                reason = {
                    k[len(topics.DLQ_HEADER_PREFIX) :]: (v or b"").decode(errors="replace")
                    for k, v in raw.headers if k.startswith(topics.DLQ_HEADER_PREFIX)
                }  # fmt: skip
                answers[kind].append(
                    f"dlq[{reason.get('group', '?')}/{reason.get('stage', '?')}]: "
                    f"{reason.get('error', '?')[:200]}"
                )
    for logical in topics.ALL:
        if logical == topics.DLQ:
            continue
        for raw in await count.read_all(mesh.settings, logical):
            if (raw.topic, raw.partition, raw.offset) in own:
                continue
            ce_type = count.header(raw, "ce_type") or ""
            value = raw.value or b""
            for kind in answers:
                if f"fuzz-{kind}".encode() in value and any(t in ce_type for t in ANSWER_TYPES):
                    answers[kind].append(f"event {ce_type}")
    may_ignore = {f.kind for f in records if f.may_be_ignored}
    kinds = {}
    for kind, found in answers.items():
        kinds[kind] = {
            "sent": sent.get(kind),
            "answers": sorted(Counter(found).keys())[:5],
            "answered": bool(found)
            or kind in may_ignore
            or sent.get(kind, "").startswith("not sent"),
            "may_be_ignored": kind in may_ignore,
        }
    crashes = {
        p.name: len(p.crashes) - crashes_before[p.name]
        for p in mesh.sup.procs
        if len(p.crashes) > crashes_before[p.name]
    }
    return {"records": kinds, "http": http, "crashes_during_fuzz": crashes, "good_after": drained}


def checks(result: dict[str, Any]) -> list[str]:
    fails: list[str] = []
    for name in ("chain", "leader"):
        s = result.get(name)
        if not s:
            continue
        for tally in ("promotion_approved", "service_deployed"):
            f = s[tally]
            if f["lost"] or f["duplicated"]:
                fails.append(f"{name}: {tally}: {f['lost']} lost, {f['duplicated']} duplicated")
        if s["stuck_partitions"]:
            fails.append(f"{name}: stuck partitions: {s['stuck_partitions'][:5]}")
        if not s["drained"]:
            fails.append(f"{name}: did not drain in time (lag {s['lag_at_end']})")
        if s["unacknowledged_releases"]:
            fails.append(f"{name}: {s['unacknowledged_releases']} releases never acknowledged")
        fails += [f"{name}: {e}" for e in s.get("driver_errors", [])]
        fc = s.get("flag_changes")
        if fc:
            f = fc["flag_changed"]
            if f["lost"] or f["duplicated"]:
                fails.append(f"{name}: flag.changed: {f['lost']} lost, {f['duplicated']} twice")
            if fc["unacknowledged"]:
                ns = [c["n"] for c in fc["unacknowledged"]]
                fails.append(f"{name}: flag changes never acknowledged by the admin API: {ns}")
            if fc["refused"]:
                fails.append(f"{name}: flag changes refused by the admin API: {fc['refused'][:3]}")
        inc = s.get("incidents")
        if inc:
            for tally in ("incident_detected", "rollback_requested"):
                f = inc[tally]
                if f["lost"] or f["duplicated"]:
                    fails.append(f"{name}: {tally}: {f['lost']} lost, {f['duplicated']} duplicated")
            if inc["breached"] < inc["services_to_breach"]:
                fails.append(
                    f"{name}: {inc['services_to_breach'] - inc['breached']} breaches never "
                    f"signalled (never deployed: {inc['never_deployed'][:5]}, given up: "
                    f"{inc['signals_given_up'][:5]})"
                )
    fz = result.get("fuzz")
    if fz:
        silent = [k for k, v in fz["records"].items() if not v["answered"]]
        if silent:
            fails.append(f"fuzz: {len(silent)} malformed kinds got no answer: {silent}")
        broken = [k for k, v in fz["http"].items() if v["status"] is None or v["status"] >= 500]
        if broken:
            fails.append(f"fuzz: {len(broken)} HTTP cases got a 5xx or no answer: {broken}")
        if fz["crashes_during_fuzz"]:
            fails.append(f"fuzz: processes crashed: {fz['crashes_during_fuzz']}")
        g = fz["good_after"]
        if g["promotion_approved"]["lost"] or g["service_deployed"]["lost"]:
            fails.append("fuzz: good releases after the fuzz did not all flow")
    for scenario, procs in result.get("processes", {}).items():
        for name, p in procs.items():
            outside = [c for c in p["crashes"] if not c["during_outage"]]
            if len(outside) >= CRASH_LOOP:
                fails.append(
                    f"{scenario}: crash loop: {name} exited {len(outside)} times unasked "
                    f"(last: {outside[-1]['error']})"
                )
            elif outside:
                fails.append(
                    f"{scenario}: {name} exited {len(outside)} time(s) without being killed "
                    f"(last: {outside[-1]['error']})"
                )
    return fails


async def scenario(
    name: str, result: dict[str, Any], kafka: OwnKafka, pg: OwnPostgres,
    work: Any, args: argparse.Namespace,
) -> None:  # fmt: skip
    run = Run(
        "chaos",
        kafka_bootstrap=kafka.bootstrap,
        pg_dsn=pg.dsn,
        credentials_dir=credentials_of(kafka, pg),
    )
    t0 = time.monotonic()

    async def body() -> dict[str, Any]:
        mesh = Mesh(run, kafka, pg, t0)
        await mesh.start()
        try:
            out: dict[str, Any] = await work(mesh)
            return out
        finally:
            result.setdefault("processes", {})[name] = mesh.sup.figures()
            result.setdefault("stop_codes", {})[name] = await mesh.sup.stop()

    out, error = await guarded(run, body, timeout_s=args.limit_s, keep_temp=args.keep_temp)
    if out is not None:
        result.update(out)
    if error is not None:
        result.setdefault("errors", []).append(f"{name}: {error}")
    result.setdefault("cleanup_errors", []).extend(run.errors)


async def main_async(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    result: dict[str, Any] = {
        "bench": "chaos", "args": {k: str(v) for k, v in vars(args).items()}, "seed": seed,
        "machine": {
            "cpu": cpu_model(), "memory_mib": memory_mib(), "loadavg": loadavg(),
            "git": git_revision(), "kafka": kafka_version(),
        },
    }  # fmt: skip
    why_no_netem = await netem_available()
    result["slow_network"] = (
        f"skipped: {why_no_netem}" if why_no_netem else "netem available, phase not implemented"
    )
    pg = OwnPostgres(free_port(15433))
    kafka1: OwnKafka | None = None
    kafka3: OwnKafka | None = None
    try:
        say(f"own Postgres on 127.0.0.1:{pg.port}")
        await pg.up()
        if {"chain", "fuzz"} & set(args.scenarios):
            kafka1 = OwnKafka(1, free_port(19092, 2))
            say(f"own Kafka (single node) on {kafka1.bootstrap}")
            await kafka1.up()

            async def chain_and_fuzz(mesh: Mesh) -> dict[str, Any]:
                out: dict[str, Any] = {}
                if "chain" in args.scenarios:
                    out["chain"] = await chain(mesh, args, rng, args.releases, "rel", "single")
                if "fuzz" in args.scenarios:
                    out["fuzz"] = await fuzz_pass(mesh, args)
                return out

            await scenario("single-node", result, kafka1, pg, chain_and_fuzz, args)
            await kafka1.close()
            kafka1 = None
        if "leader" in args.scenarios:
            kafka3 = OwnKafka(3, free_port(19192, 6))
            say(f"own Kafka (three brokers) on {kafka3.bootstrap}")
            await kafka3.up()

            async def leader(mesh: Mesh) -> dict[str, Any]:
                return {
                    "leader": await chain(mesh, args, rng, args.leader_releases, "ldr", "leader")
                }

            await scenario("cluster", result, kafka3, pg, leader, args)
    finally:
        for k in (kafka1, kafka3):
            if k is not None:
                await k.close()
        await pg.close()
    fails = checks(result)
    fz = result.get("fuzz") or {}
    result["warnings"] = [
        f"fuzz: HTTP {k} accepted with {v['status']} (no error)"
        for k, v in fz.get("http", {}).items()
        if v["status"] is not None and v["status"] < 400
    ] + [
        f"{scenario}: {name} exited {len(p['crashes'])} time(s) while Kafka/Postgres was down "
        f"(restarted; last: {p['crashes'][-1]['error']})"
        for scenario, procs in result.get("processes", {}).items()
        for name, p in procs.items()
        if p["crashes"] and all(c["during_outage"] for c in p["crashes"])
    ]
    fails += result.get("errors", [])
    result["failures"] = fails
    path = write_result("chaos", result, args.out)
    say(f"result: {path}")
    for w in result["warnings"]:
        say(f"warning {w}")
    for f in fails:
        say(f"FAIL {f}")
    if not fails:
        say(
            "PASS: nothing lost, nothing twice, no crash loop, no stuck partition, "
            "every malformed kind answered"
        )
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(run_main(main_async))
