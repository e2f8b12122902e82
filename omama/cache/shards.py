"""Read side of HDF5 shards: read-only handles, opened lazily per process, at most a few open.

The record layout is `omama.cache.schema`; shards are written by `omama.cache.writer`.

A process keeps at most `MAX_OPEN` shards open, the least recently used closed first: HDF5
holds metadata of every record read until its file closes (tens of kB each), and a training
worker visits every shard of the split (about 1,400 at real size), so handles kept for ever
would grow the worker by gigabytes and pass the usual limit of 1,024 open files. An open
shard's table of contents (`omama.cache.toc`) is kept with its handle.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import h5py

from omama.cache.paths import shards_dir
from omama.cache.toc import Toc
from omama.errors import bad_file

MAX_OPEN = 64  # shards open at once per process


class ShardReader:
    """Lazily opened read-only handles, one set per process (safe across DataLoader forks),
    at most `max_open` of them: opening one more closes the least recently used. A handle,
    group or dataset is valid until the next `file` call of the same process, so callers
    take what they need from it at once (a file descriptor, a read) and keep none."""

    def __init__(self, cache: Path, max_open: int = MAX_OPEN) -> None:
        self.dir = shards_dir(cache)
        self.max_open = max(1, max_open)
        self._pid = -1
        self._files: OrderedDict[str, h5py.File] = OrderedDict()
        self._tocs: dict[str, Toc | None] = {}  # of the open shards
        self._lock = threading.Lock()

    def file(self, shard: str) -> h5py.File:
        with self._lock:
            return self._open(shard)

    def toc(self, shard: str) -> Toc | None:
        """The shard's table of contents (None: written without one)."""
        with self._lock:
            f = self._open(shard)
            if shard not in self._tocs:
                try:
                    self._tocs[shard] = Toc.load(f)
                except (OSError, ValueError) as exc:
                    problem = f"unreadable table of contents ({exc})"
                    raise bad_file(self.dir / shard, problem) from None
            return self._tocs[shard]

    def _open(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():  # a forked worker must not reuse its parent's handles
            self._files, self._tocs, self._pid = OrderedDict(), {}, os.getpid()
        f = self._files.get(shard)
        if f is not None:
            self._files.move_to_end(shard)
            return f
        while len(self._files) >= self.max_open:
            old, handle = self._files.popitem(last=False)
            handle.close()
            self._tocs.pop(old, None)
        path = self.dir / shard
        try:
            f = h5py.File(path, "r", libver="latest", rdcc_nbytes=0)
        except OSError as exc:
            raise bad_file(path, f"cannot open cache shard ({exc})") from None
        self._files[shard] = f
        return f

    @property
    def open_count(self) -> int:
        """Shards this process holds open now."""
        return len(self._files) if self._pid == os.getpid() else 0

    def group(self, shard: str, path: str) -> h5py.Group:
        try:
            return self.file(shard)[path]
        except KeyError:
            raise bad_file(self.dir / shard, f"record {path} is missing") from None

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                for f in self._files.values():
                    f.close()
            self._files, self._tocs = OrderedDict(), {}

    def __getstate__(self) -> dict:
        return {"dir": self.dir, "max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.dir, self.max_open = state["dir"], state["max_open"]
        self._pid, self._files, self._tocs = -1, OrderedDict(), {}
        self._lock = threading.Lock()
