"""The cache's table of contents: settings it was built with, shards, and where each record is.

Only the manifest makes a shard visible: a shard is renamed into place first, then listed
here by an atomic rewrite, so a reader never sees a shard that is not whole.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omama.files import write_json
from omama.cache.records import Sample
from omama.errors import OmamaError, bad_file

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Manifest:
    settings: dict
    shards: dict[str, dict] = field(default_factory=dict)  # name -> {sha256, bytes}
    images: dict[str, str] = field(default_factory=dict)  # image key -> shard
    candidates: dict[str, dict[str, str]] = field(default_factory=dict)  # direction -> key -> shard
    splits: dict[str, int] = field(default_factory=dict)  # "direction/split" -> sample count
    # "direction/split" -> {pairs_fraction, seed, ...} for splits built from --pairs-fraction
    subsets: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "settings": self.settings,
            "shards": self.shards,
            "images": self.images,
            "candidates": self.candidates,
            "splits": self.splits,
            "subsets": self.subsets,
        }


def manifest_path(cache: Path) -> Path:
    return Path(cache) / MANIFEST


def load_manifest(cache: Path) -> Manifest | None:
    path = manifest_path(cache)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise bad_file(path, f"unreadable manifest ({exc})") from None
    if data.get("format") != FORMAT_VERSION:
        raise bad_file(
            path, f"cache format {data.get('format')} but this omama reads {FORMAT_VERSION}"
        )
    return Manifest(
        settings=data["settings"],
        shards=data["shards"],
        images=data["images"],
        candidates=data["candidates"],
        splits=data.get("splits", {}),
        subsets=data.get("subsets", {}),
    )


def save_manifest(cache: Path, manifest: Manifest) -> None:
    write_json(manifest.to_json(), manifest_path(cache), indent=1)


def check_settings(cache: Path, have: dict, want: dict) -> None:
    """Refuse a cache built with other settings: its features would silently not match."""
    diff = [k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
    if diff:
        k = diff[0]
        raise bad_file(
            manifest_path(cache),
            f"cache was built with {k}={have.get(k)!r}, this run asks {want.get(k)!r}; "
            "use another --cache folder or delete this one",
        )


def samples_path(cache: Path, direction: str, split: str) -> Path:
    return Path(cache) / "samples" / f"{direction}_{split}.json"


def save_samples(cache: Path, direction: str, split: str, samples: list[Sample]) -> None:
    write_json([s.to_json() for s in samples], samples_path(cache, direction, split))


def load_samples(cache: Path, direction: str, split: str) -> list[Sample]:
    path = samples_path(cache, direction, split)
    if not path.exists():
        raise bad_file(
            path, f"no {direction} {split} samples in this cache; run omama-precompute first"
        )
    return [Sample(**row) for row in json.loads(path.read_text())]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def cache_lock(cache: Path) -> contextlib.AbstractContextManager[None]:
    """One writer per cache: a second precompute on the same folder is refused, not interleaved."""
    busy = (
        f"{cache}: another omama-precompute is writing this cache (lock held); "
        "wait for it or use another --cache"
    )
    return file_lock(Path(cache) / ".lock", busy)
