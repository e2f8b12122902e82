"""The cache's table of contents: settings it was built with, shards, and where each record is.

Only the manifest makes a shard visible: a shard is renamed into place first, then listed,
so a reader never sees a shard that is not whole. The manifest is `manifest.json` plus its
journal `manifest.journal`: a shard published during a run is one appended (and fsynced)
line of the journal, so listing it costs what it adds, not a rewrite of the whole listing
(80 MB at real size). `load_manifest` reads both; `save_manifest` writes manifest.json whole,
atomically, then drops the journal, which a run does when its journal has grown as long as
the listing it extends (so the rewrites add up to about twice the final size), at the end of
a split and when it resumes. A kill at any point leaves whole lines (a torn last line is
ignored: its shard is simply unlisted, and redone), and a journal replayed onto a manifest
that already holds it changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omama.backbones import Backbone, recorded_backbone
from omama.cache.paths import journal_path, lock_path, manifest_path
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


def list_shard(
    listing: Any, name: str, info: dict, images: list[str], cands: list[tuple[str, str]]
) -> None:
    """List a published shard in `listing` (a Manifest, or a part's manifest): its file, its
    images and its candidate sets."""
    listing.shards[name] = info
    for key in images:
        listing.images[key] = name
    for direction, key in cands:
        listing.candidates.setdefault(direction, {})[key] = name


class Journal:
    """Append-only listing of published shards beside a manifest file, one JSON line each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0  # appended by this object since it last found the journal empty

    def append(self, name: str, info: dict, images: list[str], cands: list[tuple[str, str]]):
        line = {"shard": name, "info": info, "images": images, "candidates": cands}
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise bad_file(self.path, f"cannot append ({exc.strerror})") from None
        self.lines += 1

    def replay(self, listing: Any) -> int:
        """List every whole line's shard in `listing`; returns how many lines there were."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0
        lines = text.split("\n")
        whole, torn = lines[:-1], lines[-1]
        if torn:  # a run killed while appending: that shard is not listed
            log.info("%s: ignoring an unfinished last line", self.path)
        for i, line in enumerate(whole):
            try:
                row = json.loads(line)
                list_shard(listing, row["shard"], row["info"], row["images"], row["candidates"])
            except (ValueError, KeyError, TypeError):
                raise bad_file(self.path, f"line {i + 1} is not a shard listing") from None
        return len(whole)

    def drop(self) -> None:
        """After the listing was written whole elsewhere."""
        self.path.unlink(missing_ok=True)
        self.lines = 0


def load_manifest(cache: Path) -> Manifest | None:
    """The cache's manifest (manifest.json and its journal), or None when there is none yet."""
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
    manifest = Manifest(
        settings=data["settings"],
        shards=data["shards"],
        images=data["images"],
        candidates=data["candidates"],
        splits=data.get("splits", {}),
        subsets=data.get("subsets", {}),
        sample_formats=data.get("sample_formats", {}),
    )
    Journal(journal_path(cache)).replay(manifest)
    return manifest


def save_manifest(cache: Path, manifest: Manifest) -> None:
    """Rewrite the manifest atomically (a reader sees the old one or the new one, whole), then
    drop the journal it now holds."""
    write_json(manifest.to_json(), manifest_path(cache), indent=1)
    Journal(journal_path(cache)).drop()


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
