"""Result files: ``bench/results/<bench>-<UTC stamp>.json``, one per run, never overwritten.
Nothing else a bench makes goes into the tree (scratch: a temp dir, or ``bench/scratch/``,
which git ignores)."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import REPO

RESULTS = REPO / "bench" / "results"


def stamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def result_path(bench: str, at: datetime | None = None) -> Path:
    return RESULTS / f"{bench}-{stamp(at)}.json"


def jsonable(value: Any) -> Any:
    """NaN (no data) as null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(bench: str, result: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``result`` to ``out`` if given (``--out``), else to a new dated file."""
    path = out if out is not None else result_path(bench)
    while out is None and path.exists():  # two runs ended in the same second: the next one
        time.sleep(1)
        path = result_path(bench)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(result), indent=2, default=str) + "\n", encoding="utf-8")
    return path
