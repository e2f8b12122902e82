"""The one way to read a finished cache: training, evaluation and pictures all read through here.

    cache = Cache(CACHE)
    samples = cache.samples("exo2ego", "train")  # a SampleTable (columns, memory-mapped)
    rec = cache.image(samples[0].src)            # a record handle (memoised per process)
    tokens = cache.tokens(rec)                   # float16 [T, C], fp16 or int8 storage
    rows = cache.rows(cache.cands("exo2ego", samples[0].dst), "desc", [3, 1])
    reader = cache.reader(samples, "exo2ego")    # the same reads, for loader workers

A record handle knows where each of its array fields lies in its shard file (see `extents`):
array fields are read with positional reads of exactly the bytes asked for, into arrays the
caller may supply (a whole batch is allocated once and read into); strings (RLEs, names) and
anything HDF5 alone can read go through h5py. File handles are opened lazily per process, so
a `Cache` is safe to hand to DataLoader workers. The record reads live in `Records`, which
finds a record's shard through a locator: the manifest's maps for a `Cache`, or, for the
reader handed to loader and post-processing workers (`Cache.reader`), arrays over one
split's image keys (a binary search in the samples file's sorted key table), so a worker
carries neither the manifest nor a copy of the samples.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from omama.cache import quant
from omama.cache.extents import Extent, advise, extent, read_at, read_rows_at
from omama.cache.manifest import Manifest, load_manifest
from omama.cache.paths import bad_report_path, manifest_path
from omama.cache.records import Sample
from omama.cache.samples import SampleTable, as_table, load_samples
from omama.cache.shards import ShardReader
from omama.errors import OmamaError, bad_file

log = logging.getLogger(__name__)

_MEMO_RECORDS = 4096  # record handles kept per process (a few hundred bytes each)


@dataclass(frozen=True)
class Record:
    """One cached record: its shard, its group path and the extents of its array fields."""

    shard: str
    path: str
    fields: dict[str, Extent | None]  # every dataset of the group; None: read through h5py

    @property
    def quantized(self) -> bool:
        """Tokens stored as int8 with one fp16 scale per token (`--features int8`)."""
        return "token_scale" in self.fields


def image_keys(samples: SampleTable) -> list[str]:
    """The samples file's image keys, decoded (not kept: the table keeps its bytes)."""
    return [k.decode() for k in samples.tables["images"].tolist()]


class ManifestLocator:
    """Where records are, from the manifest's maps (image key -> shard)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def image_shard(self, key: str) -> str | None:
        return self.manifest.images.get(key)

    def cand_shard(self, direction: str, key: str) -> str | None:
        return self.manifest.candidates.get(direction, {}).get(key)


class SampleLocator:
    """Where one split's records are, as arrays over its samples file's sorted image keys:
    a few bytes per image, and the key table itself stays in the shared file mapping."""

    def __init__(self, samples: SampleTable, manifest: Manifest, direction: str) -> None:
        self.samples, self.direction = samples, direction
        keys = image_keys(samples)
        images, cands = manifest.images, manifest.candidates.get(direction, {})
        img = [images.get(k) for k in keys]
        cand = [cands.get(k) for k in keys]
        self.shards = sorted({n for n in (*img, *cand) if n is not None})
        index = {n: i for i, n in enumerate(self.shards)}
        self.image = np.array([index.get(n, -1) for n in img], np.int32)  # type: ignore[arg-type]
        self.cand = np.array([index.get(n, -1) for n in cand], np.int32)  # type: ignore[arg-type]

    def _shard(self, which: np.ndarray, key: str) -> str | None:
        keys = self.samples.tables["images"]
        raw = key.encode()
        i = int(np.searchsorted(keys, raw))
        if i >= len(keys) or keys[i] != raw or which[i] < 0:
            return None
        return self.shards[which[i]]

    def image_shard(self, key: str) -> str | None:
        return self._shard(self.image, key)

    def cand_shard(self, direction: str, key: str) -> str | None:
        return self._shard(self.cand, key) if direction == self.direction else None


class Records:
    """Record handles and field reads of a cache folder, read-only; picklable (workers open
    their own handles). `where` finds each record's shard (see the module's docstring)."""

    def __init__(self, path: str | Path, where: ManifestLocator | SampleLocator) -> None:
        self.path = Path(path)
        self.where = where
        self.shards = ShardReader(self.path)
        self._memo: OrderedDict[str, Record] = OrderedDict()

    def __getstate__(self) -> dict:
        """A worker process starts with no handles and an empty memo (both are per process)."""
        return {**self.__dict__, "shards": ShardReader(self.path), "_memo": OrderedDict()}

    def role_grids(
        self, samples: SampleTable | Sequence[Sample]
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """(destination grid, source grid): one each, since the matcher's position embeddings
        are tied to a grid. A camera's frames share one size, so one image per camera is
        read; mixed grids are refused with the offending image named."""
        table = as_table(samples)
        take = table.column("take").astype(np.int64)
        grids = []
        for role in ("dst", "src"):
            cam = table.column(f"{role}_cam").astype(np.int64)
            _, first_rows = np.unique(take * (len(table.tables["cams"]) + 1) + cam, True)
            first = table.key(role, 0)
            want = self.grid(first)
            for i in sorted(first_rows.tolist()):
                key = table.key(role, i)
                got = self.grid(key)
                if got != want:
                    raise OmamaError(
                        f"{self.path}: image {key} has a {got[0]}x{got[1]} patch grid but "
                        f"{first} has {want[0]}x{want[1]}; all {role} images must share one"
                    )
            grids.append(want)
        return grids[0], grids[1]

    # --- record handles ------------------------------------------------------------------
    def image(self, key: str) -> Record:
        """The image record `img/{key}`: tokens, image, obj_* fields."""
        shard = self.where.image_shard(key)
        if shard is None:
            raise bad_file(manifest_path(self.path), f"image {key} is not in this cache")
        return self._record(shard, f"img/{key}")

    def cands(self, direction: str, key: str) -> Record:
        """The candidate record `cand/{direction}/{key}`: desc, boxes, adj, rle, anchor."""
        shard = self.where.cand_shard(direction, key)
        if shard is None:
            raise bad_file(
                manifest_path(self.path), f"{direction} candidates of {key} are not in this cache"
            )
        return self._record(shard, f"cand/{direction}/{key}")

    def _record(self, shard: str, path: str) -> Record:
        rec = self._memo.get(path)
        if rec is not None:
            self._memo.move_to_end(path)
            return rec
        toc = self.shards.toc(shard)
        fields = toc.fields(path) if toc is not None else None
        if fields is None:  # a shard written without a table of contents
            group = self._group(shard, path)
            fields = {n: extent(ds) for n, ds in group.items() if isinstance(ds, h5py.Dataset)}
        rec = Record(shard, path, fields)
        self._memo[path] = rec
        if len(self._memo) > _MEMO_RECORDS:
            self._memo.popitem(last=False)
        return rec

    def _group(self, shard: str, path: str) -> h5py.Group:
        try:
            return self.shards.file(shard)[path]
        except KeyError:
            raise bad_file(self.shards.dir / shard, f"record {path} is missing") from None

    def _dataset(self, rec: Record, name: str) -> h5py.Dataset:
        if name not in rec.fields:
            raise bad_file(self.shards.dir / rec.shard, f"record {rec.path} has no {name}")
        return self._group(rec.shard, rec.path)[name]

    def _read_failed(self, rec: Record, name: str, exc: OSError) -> OmamaError:
        """A failed positional read (a shard cut short or replaced under a running reader, a
        disk error) as one line naming the shard and the field."""
        why = exc.strerror or str(exc)
        return bad_file(self.shards.dir / rec.shard, f"reading {rec.path}/{name} failed ({why})")

    def _fd(self, rec: Record) -> int:
        return self.shards.file(rec.shard).id.get_vfd_handle()

    # --- fields --------------------------------------------------------------------------
    def shape(self, rec: Record, name: str) -> tuple[int, ...]:
        ext = rec.fields.get(name)
        return ext.shape if ext is not None else tuple(self._dataset(rec, name).shape)

    def attr(self, rec: Record, name: str) -> tuple[int, ...]:
        """An integer-pair attribute of the record (`grid`, `orig_hw`)."""
        return tuple(int(v) for v in self._group(rec.shard, rec.path).attrs[name])

    def hint(self, rec: Record, name: str, rows: Sequence[int] | np.ndarray | None = None) -> None:
        """Announce a read (the whole field, or some rows) so cold reads queue together."""
        ext = rec.fields.get(name)
        if ext is not None:
            advise(self._fd(rec), ext, None if rows is None else np.asarray(rows, np.int64))

    def whole(self, rec: Record, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """The whole field, into `out` when given (same shape and dtype)."""
        ext = rec.fields.get(name)
        if ext is None:
            data = self._dataset(rec, name)[()]
            if out is None:
                return data
            out[...] = data
            return out
        if out is None:
            out = np.empty(ext.shape, ext.dtype)
        try:
            read_at(self._fd(rec), out, ext.offset)
        except OSError as exc:
            raise self._read_failed(rec, name, exc) from None
        return out

    def rows(self, rec: Record, name: str, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """The given rows in the given order; each distinct row is read once."""
        rows = np.asarray(rows, dtype=np.int64)
        shape = self.shape(rec, name)
        if rows.size and (rows.min() < 0 or rows.max() >= shape[0]):
            raise IndexError(f"row out of range 0..{shape[0] - 1} in {rec.path}/{name}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        ext = rec.fields.get(name)
        if ext is None:
            out = self._dataset(rec, name)[uniq]
        else:
            out = np.empty((len(uniq), *ext.shape[1:]), ext.dtype)
            try:
                read_rows_at(self._fd(rec), ext, uniq, out)
            except OSError as exc:
                raise self._read_failed(rec, name, exc) from None
        in_order = len(uniq) == len(rows) and bool((inverse == np.arange(len(rows))).all())
        return out if in_order else out[inverse]

    def tokens(self, rec: Record | str, out: np.ndarray | None = None) -> np.ndarray:
        """An image's patch tokens as float16 [T, C] (C: the backbone's width), whichever way
        they are stored; into `out` (float16 [T, C]) when given. The one place that reads the
        8-bit layout."""
        if isinstance(rec, str):
            rec = self.image(rec)
        if rec.quantized:
            return quant.dequantize(self.whole(rec, "tokens"), self.whole(rec, "token_scale"), out)
        return self.whole(rec, "tokens", out)

    def string(self, rec: Record, name: str, i: int) -> str:
        value = self._dataset(rec, name)[i]
        return value.decode() if isinstance(value, bytes) else value

    # --- by key, for the few reads outside the hot paths -------------------------------
    def grid(self, key: str) -> tuple[int, int]:
        return self.attr(self.image(key), "grid")  # type: ignore[return-value]

    def orig_hw(self, key: str) -> tuple[int, int]:
        """The image file's (height, width) before the portrait policy and the crop."""
        return self.attr(self.image(key), "orig_hw")  # type: ignore[return-value]

    def pixels(self, key: str) -> np.ndarray:
        """The cropped RGB image, uint8 [H, W, 3]."""
        return self.whole(self.image(key), "image")

    def obj_desc(self, key: str, k: int) -> np.ndarray:
        return self.rows(self.image(key), "obj_desc", [k])[0]

    def obj_rle(self, key: str, k: int) -> dict:
        """Object k's ground-truth RLE at the annotation's resolution."""
        return json.loads(self.string(self.image(key), "obj_rle", k))

    def obj_rle_texts(self, key: str) -> list[bytes | str]:
        """Every object's ground-truth RLE of an image as JSON text, in one read (`obj_rle`
        of each k, unparsed: for callers that want several objects of one image)."""
        return list(self._dataset(self.image(key), "obj_rle")[()])

    def cand_rle_texts(self, direction: str, key: str) -> list[bytes | str]:
        """Every candidate's RLE of an image as JSON text, in one read (`cand_rle` of each i,
        unparsed)."""
        return list(self._dataset(self.cands(direction, key), "rle")[()])

    def cand_count(self, direction: str, key: str) -> int:
        return self.shape(self.cands(direction, key), "desc")[0]

    def cand_rle(self, direction: str, key: str, i: int) -> dict:
        """Candidate i's mask as an RLE at the crop size."""
        return json.loads(self.string(self.cands(direction, key), "rle", i))

    def close(self) -> None:
        self.shards.close()


class Cache(Records):
    """A finished cache folder, read-only, with its manifest: the samples of each split, and
    `reader`, the light reader of one split's records for worker processes."""

    def __init__(self, path: str | Path, manifest: Manifest | None = None) -> None:
        """`manifest`: a writer's in-memory listing (precompute reusing what it has written);
        by default the one on disk."""
        manifest = manifest or load_manifest(Path(path))
        if manifest is None:
            raise bad_file(manifest_path(path), "no cache here; run omama-precompute first")
        super().__init__(path, ManifestLocator(manifest))
        self.manifest: Manifest = manifest

    def reader(self, samples: SampleTable, direction: str) -> Records:
        """The records of these samples' images (and `direction`'s candidates), located
        without the manifest: what loader and post-processing workers carry."""
        return Records(self.path, SampleLocator(samples, self.manifest, direction))

    # --- samples -------------------------------------------------------------------------
    def samples(self, direction: str, split: str) -> SampleTable:
        """The split's samples whose images are all cached (others were skipped as bad
        input), as a memory-mapped table (a view without a copy when none is skipped)."""
        table = load_samples(self.path, direction, split, self.manifest.sample_formats)
        keys = image_keys(table)
        cands = self.manifest.candidates.get(direction, {})
        have_img = np.array([k in self.manifest.images for k in keys], bool)
        have_cand = np.array([k in cands for k in keys], bool)
        ok = have_img[table.column("src")] & have_cand[table.column("dst")]
        kept = table if ok.all() else table.take_rows(np.flatnonzero(ok))
        if len(kept) < len(table):
            report = bad_report_path(self.path, direction, split)
            log.warning(
                "%s %s: skipping %d of %d pairs whose images were not cached%s",
                direction,
                split,
                len(table) - len(kept),
                len(table),
                f" (bad input, listed in {report})" if report.exists() else "",
            )
        if not len(kept):
            raise OmamaError(f"{self.path}: no usable {direction} {split} samples in this cache")
        return kept
