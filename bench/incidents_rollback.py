"""How fast a bad deployment is rolled back, and how many signals the incidents service takes.

    .venv/bin/python bench/incidents_rollback.py [--services 40] [--rate 4] [--signals 20000]

Set-up, in a throwaway namespace: the promotion service, the incidents service and the
reference deployer agent run as processes (``lockstep run …``, ``lockstep deployer``). A
release model with one environment and a criterion "error_rate > 0.05 held for 5m within
30m of a deploy" is put in force. For each of ``--services`` services, two deployments are
reported (1.0.0, then 2.0.0), as a deployer reports them.

- **Rollback latency.** For each service, a breaching signal timed 1 min after the deploy,
  then one timed 6 min after (the 5 min hold lies between the two signals' own times, so it
  is not waited for, and not counted twice). The latency is from publishing that second,
  confirming signal to consuming the deployer's ``service.rolledback`` (1.0.0 again):
  incidents (breach confirmed, incident, rollback.requested) -> promotion (last good digest,
  promotion.approved) -> deployer -> service.rolledback. Services are started at ``--rate``
  per second.
- **Signals/s.** ``--signals`` non-breaching signals published as fast as Kafka takes them;
  the figure is how many the service recorded per second until it had them all.

Everything runs in a throwaway namespace (topics, schemas and groups removed at the end, also
on failure or interruption; ``bench/harness``). Results: JSON here, and in
``bench/results/incidents_rollback-<UTC stamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import harness  # noqa: F401 - first: it puts the repository on sys.path
from harness.arrivals import Arrivals
from harness.machine import machine_info
from harness.results import write_result
from harness.run import Run, guarded
from harness.run import main as run_main
from harness.stats import summary_ms

from events import ArtifactRef, CDEvent, Reference, ServiceDeployed, ServiceRolledBack
from events.deployments import DeployedContent, DeployedSubject, DeploymentFacts
from events.signals import SignalObserved
from policy import load_text, policy_updated
from shared.bus import Publisher
from shared.bus.admin import ensure_topics

MODEL = b"""\
version: 1
environments:
  - name: dev
rollback:
  - name: errors
    metric: error_rate
    threshold: 0.05
    hold: 5m
    within: 30m
escalation:
  levels: [{after: 0s, notify: [owner]}]
"""


def deployed(service: str, version: str, at: datetime) -> ServiceDeployed:
    ref = ArtifactRef(service, version, "sha256:" + uuid.uuid5(uuid.NAMESPACE_URL,
                      f"{service}{version}").hex * 2)  # fmt: skip
    event = ServiceDeployed(
        context=ServiceDeployed.new_context("bench/deployer"),
        subject=DeployedSubject(
            id=service,
            content=DeployedContent(environment=Reference(id="dev"), artifact_id=ref.purl()),
        ),
        custom_data=DeploymentFacts(promotion_id=f"prm-bench-{service}-{version}", agent="bench"),
    )
    return event.model_copy(update={"context": event.context.model_copy(update={"timestamp": at})})


def signal(service: str, value: float, at: datetime) -> SignalObserved:
    return SignalObserved.build(service=service, environment="dev", metric="error_rate",
                                value=value, source="bench", observed_at=at)  # fmt: skip


def rolled_back_service(event: CDEvent) -> str | None:
    return event.ref().service if isinstance(event, ServiceRolledBack) else None


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    settings = run.settings
    env = run.env(LOCKSTEP_INCIDENTS_HTTP_PORT=str(settings.incidents_http_port))
    result: dict[str, Any] = {"machine": await machine_info(settings), "args": vars(args)}
    await ensure_topics(settings)
    children = [
        run.child(name, [sys.executable, "-m", "cli", *argv], f"{name}.log", env)
        for name, argv in (
            ("promotion", ["run", "promotion"]),
            ("incidents", ["run", "incidents"]),
            ("deployer", ["deployer", "--agent", "bench", "--env", "dev", "--state-dir",
                          str(run.tmp / "deployer")]),
        )
    ]  # fmt: skip
    watch = Arrivals(settings, "deployments", rolled_back_service)
    run.closing(watch.stop)
    services = [f"svc-{i:03d}" for i in range(args.services)]
    for child in children:
        child.start()
    await watch.start()
    now = datetime.now(UTC)
    async with Publisher(settings, client_id="bench", signing_key=run.key("platform")) as pub:
        await pub.publish(policy_updated(load_text(MODEL), updated_by="bench"))
        for service in services:
            await pub.publish(deployed(service, "1.0.0", now - timedelta(hours=1)))
            await pub.publish(deployed(service, "2.0.0", now - timedelta(minutes=10)))
        await asyncio.sleep(3.0)  # both services have taken the deployments in
        for child in children:
            child.alive()
        print(f"rollback latency: {args.services} services at {args.rate}/s…", flush=True)
        sent: dict[str, float] = {}
        deploy_at = now - timedelta(minutes=10)
        for service in services:
            await pub.publish(signal(service, 0.2, deploy_at + timedelta(minutes=1)))
            sent[service] = time.perf_counter()
            await pub.publish(signal(service, 0.3, deploy_at + timedelta(minutes=6)))
            sent[service] = time.perf_counter()
            await asyncio.sleep(1.0 / args.rate)
        deadline = time.perf_counter() + 60
        while len(watch.seen) < len(services) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        latencies = [(watch.seen[s] - sent[s]) * 1000 for s in services
                     if s in watch.seen]  # fmt: skip
        result["rollback"] = {
            "services": len(services),
            "rolled_back": len(latencies),
            "confirming_signal_to_rolledback_ms": summary_ms(latencies),
        }
        print(f"signals/s: {args.signals} signals…", flush=True)
        conn = await asyncpg.connect(settings.pg_dsn)
        try:
            table = f'"{settings.db_schema("incidents")}".signals'
            before = await conn.fetchval(f"SELECT count(*) FROM {table}")
            t0 = time.perf_counter()
            calm = [signal(services[i % len(services)], 0.001, now) for i in range(args.signals)]
            for start in range(0, len(calm), 500):  # as fast as the producer takes them
                await asyncio.gather(*(pub.publish(s) for s in calm[start : start + 500]))
            published = time.perf_counter() - t0
            while await conn.fetchval(f"SELECT count(*) FROM {table}") < before + args.signals:
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError("the incidents service did not take every signal")
                await asyncio.sleep(0.1)
            taken = time.perf_counter() - t0
        finally:
            await conn.close()
        result["signals"] = {
            "signals": args.signals,
            "publish_s": round(published, 2),
            "all_recorded_s": round(taken, 2),
            "signals_per_s": round(args.signals / taken),
        }
    for child in children:
        child.alive()
    return result


async def main_async(args: argparse.Namespace) -> int:
    run = Run("bench_inc", incidents_http_port=free_port())
    result, error = await guarded(run, lambda: measure(run, args), timeout_s=None)
    if error is not None or result is None:
        return 1
    result["cleanup_errors"] = run.errors
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    out = write_result("incidents_rollback", result)
    print(f"wrote {out}")
    everything = result["rollback"]["rolled_back"] == result["rollback"]["services"]
    return 0 if everything and not run.errors else 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=40)
    parser.add_argument("--rate", type=float, default=4.0, help="services set off per second")
    parser.add_argument("--signals", type=int, default=20_000)
    args = parser.parse_args(argv)
    return run_main(lambda: main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
