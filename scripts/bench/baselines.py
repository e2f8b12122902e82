"""The plain reads `make bench` times the cache loader against (row 4), written as directly as
they read: nothing here is tuned, so that a ratio says how much the loader gives up or gains
over the straightforward code. The plain oracles the tests share are in `tests/oracles.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

READ_CHUNK = 1 << 20  # bytes per read() of the raw sequential baseline


def drop_from_page_cache(paths: Iterable[Path]) -> bool:
    """Ask the kernel to forget the files' cached pages; False where it cannot be asked."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def sequential_read(paths: Iterable[Path], chunk: int = READ_CHUNK) -> int:
    """Read whole files front to back into one reused buffer; returns the bytes read."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(view):
                total += n
    return total


def read_ranges(ranges: Iterable[tuple[str, int, int]], chunk: int = READ_CHUNK) -> int:
    """Plain read() calls of (path, offset, length) ranges, one file handle per path, in the
    order given; returns the bytes read."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    handles: dict[str, object] = {}
    try:
        for path, offset, length in ranges:
            fh = handles.get(path)
            if fh is None:
                fh = handles[path] = open(path, "rb", buffering=0)
            fh.seek(offset)
            left = length
            while left > 0:
                n = fh.readinto(view[: min(chunk, left)])
                if not n:
                    break
                total += n
                left -= n
    finally:
        for fh in handles.values():
            fh.close()
    return total
