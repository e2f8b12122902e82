"""A split's samples as columns, memory-mapped: every process and worker shares one copy.

    CACHE/samples/{direction}_{split}.npz      (samples format 2; the manifest says so)

An uncompressed `.npz` (numpy's own zip of `.npy` files, readable with `np.load`) holding one
int32 column per `Sample` field and a sorted table of byte strings per kind of name:

    take, obj, src_cam, dst_cam, frame, src, dst   int32 ids into takes, objs, cams, frames,
                                                   images (utf-8, sorted, unique)
    src_k, dst_k                                   int32 object rows (dst_k -1: not visible)

It is written once by the end of a split (temp file, then rename) and read by mapping the
file: the columns are views of the page cache, so a forked loader worker, a torchrun rank or
a pickled copy (which reopens the file) adds no private copy of them; a `Sample` is built only
for the rows asked for. The image-key table is sorted, so a key's id is a binary search.

Samples format 1 (before) was a JSON list of objects, `CACHE/samples/{direction}_{split}.json`;
a cache holding it is refused in one line that names the command rewriting it.
"""

from __future__ import annotations

import dataclasses
import io
import mmap
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omama.cache.paths import legacy_samples_path, samples_path
from omama.cache.records import Sample
from omama.errors import OmamaError, bad_file
from omama.files import atomic_path

SAMPLES_FORMAT = 2

# field -> its string table (ids) or None (plain integers)
_FIELDS: dict[str, str | None] = {
    "take": "takes",
    "obj": "objs",
    "src_cam": "cams",
    "dst_cam": "cams",
    "frame": "frames",
    "src": "images",
    "dst": "images",
    "src_k": None,
    "dst_k": None,
}
_TABLES = ("takes", "objs", "cams", "frames", "images")
assert set(_FIELDS) == {f.name for f in dataclasses.fields(Sample)}
_ALIGN = 64  # each array's bytes start on a 64-byte boundary of the file


class SampleTable:
    """A split's samples as int32 columns and string tables (a view: some rows of a file).

    `table[i]` is a `Sample`; `table[a:b]`, `table.take_rows(idx)` are tables over those
    rows; iteration yields `Sample`s. `entry(i)` is row i's entry number in the file, for
    messages. Pickling a mapped table sends its path and rows only (the receiver maps it).
    """

    def __init__(
        self,
        columns: dict[str, np.ndarray],
        tables: dict[str, np.ndarray],
        path: Path | None = None,
        rows: np.ndarray | None = None,
        stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self.columns, self.tables, self.path = columns, tables, path
        self.rows = rows  # None: every row of the file, in order
        self._stamp = stamp  # (inode, size, mtime_ns) of a mapped file, None in memory
        self._cache: dict[str, list[str]] = {}

    # --- building ----------------------------------------------------------------------
    @classmethod
    def from_samples(cls, samples: Iterable[Sample]) -> SampleTable:
        """A table (in memory) of these samples, in this order."""
        samples = list(samples)
        names: dict[str, set[str]] = {t: set() for t in _TABLES}
        for s in samples:
            for field, table in _FIELDS.items():
                if table is not None:
                    names[table].add(str(getattr(s, field)))
        tables, ids = {}, {}
        for table, values in names.items():
            ordered = sorted(v.encode() for v in values)
            if any(v.endswith(b"\x00") for v in ordered):
                raise OmamaError(f"samples: a {table[:-1]} name ends with a NUL byte")
            tables[table] = np.array(ordered or [b""], dtype="S")[: len(ordered)]
            ids[table] = {v.decode(): i for i, v in enumerate(ordered)}
        columns = {}
        for field, table in _FIELDS.items():
            if table is None:
                values = [int(getattr(s, field)) for s in samples]
            else:
                values = [ids[table][str(getattr(s, field))] for s in samples]
            columns[field] = np.asarray(values, dtype=np.int32)
        return cls(columns, tables)

    # --- the view ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.columns["src"]) if self.rows is None else len(self.rows)

    def entry(self, i: int) -> int:
        """Row i's entry number in the samples file."""
        return int(i if self.rows is None else self.rows[i])

    def column(self, field: str) -> np.ndarray:
        """One column over this view's rows (ids for the string fields)."""
        col = self.columns[field]
        return col if self.rows is None else col[self.rows]

    def names(self, table: str) -> list[str]:
        """A string table decoded (memoised; the small ones, or for whole-split work)."""
        got = self._cache.get(table)
        if got is None:
            got = self._cache[table] = [v.decode() for v in self.tables[table].tolist()]
        return got

    def string(self, table: str, i: int) -> str:
        return self.tables[table][i].decode()

    def key(self, role: str, i: int) -> str:
        """Row i's image key of `role` ("src" or "dst")."""
        return self.string("images", int(self.columns[role][self.entry(i)]))

    def _sample(self, j: int) -> Sample:
        c, t = self.columns, self.tables
        images = t["images"]
        return Sample(
            take=t["takes"][c["take"][j]].decode(),
            obj=t["objs"][c["obj"][j]].decode(),
            src_cam=t["cams"][c["src_cam"][j]].decode(),
            dst_cam=t["cams"][c["dst_cam"][j]].decode(),
            frame=t["frames"][c["frame"][j]].decode(),
            src=images[c["src"][j]].decode(),
            dst=images[c["dst"][j]].decode(),
            src_k=int(c["src_k"][j]),
            dst_k=int(c["dst_k"][j]),
        )

    def __getitem__(self, i):  # int -> Sample; slice or index array -> SampleTable
        if isinstance(i, slice):
            return self.take_rows(np.arange(len(self))[i])
        if isinstance(i, np.ndarray):
            return self.take_rows(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} of {n}")
        return self._sample(self.entry(i % n))

    def take_rows(self, idx: Sequence[int] | np.ndarray) -> SampleTable:
        """The table over rows `idx` of this one (shares the columns)."""
        idx = np.asarray(idx, dtype=np.int64)
        rows = idx if self.rows is None else self.rows[idx]
        view = SampleTable(self.columns, self.tables, self.path, rows, self._stamp)
        view._cache = self._cache
        return view

    def __iter__(self) -> Iterator[Sample]:
        c, strings = self.columns, {t: self.names(t) for t in _TABLES}
        entries = range(len(self)) if self.rows is None else self.rows.tolist()
        cols = {f: c[f] for f in _FIELDS}
        for j in entries:
            yield Sample(
                **{
                    f: (int(cols[f][j]) if t is None else strings[t][cols[f][j]])
                    for f, t in _FIELDS.items()
                }
            )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampleTable | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SampleTable({len(self)} samples, {self.path or 'in memory'})"

    # --- pickling: a mapped table travels as its path -------------------------------------
    def __getstate__(self) -> dict:
        if self._stamp is None:
            return {"columns": self.columns, "tables": self.tables, "rows": self.rows}
        return {"path": self.path, "rows": self.rows, "stamp": self._stamp}

    def __setstate__(self, state: dict) -> None:
        if "path" in state:
            mapped = read_samples(state["path"])
            if mapped._stamp != state["stamp"]:
                raise bad_file(state["path"], "samples file replaced while in use; start again")
            self.__dict__.update(mapped.__dict__)
            self.rows = state["rows"]
        else:
            self.__init__(state["columns"], state["tables"], None, state["rows"])


def as_table(samples: SampleTable | Iterable[Sample]) -> SampleTable:
    """`samples` as a table (a list of `Sample`s is converted)."""
    return samples if isinstance(samples, SampleTable) else SampleTable.from_samples(samples)


# --- the file ----------------------------------------------------------------------------
def write_samples(
    path: Path, samples: SampleTable | Iterable[Sample], extra: dict[str, np.ndarray] | None = None
) -> None:
    """Write a samples file (format 2), atomically: an uncompressed npz with each array's
    bytes 64-byte aligned; the same samples always give the same bytes. `extra`: more
    arrays after the samples' (a file that carries samples among other things, such as a
    precompute plan; `read_samples` reads the samples of it)."""
    table = as_table(samples)
    arrays = {"format": np.array([SAMPLES_FORMAT], np.int32)}
    arrays |= {f: np.ascontiguousarray(table.column(f), np.int32) for f in _FIELDS}
    arrays |= {t: table.tables[t] for t in _TABLES}
    arrays |= extra or {}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            # pad the local header's extra field so the array's .npy starts aligned
            start = fh.tell() + 30 + len(info.filename) + 4
            info.extra = b"\xfe\xca" + (-start % _ALIGN).to_bytes(2, "little")
            info.extra += b"\x00" * (-start % _ALIGN)
            zf.writestr(info, buf.getvalue())


def read_samples(path: Path) -> SampleTable:
    """Map a samples file (format 2); anything else is one line naming it."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise bad_file(path, f"cannot read the samples file ({exc.strerror})") from None
    with fh:
        st = os.fstat(fh.fileno())
        try:
            arrays = _map_npz(fh)
        except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError) as exc:
            raise bad_file(path, f"not a samples file ({exc})") from None
    fmt = arrays.pop("format", None)
    if fmt is None or fmt.shape != (1,) or int(fmt[0]) != SAMPLES_FORMAT:
        got = "none" if fmt is None or fmt.size != 1 else int(fmt[0])
        raise bad_file(path, f"samples format {got}, this omama reads {SAMPLES_FORMAT}")
    missing = [k for k in (*_FIELDS, *_TABLES) if k not in arrays]
    if missing:
        raise bad_file(path, f"malformed samples file: no {missing[0]!r} array")
    columns = {f: arrays[f] for f in _FIELDS}
    tables = {t: arrays[t] for t in _TABLES}
    _check(path, columns, tables)
    return SampleTable(columns, tables, path, None, (st.st_ino, st.st_size, st.st_mtime_ns))


def _map_npz(fh) -> dict[str, np.ndarray]:
    """Each stored (uncompressed) member of an npz as a read-only view of one file mapping."""
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
    size = os.fstat(fh.fileno()).st_size
    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    out = {}
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{info.filename} is compressed")
        fh.seek(info.header_offset + 26)
        n_name, n_extra = np.frombuffer(fh.read(4), "<u2")
        start = info.header_offset + 30 + int(n_name) + int(n_extra)
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{info.filename}: .npy version {version}")
        if dtype.hasobject or fortran:
            raise ValueError(f"{info.filename} is not a plain array")
        count = int(np.prod(shape, dtype=np.int64))
        offset = fh.tell()
        if offset + count * dtype.itemsize > start + info.file_size:
            raise ValueError(f"{info.filename} is truncated")
        arr = np.frombuffer(mm, dtype, count, offset) if count else np.zeros(0, dtype)
        out[info.filename.removesuffix(".npy")] = arr.reshape(shape)
    return out


def _check(path: Path, columns: dict[str, np.ndarray], tables: dict[str, np.ndarray]) -> None:
    """Columns of one length and int32, ids inside their tables, the image keys sorted."""
    n = len(columns["src"])
    for field, table in _FIELDS.items():
        col = columns[field]
        if col.dtype != np.int32 or col.shape != (n,):
            raise bad_file(path, f"malformed samples file: column {field!r} is not {n} int32")
        if table is not None and n and (col.min() < 0 or col.max() >= len(tables[table])):
            raise bad_file(path, f"malformed samples file: {field!r} names no {table[:-1]}")
    keys = tables["images"]
    if keys.dtype.kind != "S" or (len(keys) > 1 and not (keys[1:] > keys[:-1]).all()):
        raise bad_file(path, "malformed samples file: the image keys are not sorted and unique")


def check_object_rows(samples: SampleTable, i: int, n_src: int, n_dst: int) -> None:
    """Row i's object rows against its images' object counts (`n_src`, `n_dst`): a row
    outside them is one line naming the samples file and the entry (the loaders call this
    before reading; `--verify` checks every entry the same way)."""
    j = samples.entry(i)
    src_k, dst_k = int(samples.columns["src_k"][j]), int(samples.columns["dst_k"][j])
    problem = None
    if not 0 <= src_k < n_src:
        problem = f"source object row {src_k}, but image {samples.key('src', i)} has {n_src}"
    elif not -1 <= dst_k < n_dst:
        problem = f"destination object row {dst_k}, but image {samples.key('dst', i)} has {n_dst}"
    if problem:
        where = samples.path if samples.path is not None else "samples"
        raise bad_file(where, f"entry {j}: {problem} objects")


# --- a cache's samples -------------------------------------------------------------------
def load_samples(
    cache: Path, direction: str, split: str, formats: dict[str, int] | None = None
) -> SampleTable:
    """A split's samples; `formats`: the manifest's samples format per "direction/split".
    Samples of an older omama, a missing or a malformed file: one line naming it."""
    path = samples_path(cache, direction, split)
    fmt = (formats or {}).get(f"{direction}/{split}")
    old = legacy_samples_path(cache, direction, split)
    if fmt is None and old.exists():
        raise bad_file(
            old,
            f"samples in the JSON format of an older omama; rerun omama-precompute --split "
            f"{split} --direction {direction} on this --cache (nothing is recomputed, the "
            "samples are rewritten as columns)",
        )
    if not path.exists():
        raise bad_file(
            path, f"no {direction} {split} samples in this cache; run omama-precompute first"
        )
    if fmt is not None and fmt != SAMPLES_FORMAT:
        raise bad_file(path, f"samples format {fmt}, this omama reads {SAMPLES_FORMAT}")
    return read_samples(path)


def save_samples(cache: Path, direction: str, split: str, samples: Any) -> int:
    """Write a split's samples (and remove a JSON file of an older omama); returns the
    format to record in the manifest."""
    write_samples(samples_path(cache, direction, split), samples)
    legacy_samples_path(cache, direction, split).unlink(missing_ok=True)
    return SAMPLES_FORMAT
