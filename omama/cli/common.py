"""What every omama command does around its work: logging, one-line errors, exit codes."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator

from omama.errors import OmamaError


def setup_logging(verbose: bool = False) -> None:
    # under torchrun, say which rank speaks (every rank logs to the same terminal)
    world = os.environ.get("WORLD_SIZE", "1")
    rank = f" [rank {os.environ.get('RANK', '?')}]" if world not in ("", "1") else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s{rank} %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def one_line(exc: OmamaError) -> str:
    """The error's own line; one raised in a DataLoader worker comes back wrapped in the
    worker's traceback ("Caught OmamaError in DataLoader worker ..."): its last line."""
    text = str(exc)
    if "\n" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split("OmamaError: ", 1)[-1]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave what exists now (the imported libraries: ~460k objects with torch) out of the
    cycle collector's passes while the work runs. Each full pass walks every tracked object:
    with them in, parts of precompute cost 2-4x more per image at 4N items than at N, and
    were flat with them out (BENCHMARKS.md, "Scale"). Unfrozen afterwards, so a Python
    caller's garbage is collected again."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_cli(prog: str, main: Callable[[], int | None]) -> int:
    """Run `main`; a user-facing problem becomes `prog: error: <one line>` and exit code 2."""
    setup_logging()
    try:
        with frozen_heap():
            return main() or 0
    except OmamaError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
