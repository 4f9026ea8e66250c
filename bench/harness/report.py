"""What a run prints (progress on stderr, a table on stdout) and what makes it fail."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:,.1f}"
    return str(value)


def grid(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [list(head), *[[fmt(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


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


def failures(result: dict[str, Any]) -> list[str]:
    """What makes a latency run fail: lost events, publish errors, a process not exiting 0."""
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
            stopped = (f.get("rebalance") or {}).get("exit_codes") or {}
            if any(code != 0 for code in stopped.values()):
                found.append(f"{name}: an instance stopped for the rebalance exited {stopped}")
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
