"""HDF5 shards: bounded files of image and candidate records, written whole or not at all.

Layout inside a shard:
  img/{take}/{cam}/{frame}/          tokens f16 [T,768] (or int8 + token_scale f16 [T]),
                                     image u8 [H,W,3], obj_desc, obj_box,
                                     obj_names, obj_rle; attrs grid, orig_hw
  cand/{direction}/{take}/{cam}/{frame}/  desc f32 [N,1536], boxes, adj u8 [N,N], rle, anchor
Datasets are contiguous and uncompressed so a training read of a few descriptor rows or one
adjacency row touches only those bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from omama.cache.records import CandidateRecord, ImageRecord
from omama.errors import bad_file

log = logging.getLogger(__name__)

STR = h5py.string_dtype()


class ShardWriter:
    """Collects records into `shards/{prefix}-{n}.h5.tmp`; `close_shard` publishes it."""

    def __init__(
        self,
        cache: Path,
        prefix: str,
        on_publish: Callable[[str, dict, list[str], list[tuple[str, str]]], None],
        max_records: int = 256,
        max_bytes: int = 2 << 30,
    ) -> None:
        self.dir = Path(cache) / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.on_publish = on_publish
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._file: h5py.File | None = None
        self._name = ""
        self._images: list[str] = []
        self._cands: list[tuple[str, str]] = []
        self._bytes = 0
        for stale in self.dir.glob(f"{prefix}-*.h5.tmp"):
            log.info("removing unfinished shard %s from a killed run", stale.name)
            stale.unlink()

    def _open(self) -> h5py.File:
        if self._file is None:
            n = 0
            while (self.dir / f"{self.prefix}-{n:05d}.h5").exists():
                n += 1
            self._name = f"{self.prefix}-{n:05d}.h5"
            self._file = h5py.File(self.dir / (self._name + ".tmp"), "w", libver="latest")
        return self._file

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (disk full, quota, I/O error) becomes one line; the open shard is
        dropped, and every shard already listed in the manifest stays whole."""
        try:
            yield
        except (OSError, RuntimeError) as exc:  # h5py raises both, with multi-line messages
            where = self.dir / (self._name + ".tmp") if self._name else self.dir
            self.abort()
            raise bad_file(
                where,
                f"cannot write cache shard ({_reason(exc)}); the shards already listed in "
                "manifest.json are intact, rerun to continue",
            ) from None

    def add_image(self, key: str, rec: ImageRecord) -> None:
        with self._writing():
            self._add_image(key, rec)
        self._maybe_roll()

    def add_candidates(self, direction: str, key: str, rec: CandidateRecord) -> None:
        with self._writing():
            self._add_candidates(direction, key, rec)
        self._maybe_roll()

    def _add_image(self, key: str, rec: ImageRecord) -> None:
        g = self._open().create_group(f"img/{key}")
        if rec.token_scale is None:
            g.create_dataset("tokens", data=rec.tokens.astype(np.float16))
        else:  # 8-bit storage: int8 values, one fp16 scale per token (omama.cache.quant)
            g.create_dataset("tokens", data=rec.tokens.astype(np.int8))
            g.create_dataset("token_scale", data=rec.token_scale.astype(np.float16))
        g.create_dataset("image", data=rec.image)
        g.create_dataset("obj_desc", data=rec.obj_desc.astype(np.float32).reshape(-1, 1536))
        g.create_dataset("obj_box", data=rec.obj_box.astype(np.float32).reshape(-1, 4))
        g.create_dataset("obj_names", data=np.array(rec.obj_names, dtype=object), dtype=STR)
        g.create_dataset("obj_rle", data=np.array(rec.obj_rle, dtype=object), dtype=STR)
        g.attrs["grid"] = rec.grid
        g.attrs["orig_hw"] = rec.orig_hw
        self._images.append(key)
        self._bytes += rec.tokens.nbytes + rec.image.nbytes + rec.obj_desc.nbytes

    def _add_candidates(self, direction: str, key: str, rec: CandidateRecord) -> None:
        g = self._open().create_group(f"cand/{direction}/{key}")
        g.create_dataset("desc", data=rec.desc.astype(np.float32))
        g.create_dataset("boxes", data=rec.boxes.astype(np.float32))
        g.create_dataset("adj", data=rec.adj.astype(np.uint8))
        g.create_dataset("rle", data=np.array(rec.rle, dtype=object), dtype=STR)
        g.create_dataset("anchor", data=rec.anchor.astype(np.int32))
        self._cands.append((direction, key))
        self._bytes += rec.desc.nbytes + rec.adj.size

    def _maybe_roll(self) -> None:
        if (
            len(self._images) + len(self._cands) >= self.max_records
            or self._bytes >= self.max_bytes
        ):
            self.close_shard()

    def close_shard(self) -> None:
        """Flush, fsync and rename the open shard, then let the caller list it in the manifest."""
        if self._file is None:
            return
        from omama.cache.manifest import file_sha256

        final = self.dir / self._name
        with self._writing():
            self._file.close()
            tmp = self.dir / (self._name + ".tmp")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            info = {"sha256": file_sha256(final), "bytes": final.stat().st_size}
        self.on_publish(self._name, info, self._images, self._cands)
        log.debug(
            "published %s (%d images, %d candidate sets)",
            self._name,
            len(self._images),
            len(self._cands),
        )
        self._file, self._images, self._cands, self._bytes = None, [], [], 0

    def abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # a failing disk may refuse even the close; the file goes anyway
                log.debug("closing the unfinished shard failed", exc_info=True)
            (self.dir / (self._name + ".tmp")).unlink(missing_ok=True)
            self._file = None


def _reason(exc: BaseException) -> str:
    """An I/O error as a few words: the errno's text, else the first line of the message."""
    code = getattr(exc, "errno", None)
    if code:
        return os.strerror(code)
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


class ShardReader:
    """Lazily opened read-only handles, one set per process (safe across DataLoader forks)."""

    def __init__(self, cache: Path) -> None:
        self.dir = Path(cache) / "shards"
        self._pid = -1
        self._files: dict[str, h5py.File] = {}

    def file(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():  # a forked worker must not reuse its parent's handles
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(shard)
        if f is None:
            path = self.dir / shard
            try:
                f = h5py.File(path, "r", libver="latest", rdcc_nbytes=0)
            except OSError as exc:
                raise bad_file(path, f"cannot open cache shard ({exc})") from None
            self._files[shard] = f
        return f

    def group(self, shard: str, path: str) -> h5py.Group:
        try:
            return self.file(shard)[path]
        except KeyError:
            raise bad_file(self.dir / shard, f"record {path} is missing") from None

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict:
        return {"dir": self.dir, "_pid": -1, "_files": {}}


def read_str(ds: h5py.Dataset, i: int) -> str:
    value = ds[i]
    return value.decode() if isinstance(value, bytes) else value


def read_rle(ds: h5py.Dataset, i: int) -> dict:
    return json.loads(read_str(ds, i))
