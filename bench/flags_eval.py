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

Everything runs in a throwaway namespace (topics, schemas and groups removed at the end, also
on failure or interruption; ``bench/harness``). Results: JSON here, and in
``bench/results/flags_eval-<UTC stamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import harness  # noqa: F401 - first: it puts the repository on sys.path
import httpx
from harness import REPO
from harness.arrivals import Arrivals
from harness.children import Child
from harness.machine import machine_info
from harness.results import write_result
from harness.run import Run, guarded
from harness.run import main as run_main
from harness.stats import summary_ms

from events import CDEvent, FlagChanged
from services.flags import keys
from services.flags.changes import Change, apply_now, import_flag_set
from services.flags.evaluator import FlagSet
from services.flags.flag_sets import document
from shared.bus.admin import ensure_topics
from shared.service import create_service_pool
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
        "latency_ms": summary_ms(latencies),
    }


async def wait_http(url: str, key: str, child: Child) -> None:
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
                "--env", "bench", "--reason", "bench cli", "--by", "bench",  # the run's person key
                env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, stderr = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(
                    f"`lockstep flags {action}` exited {proc.returncode}: "
                    + stderr.decode(errors="replace")[-2000:]
                )
            arrived = await watcher.wait(("bench/switch", int(rows) + 1))
            cli_to_kafka.append((arrived - t0) * 1000)
    finally:
        provider.shutdown()
        await watcher.stop()
    return {
        "change_to_flag_changed_consumed_ms": summary_ms(to_kafka),
        "change_to_visible_over_ofrep_ms": summary_ms(to_client),
        "cli_command_to_flag_changed_consumed_ms": summary_ms(cli_to_kafka),
        "changes": n,
        "cli_changes": len(cli_to_kafka),
    }


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    settings = run.settings
    port = settings.flags_http_port
    url = f"http://127.0.0.1:{port}"
    env = run.env(LOCKSTEP_FLAGS_HTTP_PORT=str(port))
    result: dict[str, Any] = {"machine": await machine_info(settings), "args": vars(args)}
    doc = flag_set()
    print(f"in-process: {args.in_process} evaluations per flag kind…", flush=True)
    result["in_process"] = in_process(doc, args.in_process)
    await ensure_topics(settings)
    from services.flags.app import SPEC

    pool, _ = await create_service_pool(SPEC, settings, max_size=4)
    run.closing(pool.close)
    child = run.child("flags", [sys.executable, "-m", "cli", "run", "flags"], "flags.log", env)
    provider = tracer_provider(settings, "bench")
    run.closing(provider.shutdown)
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
    return result


async def main_async(args: argparse.Namespace) -> int:
    run = Run("bench_flags", bench_spans=True, flags_http_port=free_port())
    result, error = await guarded(run, lambda: measure(run, args), timeout_s=None)
    if error is not None or result is None:
        return 1
    result["cleanup_errors"] = run.errors
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    out = write_result("flags_eval", result)
    print(f"wrote {out}")
    return 1 if run.errors else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="each loaded HTTP phase")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP clients at once")
    parser.add_argument("--sequential", type=int, default=2000, help="one-at-a-time requests")
    parser.add_argument("--in-process", type=int, default=50_000, help="evaluations per kind")
    parser.add_argument("--changes", type=int, default=30, help="changes timed to Kafka")
    args = parser.parse_args(argv)
    return run_main(lambda: main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
