"""Entry point: `python scripts/bench [--device cpu|cuda] [--rows 1,2,...] [--quick] ...`."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/bench`: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
