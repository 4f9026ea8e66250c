"""The ``lockstep`` command line with signing and verification turned off in the process:
what ``bench/release_chain_latency.py --signing off`` starts its services with, to measure the
release chain without signatures against with. Not a setting anyone can turn on: a
benchmark's comparison only.

    .venv/bin/python bench/harness/unsigned.py run gates
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, from any dir

from shared.bus.signing import unsigned_for_a_benchmark

unsigned_for_a_benchmark()

from cli.main import app  # noqa: E402

app()
