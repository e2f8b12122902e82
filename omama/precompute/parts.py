"""Splitting one precompute run into parts that never write the same file.

Part i of n takes every n-th of the split's unique images (destination images first, so the
candidate work is spread as evenly as the backbone work), writes shards named
`{direction}-{split}.part{i}of{n}-NNNNN.h5` and lists them in its own manifest fragment
`CACHE/parts/{direction}_{split}_{i}-of-{n}.json`, under its own lock. The assignment depends
only on the pair list, so a part rerun alone takes the same images and resumes its own work.
Once every fragment is done, one merge lists them all in `manifest.json` under the cache lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from omama.files import write_json
from omama.cache.manifest import Manifest, file_lock
from omama.errors import OmamaError, bad_file

log = logging.getLogger(__name__)

FRAGMENT_FORMAT = 1


@dataclass(frozen=True)
class Part:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise OmamaError(
                f"--shard-index {self.index} --num-shards {self.count}: "
                "the index must be in [0, num-shards)"
            )

    @property
    def tag(self) -> str:
        return f"{self.index}-of-{self.count}"

    def shard_prefix(self, direction: str, split: str) -> str:
        # '.' (not '-') after the split: a single-process run's stale-temp sweep of
        # '{direction}-{split}-*.h5.tmp' must never match a part's files
        return f"{direction}-{split}.part{self.index}of{self.count}"


def parts_dir(cache: Path) -> Path:
    return Path(cache) / "parts"


def fragment_path(cache: Path, direction: str, split: str, part: Part) -> Path:
    return parts_dir(cache) / f"{direction}_{split}_{part.tag}.json"


def assign(image_keys: Iterable[str], dest_keys: Iterable[str], part: Part) -> set[str]:
    """This part's image keys: sorted destination images, then the others, dealt round-robin.

    Any two parts' counts differ by at most one, both for destination images (candidate work)
    and for all images (backbone work).
    """
    dest = sorted(set(dest_keys))
    rest = sorted(set(image_keys) - set(dest))
    order = dest + rest
    return set(order[part.index :: part.count])


def plan_digest(image_keys: Iterable[str]) -> str:
    """Identifies the image set a part was planned over: a rerun must see the same one."""
    return hashlib.sha256("\n".join(sorted(set(image_keys))).encode()).hexdigest()[:16]


@dataclass
class Fragment:
    """One part's piece of the manifest, plus what the merge needs to know about the part."""

    settings: dict
    direction: str
    split: str
    index: int
    count: int
    plan: str
    shards: dict[str, dict] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, dict[str, str]] = field(default_factory=dict)
    bad: list[dict] = field(default_factory=list)
    done: bool = False

    def to_json(self) -> dict:
        return {"format": FRAGMENT_FORMAT, **self.__dict__}

    def take_own(self, work: Manifest, prefix: str) -> None:
        """Copy the entries of `work` that point at this part's shards (named `prefix-*`)."""
        own = {name for name in work.shards if name.startswith(prefix + "-")}
        self.shards = {name: work.shards[name] for name in sorted(own)}
        self.images = {k: v for k, v in work.images.items() if v in own}
        self.candidates = {
            d: {k: v for k, v in table.items() if v in own}
            for d, table in work.candidates.items()
            if any(v in own for v in table.values())
        }


def load_fragment(path: Path) -> Fragment | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if data.pop("format", None) != FRAGMENT_FORMAT:
            raise ValueError("unknown format")
        return Fragment(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise bad_file(
            path, f"unreadable part manifest ({exc}); delete it to redo the part"
        ) from None


def save_fragment(path: Path, fragment: Fragment) -> None:
    write_json(fragment.to_json(), path, indent=1)


def working_manifest(main: Manifest | None, fragment: Fragment) -> Manifest:
    """What a part may reuse: the merged cache plus its own earlier shards."""
    work = Manifest(settings=fragment.settings)
    for src in (main, fragment):
        if src is None:
            continue
        work.shards.update(src.shards)
        work.images.update(src.images)
        for d, table in src.candidates.items():
            work.candidates.setdefault(d, {}).update(table)
    return work


def merge_into(manifest: Manifest, fragments: list[Fragment], shard_dir: Path) -> None:
    """List every fragment's shards and records in `manifest`; entries already there stay."""
    for frag in fragments:
        for name, info in frag.shards.items():
            path = shard_dir / name
            if not path.is_file() or path.stat().st_size != info.get("bytes"):
                raise bad_file(path, "shard of a finished part is missing or has another size")
            manifest.shards.setdefault(name, info)
        for key, name in frag.images.items():
            manifest.images.setdefault(key, name)
        for d, table in frag.candidates.items():
            mine = manifest.candidates.setdefault(d, {})
            for key, name in table.items():
                mine.setdefault(key, name)


def part_lock(path: Path, what: str, wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on `path`: a second holder is refused (or, with `wait`, waits).

    Locking `CACHE/.lock` this way excludes the same writers as `cache_lock`.
    """
    return file_lock(path, f"{path}: {what} is already running (lock held)", wait)
