"""One way to spread per-item work over worker processes, results in input order."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

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
    chunk: int = 512,
    min_items: int = 4096,
) -> list[R]:
    """``fn(context, chunk)`` over consecutive chunks of `items`, results joined in order.

    With `workers` >= 1 and at least `min_items` items the chunks go to that many forked
    processes, which inherit `fn` and `context` (nothing is imported or pickled but the
    chunks and their results); otherwise all runs here, as one chunk. A chunk that raises
    raises here, the first failing chunk in input order first.
    """
    items = list(items)
    if workers < 1 or len(items) < min_items:
        return fn(context, items)
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    out: list[R] = []
    procs = min(workers, len(chunks))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs, initializer=_start_worker, initargs=(fn, context)) as pool:
        for part in pool.imap(_run_chunk, chunks):
            out += part
    return out
