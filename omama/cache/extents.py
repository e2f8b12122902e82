"""Byte extents of contiguous HDF5 datasets, and positional reads of exactly those bytes.

Shard datasets are contiguous and uncompressed, so once a dataset's offset in its file is
known, a read of some of its rows is one `pread` per run of consecutive rows: no HDF5 call,
no file position shared with HDF5, and a read can be announced to the kernel beforehand
(POSIX_FADV_WILLNEED) so that cold reads from disk are queued together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np


@dataclass(frozen=True)
class Extent:
    """Where a contiguous, uncompressed dataset's bytes lie in its shard file."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    row_bytes: int  # bytes of one row (of the whole thing for a scalar)

    @property
    def nbytes(self) -> int:
        return self.row_bytes * (self.shape[0] if self.shape else 1)


def extent(ds: h5py.Dataset) -> Extent | None:
    """The dataset's extent, or None when only HDF5 can read it (chunked, external, not yet
    allocated, empty, or a non-native or variable-length dtype)."""
    if ds.dtype.hasobject or not ds.dtype.isnative or ds.size == 0:
        return None
    offset = ds.id.get_offset()
    plist = ds.id.get_create_plist()
    if offset is None or plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_external_count():
        return None
    shape = tuple(int(v) for v in ds.shape)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * ds.dtype.itemsize
    return Extent(int(offset), shape, ds.dtype, row_bytes)


def read_at(fd: int, out: np.ndarray, offset: int) -> None:
    """Fill the C-contiguous array `out` with the file's bytes from `offset`."""
    view = memoryview(out).cast("B")
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[done:]], offset + done)
        else:  # platforms without preadv: one copy more
            chunk = os.pread(fd, len(view) - done, offset + done)
            n = len(chunk)
            view[done : done + n] = chunk
        if n <= 0:
            raise OSError(f"short read at byte {offset + done} of a cache shard")
        done += n


def runs(sorted_rows: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of consecutive values in a sorted unique array."""
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    edges = [0, *breaks.tolist(), len(sorted_rows)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def advise(fd: int, ext: Extent, rows: np.ndarray | None = None) -> None:
    """Tell the kernel these bytes (all, or the given rows) are wanted soon; a no-op where
    posix_fadvise is missing."""
    if not hasattr(os, "posix_fadvise"):
        return
    if rows is None:
        os.posix_fadvise(fd, ext.offset, ext.nbytes, os.POSIX_FADV_WILLNEED)
        return
    uniq = np.unique(rows)
    for a, b in runs(uniq):
        start = ext.offset + int(uniq[a]) * ext.row_bytes
        os.posix_fadvise(fd, start, (b - a) * ext.row_bytes, os.POSIX_FADV_WILLNEED)


def read_rows_at(fd: int, ext: Extent, rows: np.ndarray, out: np.ndarray) -> None:
    """Rows `rows` (sorted, unique) of the dataset into `out`, one read per run."""
    for a, b in runs(rows):
        read_at(fd, out[a:b], ext.offset + int(rows[a]) * ext.row_bytes)
