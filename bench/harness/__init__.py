"""What the benchmarks in ``bench/`` share, so that each script holds only its own scenario.

- ``run``: one run's resources (a fresh namespace, a temp dir, the processes and clients it
  started) and their clean-up, also on failure, timeout, Ctrl-C and SIGTERM; the common
  main loop of the latency benches.
- ``namespace``: the namespace's Kafka topics, consumer groups and Postgres schemas: creating
  the bench's own topics, and removing everything named after the namespace.
- ``children``: processes the bench starts (their environment, logs, SIGTERM then SIGKILL).
- ``load``: open-loop sending at a set rate, one measured phase and its figures, the
  ``--find-max`` stepping.
- ``arrivals``: consumers that note when awaited events arrive.
- ``floor``: the bare-Kafka floor (plain aiokafka consume->produce hops); ``hop.py`` is the
  hop process itself.
- ``cpu``, ``machine``, ``stats``: CPU use, the machine's description, percentiles.
- ``report``: tables and the checks that make a run fail.
- ``results``: the dated result files, ``bench/results/<bench>-<UTC stamp>.json``.

The scripts import it as ``harness`` (``bench/`` is on ``sys.path`` when one of them runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # events, shared, policy, ... also without the editable install
    sys.path.insert(1, str(REPO))
