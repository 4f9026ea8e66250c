"""How fast flags are evaluated, and how fast a change reaches Kafka and the clients.

    .venv/bin/python bench/flags_eval.py [--seconds 8] [--concurrency 16] [--changes 30]

- In-process: ``FlagSet.evaluate`` (the engine behind OFREP) on a static flag, a rule
  (``if`` + ``ends_with`` on a ``$ref``), a ``fractional`` split and a ``sem_ver`` rule;
  and a bulk ``evaluate_all`` of the whole set (20 flags).
- Over HTTP, against ``lockstep run flags`` in its own process (uvicorn, one worker):
  single evaluations one at a time (latency without queueing), then ``--concurrency``
  clients for ``--seconds`` (throughput, latency under load), then bulk evaluations.
- A change (the ``apply_now`` the command line and the admin API call) -> its ``flag.changed``
  consumed from Kafka, and -> the change visible to an OFREP client; and the real command
  line (``lockstep flags disable``, Python start-up included) -> ``flag.changed`` consumed.

Everything runs in a throwaway namespace (topics, schemas and groups removed at the end).
Results: a table here, and JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import artifacts_latency as base
import asyncpg
import httpx
from arrivals import Arrivals

from events import CDEvent, FlagChanged
from services.flags import keys
from services.flags.changes import Change, apply_now, import_flag_set
from services.flags.evaluator import FlagSet
from services.flags.flag_sets import document
from shared.bus.admin import delete_namespace_topics, ensure_topics
from shared.db import BUS_MIGRATIONS, create_pool, drop_namespace_schemas, migrate
from shared.settings import Settings
from shared.telemetry import tracer, tracer_provider

META = {"type": "release", "owner": "bench"}


def flag_set() -> dict[str, Any]:
    flags: dict[str, Any] = {
        "static": {"state": "ENABLED", "variants": {"on": True, "off": False},
                   "defaultVariant": "on", "metadata": META},
        "rule": {"state": "ENABLED", "variants": {"on": True, "off": False},
                 "defaultVariant": "off", "targeting": {"if": [{"$ref": "staff"}, "on", "off"]},
                 "metadata": META},
        "split": {"state": "ENABLED", "variants": {"a": "A", "b": "B", "c": "C"},
                  "defaultVariant": "a",
                  "targeting": {"fractional": [["a", 20], ["b", 30], ["c", 50]]},
                  "metadata": META},
        "semver": {"state": "ENABLED", "variants": {"few": 10, "many": 100},
                   "defaultVariant": "few",
                   "targeting": {"if": [{"sem_ver": [{"var": "app"}, ">=", "2.0.0"]}, "many",
                                        "few"]},
                   "metadata": META},
        "switch": {"state": "ENABLED", "variants": {"on": True, "off": False},
                   "defaultVariant": "on", "metadata": {"type": "kill-switch", "owner": "bench"}},
    }  # fmt: skip
    for i in range(15):
        flags[f"extra-{i}"] = dict(flags[("static", "rule", "split")[i % 3]])
    return {
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@lockstep.dev"]}},
        "flags": flags,
    }


def context(i: int) -> dict[str, Any]:
    return {"targetingKey": f"user-{i}", "email": f"u{i}@example.com", "app": "2.1.0"}


def in_process(doc: dict[str, Any], n: int) -> dict[str, Any]:
    flags = FlagSet(doc)
    contexts = [context(i) for i in range(1000)]
    result: dict[str, Any] = {}
    for key in ("static", "rule", "split", "semver"):
        t0 = time.perf_counter()
        for i in range(n):
            flags.evaluate(key, contexts[i % 1000])
        elapsed = time.perf_counter() - t0
        result[key] = {
            "evals_per_s": round(n / elapsed),
            "us_per_eval": round(elapsed / n * 1e6, 2),
        }
    bulk_n = max(1, n // 20)
    t0 = time.perf_counter()
    for i in range(bulk_n):
        flags.evaluate_all(contexts[i % 1000])
    elapsed = time.perf_counter() - t0
    result["bulk_20_flags"] = {
        "sets_per_s": round(bulk_n / elapsed),
        "evals_per_s": round(bulk_n * 20 / elapsed),
    }
    return result


async def http_phase(
    url: str, key: str, *, path: str, concurrency: int, seconds: float | None, requests: int | None
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + (seconds or 1e9)
    remaining = [requests if requests is not None else 1 << 60]

    async def client(n: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as http:
            i = n
            while time.perf_counter() < stop_at and remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.perf_counter()
                r = await http.post(path, json={"context": context(i)})
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    errors += 1
                i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed),
        "latency_ms": base.summary_ms(latencies),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, key: str, child: base.Child) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as http:
        for _ in range(300):
            child.alive()
            try:
                if (await http.get("/ofrep/v1/configuration")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the flags service did not answer over HTTP within 30 s")


def flag_version(event: CDEvent) -> tuple[str, int] | None:
    if isinstance(event, FlagChanged):
        return event.subject.id, event.subject.content.version
    return None


async def changes(
    pool: asyncpg.Pool, settings: Settings, url: str, key: str, n: int, env: dict[str, str]
) -> dict[str, Any]:
    watcher = Arrivals(settings, "flags", flag_version)
    await watcher.start()
    provider = tracer_provider(settings, "bench")
    to_kafka: list[float] = []
    to_client: list[float] = []
    cli_to_kafka: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as http:
            for i in range(n):
                action = "disable" if i % 2 == 0 else "enable"
                t0 = time.perf_counter()
                event = await apply_now(
                    pool, settings,
                    Change("bench", "switch", action, "bench", f"bench change {i}", "cli"),
                    tracer=tracer(provider),
                )  # fmt: skip
                assert event is not None
                want_reason = "DISABLED" if action == "disable" else "STATIC"
                while True:
                    r = await http.post("/ofrep/v1/evaluate/flags/switch", json={})
                    if r.json().get("reason") == want_reason:
                        to_client.append((time.perf_counter() - t0) * 1000)
                        break
                    await asyncio.sleep(0.001)
                arrived = await watcher.wait(("bench/switch", event.subject.content.version))
                to_kafka.append((arrived - t0) * 1000)
        for i in range(min(5, n)):
            action = "disable" if i % 2 == 0 else "enable"
            rows = await pool.fetchval(
                "SELECT max(version) FROM flag_changes WHERE environment = 'bench' "
                "AND flag_key = 'switch'"
            )
            t0 = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli", "flags", action, "switch",
                "--env", "bench", "--reason", "bench cli", "--by", "bench",
                env=env, cwd=base.REPO, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await proc.wait()
            arrived = await watcher.wait(("bench/switch", int(rows) + 1))
            cli_to_kafka.append((arrived - t0) * 1000)
    finally:
        provider.shutdown()
        await watcher.stop()
    return {
        "change_to_flag_changed_consumed_ms": base.summary_ms(to_kafka),
        "change_to_visible_over_ofrep_ms": base.summary_ms(to_client),
        "cli_command_to_flag_changed_consumed_ms": base.summary_ms(cli_to_kafka),
        "changes": n,
        "cli_changes": len(cli_to_kafka),
    }


async def main_async(args: argparse.Namespace) -> int:
    namespace = "bench_flags_" + uuid.uuid4().hex[:8]
    port = free_port()
    settings = Settings(namespace=namespace, flags_http_port=port)
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "LOCKSTEP_NAMESPACE": namespace,
        "LOCKSTEP_FLAGS_HTTP_PORT": str(port),
        "LOCKSTEP_LOG_LEVEL": "WARNING",
        "LOCKSTEP_TRACE_DIR": "",
    }
    result: dict[str, Any] = {"machine": await base.machine_info(settings), "args": vars(args)}
    doc = flag_set()
    print(f"in-process: {args.in_process} evaluations per flag kind…", flush=True)
    result["in_process"] = in_process(doc, args.in_process)
    await ensure_topics(settings)
    schema = settings.db_schema("flags")
    pool = await create_pool(settings.pg_dsn, schema, max_size=4)
    log = Path(f"/tmp/{namespace}-flags.log")
    child = base.Child("flags", [sys.executable, "-m", "cli", "run", "flags"], env, log)
    provider = tracer_provider(settings, "bench")
    try:
        from services.flags.app import SPEC

        await migrate(pool, schema, [BUS_MIGRATIONS, *SPEC.migrations])
        await import_flag_set(
            pool, settings, "bench", doc, by="bench", reason="bench", source="cli",
            tracer=tracer(provider),
        )  # fmt: skip
        async with pool.acquire() as conn:
            key = await keys.create(conn, "bench", "evaluate", "bench", datetime.now(UTC))
            served, _ = await document(conn, "bench")
        assert set(served["flags"]) == set(doc["flags"])
        child.start()
        await wait_http(url, key, child)
        single = "/ofrep/v1/evaluate/flags/split"
        print("HTTP single, one at a time…", flush=True)
        await http_phase(url, key, path=single, concurrency=1, seconds=None, requests=300)
        result["http_single_sequential"] = await http_phase(
            url, key, path=single, concurrency=1, seconds=None, requests=args.sequential
        )
        print(f"HTTP single, {args.concurrency} clients for {args.seconds}s…", flush=True)
        result["http_single_loaded"] = await http_phase(
            url, key, path=single, concurrency=args.concurrency, seconds=args.seconds,
            requests=None,
        )  # fmt: skip
        print(f"HTTP bulk (20 flags), {args.concurrency} clients for {args.seconds}s…", flush=True)
        bulk = await http_phase(
            url, key, path="/ofrep/v1/evaluate/flags", concurrency=args.concurrency,
            seconds=args.seconds, requests=None,
        )  # fmt: skip
        bulk["flag_evals_per_s"] = bulk["requests_per_s"] * len(doc["flags"])
        result["http_bulk_loaded"] = bulk
        print(f"{args.changes} changes -> flag.changed consumed / visible over OFREP…", flush=True)
        result["changes"] = await changes(pool, settings, url, key, args.changes, env)
        child.alive()
    finally:
        provider.shutdown()
        await child.stop()
        await pool.close()
        await delete_namespace_topics(settings)
        await drop_namespace_schemas(settings)
        await base.delete_groups(settings, [f"{namespace}.flags", f"{namespace}.bench-watch"])
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = base.RESULTS / f"flags_eval-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each loaded HTTP phase")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP clients at once")
    parser.add_argument("--sequential", type=int, default=2000, help="one-at-a-time requests")
    parser.add_argument("--in-process", type=int, default=50_000, help="evaluations per kind")
    parser.add_argument("--changes", type=int, default=30, help="changes timed to Kafka")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
