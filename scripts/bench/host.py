"""CPU and memory accounting on a host shared with other jobs, all read from /proc.

How many cores other processes kept busy during a row (the table's machine column), waiting
for a quiet moment before one, CPU seconds of this process and its workers (figures robust
to other tenants), and the PSS of a process tree (row 7).
"""

from __future__ import annotations

import logging
import os
import re
import resource
import time
from pathlib import Path

log = logging.getLogger("bench")


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _ticks_busy_total() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole host since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / hz, sum(fields) / hz


def tree_pids(pid: int) -> list[int]:
    """The process and its live descendants."""
    pids, stack = [], [pid]
    while stack:
        q = stack.pop()
        pids.append(q)
        try:
            for task in os.listdir(f"/proc/{q}/task"):
                children = Path(f"/proc/{q}/task/{task}/children").read_text().split()
                stack += [int(c) for c in children]
        except OSError:
            continue
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of other processes (DataLoader workers), from /proc."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have exited (workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _own_seconds() -> float:
    """CPU seconds of this process and its live descendants (workers, subprocesses)."""
    return time.process_time() + cpu_seconds(tree_pids(os.getpid())[1:])


class OtherLoad:
    """Average number of cores other processes kept busy between start() and stop()."""

    def __init__(self) -> None:
        self.ok = Path("/proc/stat").exists()
        self.start()

    def start(self) -> None:
        if self.ok:
            self._busy, _ = _ticks_busy_total()
            self._own, self._t = _own_seconds(), time.perf_counter()

    def stop(self) -> float | None:
        if not self.ok:
            return None
        busy, _ = _ticks_busy_total()
        own, dt = _own_seconds() - self._own, time.perf_counter() - self._t
        return max(0.0, (busy - self._busy - own) / max(dt, 1e-9))


def wait_until_quiet(budget: list[float], limit: float = 0.5) -> float | None:
    """Wait (from a shared budget of seconds) until other processes use under `limit` cores
    over one second; returns what they used in the last second looked at."""
    probe = OtherLoad()
    if not probe.ok:
        return None
    while True:
        probe.start()
        time.sleep(1.0)
        budget[0] -= 1.0
        others = probe.stop()
        if others is None or others < limit or budget[0] <= 0:
            return others
        log.info("host busy (other processes use %.1f cores): waiting", others)


def tree_pss(pid: int) -> tuple[int, int]:
    """(PSS of the process and its descendants, RSS of the process) in bytes; PSS counts
    shared pages (libraries, shared-memory batches) once across the tree."""
    total, main_rss = 0, 0
    for q in tree_pids(pid):
        try:
            text = Path(f"/proc/{q}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        total += int(m.group(1)) * 1024 if m else 0
        if q == pid:
            r = re.search(r"^Rss:\s+(\d+) kB", text, re.M)
            main_rss = int(r.group(1)) * 1024 if r else 0
    return total, main_rss
