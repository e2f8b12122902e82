"""Write side of the cache: records into bounded HDF5 shards, each published whole or not at all.

A shard is filled as `shards/{prefix}-NNNNN.h5.tmp` (NNNNN counting on from the highest
number the folder holds), then fsynced, renamed into place and
handed to the caller, which lists it in the manifest; a killed run leaves only a `.tmp` file,
removed by the next writer of the same prefix. Datasets are created from `omama.cache.schema`,
contiguous and uncompressed, so a training read of a few rows touches only those bytes; the
shard's last dataset is its table of contents (`omama.cache.toc`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from omama.backbones import DEFAULT_BACKBONE, Backbone
from omama.cache import schema
from omama.cache.paths import shards_dir
from omama.cache.records import CandidateRecord, ImageRecord
from omama.cache.toc import Row, toc_row, write_toc
from omama.errors import bad_file
from omama.files import file_sha256

log = logging.getLogger(__name__)

STR = h5py.string_dtype()

# name, {sha256, bytes}, image keys, (direction, key) candidate sets: called once per shard
Publish = Callable[[str, dict, list[str], list[tuple[str, str]]], None]


def _dataset_args(field: schema.Field, value: object, widths: dict[str, int]) -> dict:
    """`create_dataset` arguments that store `value` as `field` says (`widths`: the cache's
    width symbols)."""
    if field.dtype == schema.STR:
        return {"data": np.array(value, dtype=object), "dtype": STR}
    data = np.asarray(value).astype(field.dtype)
    shape = field.resolve(widths)
    if shape and shape[0] == -1 and min(shape[1:], default=0) >= 0:
        data = data.reshape(-1, *shape[1:])  # e.g. no objects: (0, 1536), not (0,)
    return {"data": data}


class ShardWriter:
    """Collects records into `shards/{prefix}-{n}.h5.tmp`; `close_shard` publishes it."""

    def __init__(
        self,
        cache: Path,
        prefix: str,
        on_publish: Publish,
        max_records: int = 256,
        max_bytes: int = 2 << 30,
        backbone: Backbone = DEFAULT_BACKBONE,
    ) -> None:
        self.dir = shards_dir(cache)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.on_publish = on_publish
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.widths = schema.widths(backbone)
        self._file: h5py.File | None = None
        self._name = ""
        self._images: list[str] = []
        self._cands: list[tuple[str, str]] = []
        self._toc: list[Row] = []
        self._bytes = 0
        for stale in self.dir.glob(f"{prefix}-*.h5.tmp"):
            log.info("removing unfinished shard %s from a killed run", stale.name)
            stale.unlink()
        self._next = next_shard_number(self.dir, prefix)

    def _open(self) -> h5py.File:
        if self._file is None:
            self._name = f"{self.prefix}-{self._next:05d}.h5"
            self._next += 1
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

    def _write(self, path: str, fields: tuple[schema.Field, ...], rec: object) -> h5py.Group:
        g = self._open().create_group(path)
        for field in fields:
            args = _dataset_args(field, getattr(rec, field.name), self.widths)
            ds = g.create_dataset(field.name, **args)
            self._toc.append(toc_row(path, field.name, ds))
            self._bytes += args["data"].nbytes if field.dtype != schema.STR else 0
        return g

    def add_image(self, key: str, rec: ImageRecord) -> None:
        with self._writing():
            fields = schema.image_fields(quantized=rec.token_scale is not None)
            g = self._write(f"img/{key}", fields, rec)
            for name in schema.IMAGE_ATTRS:
                g.attrs[name] = getattr(rec, name)
            self._images.append(key)
        self._maybe_roll()

    def add_candidates(self, direction: str, key: str, rec: CandidateRecord) -> None:
        with self._writing():
            self._write(f"cand/{direction}/{key}", schema.CAND_FIELDS, rec)
            self._cands.append((direction, key))
        self._maybe_roll()

    def _maybe_roll(self) -> None:
        if (
            len(self._images) + len(self._cands) >= self.max_records
            or self._bytes >= self.max_bytes
        ):
            self.close_shard()

    def close_shard(self) -> None:
        """Write the table of contents, flush, fsync and rename the open shard, then let the
        caller list it in the manifest."""
        if self._file is None:
            return
        final = self.dir / self._name
        with self._writing():
            write_toc(self._file, self._toc)
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
        self._file, self._images, self._cands, self._toc, self._bytes = None, [], [], [], 0

    def abort(self) -> None:
        """Drop the open shard (its `.tmp` file); published shards stay."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # a failing disk may refuse even the close; the file goes anyway
                log.debug("closing the unfinished shard failed", exc_info=True)
            (self.dir / (self._name + ".tmp")).unlink(missing_ok=True)
            self._file, self._images, self._cands, self._toc, self._bytes = None, [], [], [], 0


def next_shard_number(folder: Path, prefix: str) -> int:
    """One more than the highest `{prefix}-NNNNN.h5` in `folder` (0 when none): one listing
    of the folder, then the writer counts on."""
    pattern = re.compile(re.escape(prefix) + r"-(\d{5,})\.h5")
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return max(numbers, default=-1) + 1


def _reason(exc: BaseException) -> str:
    """An I/O error as a few words: the errno's text, else the first line of the message."""
    code = getattr(exc, "errno", None)
    if code:
        return os.strerror(code)
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
