"""The cache's table of contents: settings it was built with, shards, and where each record is.

Only the manifest makes a shard visible: a shard is renamed into place first, then listed
here by an atomic rewrite, so a reader never sees a shard that is not whole.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omama.backbones import Backbone, recorded_backbone
from omama.cache.paths import lock_path, manifest_path
from omama.errors import OmamaError, bad_file
from omama.files import read_json, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class Manifest:
    settings: dict
    shards: dict[str, dict] = field(default_factory=dict)  # name -> {sha256, bytes}
    images: dict[str, str] = field(default_factory=dict)  # image key -> shard
    candidates: dict[str, dict[str, str]] = field(default_factory=dict)  # direction -> key -> shard
    splits: dict[str, int] = field(default_factory=dict)  # "direction/split" -> sample count
    # "direction/split" -> {pairs_fraction, seed, ...} for splits built from --pairs-fraction
    subsets: dict[str, dict] = field(default_factory=dict)
    # "direction/split" -> format of its samples file (omama.cache.samples); none: JSON, older
    sample_formats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "settings": self.settings,
            "shards": self.shards,
            "images": self.images,
            "candidates": self.candidates,
            "splits": self.splits,
            "subsets": self.subsets,
            "sample_formats": self.sample_formats,
        }

    @property
    def backbone(self) -> Backbone:
        """The backbone the cache was built with (settings `backbone`; the default when absent):
        its token width and patch shape every record."""
        return recorded_backbone(self.settings, "manifest.json settings")


_JSON_NAMES = {dict: "JSON object", list: "JSON list", str: "string", int: "number"}
_MANIFEST_KEYS = {"settings": dict, "shards": dict, "images": dict, "candidates": dict}


def required(path: Path, data: Any, keys: dict[str, type], what: str) -> dict:
    """`data` as a JSON object holding each of `keys` with its type; else one line naming `path`."""
    if not isinstance(data, dict):
        raise bad_file(
            path, f"malformed {what}: expected a JSON object, found {type(data).__name__}"
        )
    for key, kind in keys.items():
        if key not in data:
            raise bad_file(path, f"malformed {what}: no {key!r} key")
        if not isinstance(data[key], kind):
            raise bad_file(path, f"malformed {what}: {key!r} is not a {_JSON_NAMES[kind]}")
    return data


def load_manifest(cache: Path) -> Manifest | None:
    """The cache's manifest, or None when there is none yet."""
    path = manifest_path(cache)
    if not path.exists():
        return None
    data = required(path, read_json(path, "manifest"), {}, "manifest")
    if data.get("format") != FORMAT_VERSION:
        raise bad_file(
            path, f"cache format {data.get('format')} but this omama reads {FORMAT_VERSION}"
        )
    required(path, data, _MANIFEST_KEYS, "manifest")
    recorded_backbone(data["settings"], str(path))  # an unknown backbone: one line, here
    return Manifest(
        settings=data["settings"],
        shards=data["shards"],
        images=data["images"],
        candidates=data["candidates"],
        splits=data.get("splits", {}),
        subsets=data.get("subsets", {}),
        sample_formats=data.get("sample_formats", {}),
    )


def save_manifest(cache: Path, manifest: Manifest) -> None:
    """Rewrite the manifest atomically: a reader sees the old one or the new one, whole."""
    write_json(manifest.to_json(), manifest_path(cache), indent=1)


def check_settings(path: Path, have: dict, want: dict) -> None:
    """Refuse a cache built with other settings: its features would silently not match.

    `path` is the file that records `have` (the manifest, or a part's manifest)."""
    diff = [k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
    if diff:
        k = diff[0]
        raise bad_file(
            path,
            f"cache was built with {k}={have.get(k)!r}, this run asks {want.get(k)!r}; "
            "use another --cache folder or delete this one",
        )


@contextlib.contextmanager
def file_lock(path: Path, busy: str, wait: bool = False) -> Iterator[None]:
    """An exclusive flock on `path`; a second holder is refused with `busy` (or waits)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError as exc:
        raise bad_file(path.parent, f"cannot write the cache folder ({exc.strerror})") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            fh.close()
            raise
        if not wait:
            fh.close()
            raise OmamaError(busy) from None
        log.info("%s: waiting for the lock", path)
        fcntl.flock(fh, fcntl.LOCK_EX)
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def cache_lock(cache: Path, wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """One writer per cache: a second precompute on the same folder is refused (or, with
    `wait`, waits for it), never interleaved."""
    busy = (
        f"{cache}: another omama-precompute is writing this cache (lock held); "
        "wait for it or use another --cache"
    )
    return file_lock(lock_path(cache), busy, wait)
