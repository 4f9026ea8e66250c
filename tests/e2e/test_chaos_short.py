"""The chaos suite's short run, as CI runs it: the real processes on a Kafka and a Postgres of
the suite's own (a single node, then a three-broker cluster whose partition leader is killed),
every kind of process SIGKILLed, the broker killed, Postgres stopped, malformed records and
requests sent; then the topics counted. Nothing may be lost or happen twice, no process may
crash-loop, and every malformed input must be answered (`bench/README.md`, "Chaos")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

SHORT = [
    "--releases", "60", "--rate", "10", "--kill-every", "3",
    "--scenarios", "chain,fuzz,leader", "--leader-releases", "60",
    "--fuzz-good", "10", "--stuck-s", "60", "--drain-s", "240", "--limit-s", "600",
]  # fmt: skip


@pytest.mark.timeout(1500)
def test_the_short_chaos_run_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    report = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "bench/chaos.py", *SHORT, "--out", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
    assert report.exists(), f"no report written (exit {done.returncode}):\n{tail}"
    result = json.loads(report.read_text())
    assert result["failures"] == [], tail
    assert done.returncode == 0, tail

    for name in ("chain", "leader"):
        s = result[name]
        assert s["drained"] and not s["stuck_partitions"], (name, s["lag_at_end"])
        assert s["acknowledged_releases"] == 60 and s["unacknowledged_releases"] == 0
        for tally in ("promotion_approved", "service_deployed"):
            figures = s[tally]
            assert figures["lost"] == 0 and figures["duplicated"] == 0, (name, tally, figures)
            assert figures["exactly_once"] == figures["expected"] > 0, (name, tally, figures)
        fc, inc = s["flag_changes"], s["incidents"]
        assert fc["flag_changed"]["exactly_once"] == fc["flag_changed"]["expected"] > 0, fc
        assert not fc["unacknowledged"] and not fc["refused"], fc
        for tally in ("incident_detected", "rollback_requested"):
            assert inc[tally]["exactly_once"] == inc[tally]["expected"] > 0, (name, tally, inc)
        killed = {e["kill"] for e in s["chaos"] if "kill" in e}
        assert killed >= {"artifacts", "gates", "promotion", "deployer"}, killed
        assert any("broker" in e for e in s["chaos"]) and any("postgres" in e for e in s["chaos"])

    fuzz = result["fuzz"]
    assert len(fuzz["records"]) >= 60
    assert [k for k, v in fuzz["records"].items() if not v["answered"]] == []
    assert [k for k, v in fuzz["http"].items() if v["status"] is None or v["status"] >= 500] == []
    assert fuzz["http"]["webhook-no-token"]["status"] == 401
    assert fuzz["http"]["webhook-wrong-token"]["status"] == 401
