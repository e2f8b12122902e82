"""One way to spread per-item work over worker processes, results in input order."""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Items per chunk handed to a worker, and the fewest items worth starting workers for (a
# forked pool costs ~0.1 s; per-pair evaluation work is ~0.5 ms an item).
CHUNK = 512
MIN_ITEMS = 4096

_worker_job: tuple[Callable, Any] | None = None  # (fn, context) of this worker process


# tqdm's monitor: a daemon thread that sleeps between looks at the progress bars and holds
# nothing a forked child needs (it outlives every bar once one was shown)
_HARMLESS_THREADS = {"TMonitor"}


def fork_hazard() -> str | None:
    """Why forking this process now would be unsafe, or None: CUDA initialised (a child
    cannot use it and may hang), a torch.distributed process group (NCCL's threads and
    sockets), or another Python thread running (e.g. the checkpoint writer: a lock it holds
    at the fork stays held in the child forever)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.cuda.is_initialized():
            return "CUDA is initialised"
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return "a torch.distributed process group is up"
    others = [
        t.name
        for t in threading.enumerate()
        if t is not threading.current_thread() and type(t).__name__ not in _HARMLESS_THREADS
    ]
    return f"thread {others[0]!r} is running" if others else None


def start_method() -> str:
    """How to start worker processes: "fork" when `fork_hazard` finds nothing, else
    "forkserver", whose workers are forked from a fresh server process that has no CUDA,
    process group or threads."""
    return "fork" if fork_hazard() is None else "forkserver"


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context of `start_method` (also for DataLoader workers); a fork
    server imports the heavy libraries once, so its workers start as quickly as forks."""
    method = start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["numpy", "h5py", "torch"])
    return ctx


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
    (default `MIN_ITEMS`) items, the chunks (default `CHUNK` items) go to that many worker
    processes: each gets `fn` and `context` and copies `context` once as pickling would (so
    a `Cache` opens its own files); only the chunks and their results cross between
    processes. The workers are forked from this process only when that is safe
    (`start_method`), else from a fresh fork server. Otherwise all runs here, as one chunk.
    A chunk that raises raises here, the first failing one in input order first.
    """
    items = list(items)
    chunk = CHUNK if chunk is None else chunk
    if workers < 2 or len(items) < (MIN_ITEMS if min_items is None else min_items):
        return fn(context, items)
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    out: list[R] = []
    procs = min(workers, len(chunks))
    ctx = worker_context()
    with ctx.Pool(procs, initializer=_start_worker, initargs=(fn, context)) as pool:
        for part in pool.imap(_run_chunk, chunks):
            out += part
    return out
