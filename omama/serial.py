"""One thread that runs calls in the order they were submitted, behind the caller.

The one mechanism of the project's ordered background writes: precompute's shard writes
(omama.precompute.build) and training's checkpoint saves (omama.train.saver). A failed call
is raised in the caller at its next `submit`, `wait` or `drain`, never lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class SerialWrites:
    """Calls run in order on one thread, at most `depth` waiting (each holds what it writes);
    the first failure is raised in the caller at its next submit, `wait` or `drain`."""

    def __init__(self, depth: int = 8, name: str = "shard-writer") -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.pending: deque[Future] = deque()
        self.depth = depth

    def submit(self, fn: Callable, *args: object) -> None:
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.depth):
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(fn, *args))

    def wait(self) -> None:
        """Wait for every call submitted; raise the first failure."""
        while self.pending:
            self.pending.popleft().result()

    def drain(self) -> None:
        """`wait`, then stop the thread (also when a call failed)."""
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)

    def stop(self) -> None:
        """After a failure elsewhere: drop what has not started, wait for what has."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
