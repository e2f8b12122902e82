"""The plain forms `make bench` times omama against, written as directly as the method reads.

Nothing here is tuned: each function is the obvious transcription, so that a ratio in
BENCHMARKS.md says how much the project's path saves over the straightforward code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

READ_CHUNK = 1 << 20  # bytes per read() of the raw sequential baseline


def loop_descriptors(dense: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Section 5, one mask at a time: nearest-resize the mask to the dense map, average the
    features under it; grow the box by 100 px, clamp, divide by 4, average the window."""
    c, h, w = dense.shape
    n, big_h, big_w = masks.shape
    out = torch.zeros(n, 2 * c, device=dense.device)
    for i in range(n):
        m = F.interpolate(masks[i][None, None].float(), size=(h, w), mode="nearest")[0, 0]
        m = (m != 0).float()
        if m.sum() > 0:
            out[i, :c] = (dense * m).sum(dim=(1, 2)) / m.sum()
        x, y, bw, bh = (int(v) for v in boxes[i].tolist())  # int() truncates toward zero
        x1, y1, x2, y2 = x, y, x + bw, y + bh
        x1 = min(max(x1 - 100, 0), big_w)
        y1 = min(max(y1 - 100, 0), big_h)
        x2 = min(max(x2 + 100, 0), big_w)
        y2 = min(max(y2 + 100, 0), big_h)
        x1, y1, x2, y2 = (math.floor(v / 4) for v in (x1, y1, x2, y2))
        x2 = max(x1 + 1, x2)
        y2 = max(y1 + 1, y2)
        max_x, max_y = big_w // 4 - 1, big_h // 4 - 1
        x1 = min(max(x1, 0), max_x)
        y1 = min(max(y1, 0), max_y)
        x2 = min(max(x2, 0), max_x + 1)
        y2 = min(max(y2, 0), max_y + 1)
        out[i, c:] = dense[:, y1:y2, x1:x2].mean(dim=(1, 2))
    return out


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
