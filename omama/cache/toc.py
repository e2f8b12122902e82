"""A shard's table of contents: where every dataset of every record lies, read in one go.

A reader needs a record's extents (`omama.cache.extents`) before it can read its bytes.
Found through HDF5 they cost a group and one dataset open per field: about 0.8 ms a record,
paid again whenever a record falls out of the reader's memo, which at real size (1,400
shards read at random) is nearly every read: most of a training loader's time. So the
writer stores, as the shard's last dataset `toc`, one row per (record, field): the record's
path, the field's name, dtype, offset and shape, computed by `extent` from each dataset as
it is created; a reader loads it once per open shard and finds a record's rows by binary search.

The table is stored as bytes (uint8): two little-endian int64 widths (of the path and the
field columns), then the rows as a little-endian numpy structured array; read with one
low-level HDF5 call, it costs about a fifth of a compound dataset's read. A field only HDF5
can read (strings, empty datasets) has offset -1. A shard without a `toc` (written before
it existed) is read through HDF5 as before; `verify` checks that every row agrees with HDF5.
"""

from __future__ import annotations

import math

import h5py
import numpy as np

from omama.cache.extents import Extent, extent

NAME = "toc"
MAX_DIMS = 4  # shard datasets have at most 3 dimensions (an image: H, W, 3)


def _dtype(path_len: int, name_len: int) -> np.dtype:
    return np.dtype(
        [
            ("path", f"S{path_len}"),
            ("field", f"S{name_len}"),
            ("dtype", "S8"),
            ("offset", "<i8"),
            ("ndim", "<i8"),
            ("shape", "<i8", (MAX_DIMS,)),
        ]
    )


Row = tuple[str, str, Extent | None]  # record path, field name, extent


def toc_row(path: str, name: str, ds: h5py.Dataset) -> Row:
    """The table's row of dataset `name` of record `path`."""
    return path, name, extent(ds) if len(ds.shape) <= MAX_DIMS else None


def _record_rows(f: h5py.File, path: str) -> list[Row]:
    items = f[path].items()
    return [toc_row(path, name, ds) for name, ds in items if isinstance(ds, h5py.Dataset)]


def write_toc(f: h5py.File, rows: list[Row]) -> None:
    """Store the table of the open shard `f`, its `rows` sorted by path."""
    rows = sorted(rows, key=lambda row: row[:2])
    width = max((len(p.encode()) for p, _, _ in rows), default=1)
    name_width = max((len(n.encode()) for _, n, _ in rows), default=1)
    table = np.zeros(len(rows), _dtype(width, name_width))
    for i, (path, name, ext) in enumerate(rows):
        table[i]["path"], table[i]["field"] = path.encode(), name.encode()
        table[i]["shape"] = -1
        if ext is None:
            table[i]["offset"], table[i]["ndim"] = -1, -1
            continue
        table[i]["dtype"] = ext.dtype.str.encode()
        table[i]["offset"], table[i]["ndim"] = ext.offset, len(ext.shape)
        table[i]["shape"][: len(ext.shape)] = ext.shape
    header = np.array([width, name_width], "<i8").tobytes()
    f.create_dataset(NAME, data=np.frombuffer(header + table.tobytes(), np.uint8))


class Toc:
    """A shard's table, loaded: `fields(path)` is what `extent` gives for each dataset of
    the record, without opening any of them."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.paths = table["path"]

    @classmethod
    def load(cls, f: h5py.File) -> Toc | None:
        """The table of the open shard, or None for a shard written without one."""
        if NAME.encode() not in f.id:
            return None
        ds = h5py.h5d.open(f.id, NAME.encode())
        raw = np.empty(ds.shape, np.uint8)
        ds.read(h5py.h5s.ALL, h5py.h5s.ALL, raw)
        width, name_width = (int(v) for v in raw[:16].view("<i8"))
        return cls(raw[16:].view(_dtype(width, name_width)))

    def fields(self, path: str) -> dict[str, Extent | None] | None:
        """Each dataset of record `path` and its extent (None: read through HDF5), or None
        when the table does not hold the record."""
        key = path.encode()
        lo = int(np.searchsorted(self.paths, key, "left"))
        hi = int(np.searchsorted(self.paths, key, "right"))
        if lo == hi:
            return None
        out: dict[str, Extent | None] = {}
        for _, name, dtype_str, offset, ndim, dims in self.table[lo:hi].tolist():
            if offset < 0:
                out[name.decode()] = None
                continue
            dtype, shape = np.dtype(dtype_str.decode()), tuple(dims[:ndim].tolist())
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            out[name.decode()] = Extent(offset, shape, dtype, row_bytes)
        return out


def toc_problems(f: h5py.File) -> list[str]:
    """Where the shard's table disagrees with the shard itself (empty without a table)."""
    toc = Toc.load(f)
    if toc is None:
        return []
    problems = []
    for path in sorted({p.decode() for p in toc.paths}):
        if not isinstance(f.get(path), h5py.Group):
            problems.append(f"{NAME} lists {path}, which the shard does not hold")
        elif toc.fields(path) != {name: ext for _, name, ext in _record_rows(f, path)}:
            problems.append(f"{NAME} disagrees with the datasets of {path}")
    return problems
