"""Training samples straight from the cache: no JPEG, no mask decode, no backbone, no Qhull.

Each item is a pure function of (seed, epoch, index), so any worker count, a resumed run or
another rank draws the same candidates for the same sample.

Reads: shard datasets are contiguous and uncompressed, so once a record's byte extents are known
(looked up through h5py once per record and process, kept in a bounded memo) a sample is a few
positional reads of exactly the bytes it uses: the two token blocks, the anchor, one adjacency
row and the descriptor rows it draws. Each read is announced to the kernel first
(POSIX_FADV_WILLNEED), so cold reads from disk overlap instead of queueing one behind another.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from omama.cache import quant
from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.loader.sampling import choose_negatives

_MEMO_RECORDS = 4096  # record extents kept per process (a few hundred bytes each)
_IMAGE_FIELDS = ("tokens", "token_scale", "obj_desc")
_CAND_FIELDS = ("desc", "adj", "anchor")


def read_rows(ds, rows: np.ndarray) -> np.ndarray:
    """Read only the given rows (h5py wants them sorted and unique), in the given order."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    return ds[uniq][inverse]


@dataclass(frozen=True)
class Extent:
    """Where a contiguous, uncompressed dataset's bytes lie in its shard file."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    row_bytes: int  # bytes of one row (of the whole thing for a scalar)


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
    """Fill the C-contiguous array `out` with the file's bytes from `offset` (positional read:
    the file position HDF5 may rely on is untouched)."""
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


def _runs(sorted_rows: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of consecutive values in a sorted unique array."""
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    edges = [0, *breaks.tolist(), len(sorted_rows)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _idle_refcount() -> int:
    """sys.getrefcount of an array that only a list holds, seen from a loop over that list."""
    for arr in [np.empty(1)]:
        return sys.getrefcount(arr)
    raise AssertionError


_IDLE = _idle_refcount()


class ArrayPool:
    """Arrays handed out again once nothing else references them.

    A DataLoader worker copies each batch into shared memory and then drops the samples, so
    the next batch's token arrays can reuse the same pages instead of faulting in 8 MB of
    fresh memory per sample. An array is in use while anything refers to it: a tensor made
    by torch.from_numpy (and every view of it) holds a reference, so reuse never aliases live
    data. At most `keep` arrays per shape are retained (a batch's worth, in steady state).
    """

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._arrays: dict[tuple, list[np.ndarray]] = {}

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        arrays = self._arrays.setdefault((tuple(shape), np.dtype(dtype).str), [])
        for arr in arrays:
            if sys.getrefcount(arr) <= _IDLE:
                return arr
        arr = np.empty(shape, dtype)
        if len(arrays) < self.keep:
            arrays.append(arr)
        return arr


@dataclass(frozen=True)
class _Record:
    shard: str
    path: str
    fields: dict[str, Extent | None]  # None: read through h5py


class RecordReader:
    """Reads record fields by extent (pread) when it can, through h5py otherwise.

    Holds no file handles of its own: file descriptors come from the cache's per-process
    ShardReader on each read, so it is safe across DataLoader forks and a closed cache.
    """

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._memo: OrderedDict[str, _Record] = OrderedDict()
        self.pool = ArrayPool()

    def __getstate__(self) -> dict:
        """A spawned worker starts with an empty memo and pool (both are per process)."""
        return {"cache": self.cache, "_memo": OrderedDict(), "pool": ArrayPool()}

    def _record(self, shard: str, path: str, names: Sequence[str]) -> _Record:
        rec = self._memo.get(path)
        if rec is not None:
            self._memo.move_to_end(path)
            return rec
        group = self.cache.shards.group(shard, path)
        fields = {name: extent(group[name]) for name in names if name in group}
        rec = _Record(shard, path, fields)
        self._memo[path] = rec
        if len(self._memo) > _MEMO_RECORDS:
            self._memo.popitem(last=False)
        return rec

    def image(self, key: str) -> _Record:
        shard = self.cache.manifest.images.get(key)
        if shard is None:
            self.cache.image_group(key)  # raises the cache's one-line error
        return self._record(shard, f"img/{key}", _IMAGE_FIELDS)

    def cands(self, direction: str, key: str) -> _Record:
        shard = self.cache.manifest.candidates.get(direction, {}).get(key)
        if shard is None:
            self.cache.cand_group(direction, key)  # raises the cache's one-line error
        return self._record(shard, f"cand/{direction}/{key}", _CAND_FIELDS)

    def _fd(self, rec: _Record) -> int:
        return self.cache.shards.file(rec.shard).id.get_vfd_handle()

    def _dataset(self, rec: _Record, name: str) -> h5py.Dataset:
        return self.cache.shards.group(rec.shard, rec.path)[name]

    def shape(self, rec: _Record, name: str) -> tuple[int, ...]:
        ext = rec.fields[name]
        return ext.shape if ext is not None else tuple(self._dataset(rec, name).shape)

    def hint(self, rec: _Record, name: str, rows: Sequence[int] | np.ndarray | None = None) -> None:
        """Tell the kernel these bytes are wanted soon, so that cold reads are queued together
        (a no-op where posix_fadvise is missing)."""
        ext = rec.fields.get(name)
        if ext is None or not hasattr(os, "posix_fadvise"):
            return
        fd = self._fd(rec)
        if rows is None:
            size = ext.row_bytes * (ext.shape[0] if ext.shape else 1)
            os.posix_fadvise(fd, ext.offset, size, os.POSIX_FADV_WILLNEED)
            return
        uniq = np.unique(np.asarray(rows, dtype=np.int64))
        for a, b in _runs(uniq):
            start = ext.offset + int(uniq[a]) * ext.row_bytes
            os.posix_fadvise(fd, start, (b - a) * ext.row_bytes, os.POSIX_FADV_WILLNEED)

    def whole(self, rec: _Record, name: str, pooled: bool = False) -> np.ndarray:
        """The whole dataset; `pooled`: into an array of self.pool (see ArrayPool)."""
        ext = rec.fields[name]
        if ext is None:
            return self._dataset(rec, name)[()]
        out = self.pool.empty(ext.shape, ext.dtype) if pooled else np.empty(ext.shape, ext.dtype)
        read_at(self._fd(rec), out, ext.offset)
        return out

    def rows(self, rec: _Record, name: str, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The given rows in the given order; each distinct row is read once."""
        rows = np.asarray(rows, dtype=np.int64)
        ext = rec.fields[name]
        if ext is None:
            return read_rows(self._dataset(rec, name), rows)
        n = ext.shape[0]
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row out of range 0..{n - 1} in {rec.path}/{name}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(uniq), *ext.shape[1:]), ext.dtype)
        fd = self._fd(rec)
        for a, b in _runs(uniq):
            read_at(fd, out[a:b], ext.offset + int(uniq[a]) * ext.row_bytes)
        return (
            out
            if len(uniq) == len(rows) and (inverse == np.arange(len(rows))).all()
            else out[inverse]
        )

    def tokens(self, rec: _Record) -> np.ndarray:
        """float16 [T, 768], whichever way they are stored (see omama.cache.quant)."""
        if "token_scale" in rec.fields:
            q = self.whole(rec, "tokens", pooled=True)
            out = self.pool.empty(q.shape, np.float16)
            return quant.dequantize(q, self.whole(rec, "token_scale"), out)
        return self.whole(rec, "tokens", pooled=True)


@dataclass
class _Draw:
    """One sample on its way through TrainSamples.__getitems__."""

    sample: Sample
    rng: np.random.Generator
    src: _Record
    dst: _Record
    cand: _Record
    anchor: int = -1
    rows: np.ndarray | None = None  # descriptor rows to read: negatives (+ stand-in positive)


class TrainSamples(Dataset):
    """Section 7's training samples, read from the cache.

    The DataLoader fetches a whole batch through __getitems__: every read of the batch is
    announced to the kernel before the first one is waited for, so cold reads from disk are
    in flight together rather than one sample at a time.
    """

    def __init__(self, cache: Cache, direction: str, split: str, n_masks: int, seed: int) -> None:
        self.cache = cache
        self.direction = direction
        self.samples = cache.samples(direction, split)
        self.n_masks = n_masks
        self.seed = seed
        self.reader = RecordReader(cache)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: tuple[int, int]) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        io = self.reader
        draws = []
        for epoch, i in indices:  # reads that depend on nothing: announced first
            s = self.samples[i]
            d = _Draw(
                s,
                np.random.default_rng([self.seed, epoch, i]),
                io.image(s.src),
                io.image(s.dst),
                io.cands(self.direction, s.dst),
            )
            for rec in (d.src, d.dst):
                io.hint(rec, "tokens")
                io.hint(rec, "token_scale")
            io.hint(d.src, "obj_desc", [s.src_k])
            if s.dst_k >= 0:
                io.hint(d.dst, "obj_desc", [s.dst_k])
                io.hint(d.cand, "anchor", [s.dst_k])
            draws.append(d)
        for d in draws:
            if d.sample.dst_k >= 0:
                d.anchor = int(io.rows(d.cand, "anchor", [d.sample.dst_k])[0])
                io.hint(d.cand, "adj", [d.anchor])
        for d in draws:
            n_cands = io.shape(d.cand, "desc")[0]
            adj_row = io.rows(d.cand, "adj", [d.anchor])[0] if d.anchor >= 0 else None
            d.rows = choose_negatives(n_cands, self.n_masks, d.anchor, adj_row, d.rng)
            if d.anchor < 0:  # invisible: a random candidate stands in for the positive
                d.rows = np.append(d.rows, int(d.rng.integers(n_cands)))
            io.hint(d.cand, "desc", d.rows)
        return [self._assemble(d) for d in draws]

    def _assemble(self, d: _Draw) -> dict[str, torch.Tensor]:
        io, s = self.reader, d.sample
        desc = io.rows(d.cand, "desc", d.rows)
        if d.anchor >= 0:  # visible: the positive is the ground-truth mask's own descriptor
            neg_desc, positive = desc, io.rows(d.dst, "obj_desc", [s.dst_k])[0]
        else:  # invisible: the loss ignores the sample
            neg_desc, positive = desc[:-1], desc[-1]
        slot = int(d.rng.integers(0, self.n_masks))
        cand_desc = np.insert(neg_desc, slot, positive, axis=0)
        return {
            "src_tokens": torch.from_numpy(io.tokens(d.src)),
            "dst_tokens": torch.from_numpy(io.tokens(d.dst)),
            "src_desc": torch.from_numpy(io.rows(d.src, "obj_desc", [s.src_k])[0]),
            "cand_desc": torch.from_numpy(np.ascontiguousarray(cand_desc)),
            "pos_index": torch.tensor(slot, dtype=torch.long),
            "visible": torch.tensor(float(d.anchor >= 0)),
        }


class EpochSampler(Sampler):
    """Seeded per-epoch shuffle yielding (epoch, index); can start mid-epoch for --resume and
    hand each of `num_replicas` ranks its own strided part."""

    def __init__(
        self,
        n: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        num_replicas: int = 1,
    ) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start` counts this rank's already-consumed samples (for a resumed epoch)."""
        self.epoch, self.start = epoch, start

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine = self.order()[self.rank :: self.num_replicas]
        for i in mine[self.start :]:
            yield (self.epoch, int(i))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas)) - self.start
