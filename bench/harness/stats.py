"""Percentiles: nearest rank over every sample, no interpolation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (already in any order); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """min, p50, p90, p99, max and mean of some milliseconds (NaN each when there are none)."""
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


def p50_p99(parts: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """p50 and p99 of each stage of a latency split."""
    return {k: {"p50": round(pct(v, 50), 2), "p99": round(pct(v, 99), 2)} for k, v in parts.items()}
