"""Read side of HDF5 shards: read-only handles, opened lazily once per process.

The record layout is `omama.cache.schema`; shards are written by `omama.cache.writer`.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from omama.cache.paths import shards_dir
from omama.errors import bad_file


class ShardReader:
    """Lazily opened read-only handles, one set per process (safe across DataLoader forks)."""

    def __init__(self, cache: Path) -> None:
        self.dir = shards_dir(cache)
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
