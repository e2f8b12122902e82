"""`make bench`: each stage of omama timed against the plain thing it must beat.

One module per row of BENCHMARKS.md (`row_*.py`, each with `run(ctx) -> list[Row]`), the
plan, rows and timing helpers in `common.py`, CPU accounting of a shared host in `host.py`,
the synthetic data and cache in `data.py`, the bench-only baselines in `baselines.py`, and
argument parsing and the two reports in `run.py`. The plain oracles that the tests also
compare against live in the repository's `tests/oracles.py` (one definition).

Importing the package prepares the process: the repository and its `tests/` folder go on
sys.path (a fresh clone runs without installing), and, before torch starts its OpenMP
threads, idle threads are told to sleep instead of spinning. On a host shared with other
jobs a spinning thread burns the time slice its descheduled peer needs; measured here, that
alone made the fast attention order 8x slower under load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "tests")) if p not in sys.path]
os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: no progress bars here
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
