"""Precompute's writer thread: calls in order, failures raised in the caller, never lost."""

from __future__ import annotations

import threading
import time

import pytest

from omama.errors import OmamaError
from omama.serial import SerialWrites


def test_calls_run_in_order_on_one_other_thread():
    seen, threads = [], set()

    def call(i: int) -> None:
        time.sleep(0.001 * (i % 3))
        seen.append(i)
        threads.add(threading.get_ident())

    writes = SerialWrites(depth=3)
    for i in range(20):
        writes.submit(call, i)
    writes.drain()
    assert seen == list(range(20))
    assert threads and threading.get_ident() not in threads and len(threads) == 1


def test_a_failure_is_raised_at_the_next_submit_or_drain():
    def fail() -> None:
        raise OmamaError("shard.h5: cannot write cache shard (disk full)")

    writes = SerialWrites(depth=1)
    writes.submit(fail)
    with pytest.raises(OmamaError, match="disk full"):
        writes.submit(lambda: None)  # waits for the failed call: depth 1
    writes.stop()

    later = SerialWrites()
    later.submit(fail)
    with pytest.raises(OmamaError, match="disk full"):
        later.drain()


def test_stop_drops_what_has_not_started():
    gate, ran = threading.Event(), []
    writes = SerialWrites(depth=10)
    writes.submit(gate.wait)  # running: stop waits for it
    for i in range(5):
        writes.submit(ran.append, i)  # queued behind it: stop drops them
    threading.Timer(0.05, gate.set).start()
    writes.stop()
    assert gate.is_set() and ran == []
