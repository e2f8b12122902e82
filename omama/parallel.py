"""One way to spread per-item work over worker processes, results in input order."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Items per chunk handed to a worker, and the fewest items worth starting workers for (a
# forked pool costs ~0.1 s; per-pair evaluation work is ~0.5 ms an item).
CHUNK = 512
MIN_ITEMS = 4096

_worker_job: tuple[Callable, Any] | None = None  # (fn, context) of this worker process


def _start_worker(fn: Callable, context: Any) -> None:
    """A forked worker keeps `fn` and its own copy of `context`, made as pickling makes it
    (so that a `omama.cache.reader.Cache` opens its own file handles)."""
    global _worker_job
    _worker_job = (fn, pickle.loads(pickle.dumps(context)))


def _run_chunk(chunk: list) -> list:
    fn, context = _worker_job  # type: ignore[misc]
    return fn(context, chunk)


def ordered_map(
    fn: Callable[[Any, list[T]], list[R]],
    context: Any,
    items: Sequence[T],
    workers: int,
    chunk: int | None = None,
    min_items: int | None = None,
) -> list[R]:
    """``fn(context, chunk)`` over consecutive chunks of `items`, results joined in order.

    With `workers` >= 2 (one would only stand in for this process) and at least `min_items`
    (default `MIN_ITEMS`) items, the chunks (default `CHUNK` items) go to that many forked
    processes: each inherits `fn` and `context` and copies `context` once as pickling
    would (so a `Cache` opens its own files); only the chunks and their results cross
    between processes. Otherwise all runs here, as one chunk. A chunk that raises raises
    here, the first failing one in input order first.
    """
    items = list(items)
    chunk = CHUNK if chunk is None else chunk
    if workers < 2 or len(items) < (MIN_ITEMS if min_items is None else min_items):
        return fn(context, items)
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    out: list[R] = []
    procs = min(workers, len(chunks))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs, initializer=_start_worker, initargs=(fn, context)) as pool:
        for part in pool.imap(_run_chunk, chunks):
            out += part
    return out
