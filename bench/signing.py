"""What signing and verifying a decision costs per event (``events.signing``), in µs.

    .venv/bin/python bench/signing.py [--events 2000] [--rounds 9] [--out PATH]

The events are realistic ``promotion.approved`` (``events.testing.sample``), each its own
(fresh id, its own service and version). Per event:

- ``sign``: ``events.signing.sign`` (canonical JSON, DSSE PAE, Ed25519, the header's JSON);
- ``verify``: ``events.signing.verify`` of the event as decoded from its Kafka record
  (header parsed, key looked up, canonical JSON, PAE, Ed25519 verification, role, retirement);
- the floor, measured in the same run: ``sha256`` of the same bytes (the event's canonical
  JSON, serialised beforehand), and ``inbox_digest``: ``to_json`` then ``sha256``, what every
  consumer's inbox already does with each event.

Each figure is timed over all events in one loop per round (``perf_counter_ns``), ``--rounds``
times, and reported as the median round's µs per event (and the best round's); sign and verify
are also timed one call at a time for p50/p99. No server is needed; the keys live in a temp dir.
Writes ``bench/results/signing-<UTC stamp>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness  # noqa: F401 - first: it puts the repository on sys.path
from harness.machine import host
from harness.results import write_result
from harness.stats import pct

from events import CDEvent, PromotionApproved, decode, encode
from events.signing import KeyStore, sign, signature_of, verify, with_signature
from events.testing import sample


def events(n: int) -> list[CDEvent]:
    return [
        sample(
            PromotionApproved,
            service=f"service-{i % 97}",
            version=f"1.{i // 97}.{i % 13}",
            digest="sha256:" + hashlib.sha256(str(i).encode()).hexdigest(),
            environment=("staging", "prod-eu", "prod-us")[i % 3],
        )
        for i in range(n)
    ]


def per_event_us(work: Callable[[int], object], n: int, rounds: int) -> dict[str, float]:
    """``work(i)`` for every i, timed as one loop per round: µs per event (median, best)."""
    for i in range(min(n, 200)):  # warm-up
        work(i)
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for i in range(n):
            work(i)
        results.append((time.perf_counter_ns() - start) / n / 1000)
    return {"median_us": round(statistics.median(results), 3), "best_us": round(min(results), 3)}


def per_call_us(work: Callable[[int], object], n: int) -> dict[str, float]:
    """``work(i)`` timed one call at a time: p50, p99 and max in µs."""
    taken = []
    for i in range(n):
        start = time.perf_counter_ns()
        work(i)
        taken.append((time.perf_counter_ns() - start) / 1000)
    return {"p50_us": round(pct(taken, 50), 2), "p99_us": round(pct(taken, 99), 2),
            "max_us": round(max(taken), 2)}  # fmt: skip


def machine() -> dict[str, Any]:
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        openssl = backend.openssl_version_text()
    except Exception:  # an unusual build of cryptography: the figure stands without it
        openssl = None
    return host(("cryptography", "pydantic", "pydantic-core"), openssl=openssl)


def run(n: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-signing-") as tmp:
        keys = KeyStore(Path(tmp) / "keys")
        keys.create("promotion")
        keys.create("promotion")  # rotation: two keys of the role in the store
        keys.create("gates")
        trust = keys.trust()
        key = keys.signing_key("promotion")
    originals = events(n)
    bodies = [e.to_json() for e in originals]
    headers = [sign(e, key) for e in originals]
    # what a consumer verifies: the event as decoded from its record, and the header it carried
    records = [
        with_signature(encode(e, topic="bench.promotions"), h)
        for e, h in zip(originals, headers, strict=True)
    ]
    decoded = [decode(r).event for r in records]
    carried = [signature_of(r) for r in records]
    for event, header in zip(decoded, carried, strict=True):
        verify(event, header, trust)  # every one verifies, or the figures mean nothing

    figures = {
        "sign": per_event_us(lambda i: sign(originals[i], key), n, rounds),
        "verify": per_event_us(lambda i: verify(decoded[i], carried[i], trust), n, rounds),
        "floor_sha256": per_event_us(lambda i: hashlib.sha256(bodies[i]).digest(), n, rounds),
        "floor_inbox_digest": per_event_us(
            lambda i: hashlib.sha256(decoded[i].to_json()).digest(), n, rounds
        ),
        "to_json": per_event_us(lambda i: decoded[i].to_json(), n, rounds),
    }
    calls = {
        "sign": per_call_us(lambda i: sign(originals[i], key), n),
        "verify": per_call_us(lambda i: verify(decoded[i], carried[i], trust), n),
    }
    floor = figures["floor_sha256"]["median_us"]
    digest = figures["floor_inbox_digest"]["median_us"]
    return {
        "bench": "signing",
        "args": {"events": n, "rounds": rounds},
        "event_type": PromotionApproved.TYPE,
        "value_bytes": round(sum(map(len, bodies)) / n),
        "header_bytes": round(sum(map(len, headers)) / n),
        "per_event": figures,
        "per_call": calls,
        "ratio_over_sha256": {
            k: round(figures[k]["median_us"] / floor, 1) for k in ("sign", "verify")
        },
        "ratio_over_inbox_digest": {
            k: round(figures[k]["median_us"] / digest, 1) for k in ("sign", "verify")
        },
        "machine": machine(),
    }


def table(result: dict[str, Any]) -> str:
    f, r = result["per_event"], result["ratio_over_sha256"]
    d, c = result["ratio_over_inbox_digest"], result["per_call"]
    lines = [
        f"promotion.approved, {result['value_bytes']} bytes of JSON, "
        f"{result['header_bytes']}-byte {'ce_lockstepsig'} header; µs per event (median round)",
        f"  sign                {f['sign']['median_us']:9.2f}   x{r['sign']} sha256, "
        f"x{d['sign']} inbox digest   (one call: p50 {c['sign']['p50_us']}, "
        f"p99 {c['sign']['p99_us']})",
        f"  verify              {f['verify']['median_us']:9.2f}   x{r['verify']} sha256, "
        f"x{d['verify']} inbox digest   (one call: p50 {c['verify']['p50_us']}, "
        f"p99 {c['verify']['p99_us']})",
        f"  floor: sha256       {f['floor_sha256']['median_us']:9.2f}",
        f"  floor: inbox digest {f['floor_inbox_digest']['median_us']:9.2f}   (to_json + sha256)",
        f"  to_json alone       {f['to_json']['median_us']:9.2f}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000, help="distinct events (2000)")
    parser.add_argument("--rounds", type=int, default=9, help="timed loops over them (9)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here instead")
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")
    result = run(args.events, args.rounds)
    print(table(result))
    path = write_result("signing", result, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
