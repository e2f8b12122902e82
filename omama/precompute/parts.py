"""A split's images divided into parts, where each part lists its work, and the merge.

Part i of n takes every n-th of the split's unique images (destination images first, so the
candidate work is spread as evenly as the backbone work). A plain run is part 0 of 1: its
shards are `{direction}-{split}-NNNNN.h5`, listed straight in `manifest.json` under the cache
lock. Part i of n > 1 writes `{direction}-{split}.part{i}of{n}-NNNNN.h5` and lists them in its
own part manifest `CACHE/parts/{direction}_{split}_{i}-of-{n}.json` under its own lock, so
parts never write the same file. The assignment depends only on the pair list, so a part
rerun alone takes the same images and resumes its own work. Once every part manifest is
done, `merge_parts` lists them all in `manifest.json` (the caller holds the cache lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omama.cache.manifest import (
    Journal,
    Manifest,
    cache_lock,
    check_settings,
    file_lock,
    list_shard,
    load_manifest,
    required,
    save_manifest,
)
from omama.cache.paths import journal_path, manifest_path, parts_dir, shards_dir
from omama.errors import OmamaError, bad_file
from omama.files import read_json, write_json

log = logging.getLogger(__name__)

FRAGMENT_FORMAT = 1


@dataclass(frozen=True)
class Part:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise OmamaError(
                f"--part {self.index} --parts {self.count}: the part must be in [0, parts)"
            )

    @property
    def tag(self) -> str:
        return f"{self.index}-of-{self.count}"

    def shard_prefix(self, direction: str, split: str) -> str:
        if self.count == 1:
            return f"{direction}-{split}"
        # '.' (not '-') after the split: a plain run's stale-temp sweep of
        # '{direction}-{split}-*.h5.tmp' must never match a part's files
        return f"{direction}-{split}.part{self.index}of{self.count}"


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


_FRAGMENT_KEYS = {
    "settings": dict,
    "direction": str,
    "split": str,
    "index": int,
    "count": int,
    "plan": str,
    "shards": dict,
    "images": dict,
    "candidates": dict,
    "bad": list,
    "done": bool,
}


def fragment_journal(path: Path) -> Journal:
    """The part manifest's journal of shards published since it was last written whole."""
    return Journal(path.with_suffix(".journal"))


def load_fragment(path: Path) -> Fragment | None:
    """A part manifest with its journal replayed, or None when there is none."""
    if not path.exists():
        return None
    data = required(path, read_json(path, "part manifest"), {}, "part manifest")
    if data.get("format") != FRAGMENT_FORMAT:
        raise bad_file(path, "unknown part manifest format; delete it to redo the part")
    required(path, data, _FRAGMENT_KEYS, "part manifest")
    fragment = Fragment(**{k: data[k] for k in _FRAGMENT_KEYS})
    fragment_journal(path).replay(fragment)
    return fragment


def save_fragment(path: Path, fragment: Fragment) -> None:
    """Write the part manifest whole (atomically), then drop the journal it now holds."""
    write_json({"format": FRAGMENT_FORMAT, **asdict(fragment)}, path, indent=1)
    fragment_journal(path).drop()


def _grown(journal: Journal, listed: int) -> bool:
    """Time to write the listing whole: its journal is as long as the listing it extends
    (rewrites at 1, 2, 4, ... shards add up to about twice the final listing)."""
    return journal.lines >= max(1, listed - journal.lines)


def unfinished_parts(cache: Path, direction: str, split: str, count: int) -> list[str]:
    """Indices of the parts whose part manifest is missing or not done."""
    out = []
    for i in range(count):
        frag = load_fragment(fragment_path(cache, direction, split, Part(i, count)))
        if frag is None or not frag.done:
            out.append(str(i))
    return out


def part_count(cache: Path, direction: str, split: str) -> int:
    """The n of the `{direction}_{split}_{i}-of-{n}.json` part manifests present (exactly one)."""
    pattern = re.compile(rf"{re.escape(direction)}_{re.escape(split)}_\d+-of-(\d+)\.json")
    counts = {
        int(m.group(1)) for p in parts_dir(cache).glob("*.json") if (m := pattern.fullmatch(p.name))
    }
    if len(counts) != 1:
        found = ", ".join(str(c) for c in sorted(counts)) or "none"
        raise bad_file(
            parts_dir(cache),
            f"cannot tell how many parts {direction} {split} has (found n = {found}); pass --parts",
        )
    return counts.pop()


@dataclass
class WholeSplit:
    """Part 0 of 1: records are listed straight in the manifest, under the cache lock."""

    cache: Path
    prefix: str

    def __post_init__(self) -> None:
        self.journal = Journal(journal_path(self.cache))

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return cache_lock(self.cache)

    def open(self, settings: dict) -> Manifest:
        """The manifest to extend (what the cache holds, or a new one), written whole with
        what an earlier run's journal listed."""
        manifest = load_manifest(self.cache) or Manifest(settings=settings)
        check_settings(manifest_path(self.cache), manifest.settings, settings)
        if not manifest_path(self.cache).exists() or self.journal.path.exists():
            save_manifest(self.cache, manifest)
        self.journal.lines = 0
        return manifest

    def publish(
        self, work: Manifest, name: str, info: dict, images: list[str], cands: list[tuple[str, str]]
    ) -> None:
        """A shard just renamed into place: listed in `work` and in the journal (the listing
        written whole once the journal has grown as long as it)."""
        list_shard(work, name, info, images, cands)
        self.journal.append(name, info, images, cands)
        if _grown(self.journal, len(work.shards)):
            save_manifest(self.cache, work)
            self.journal.lines = 0

    def done(self, work: Manifest, bad: list[dict]) -> None:
        """Nothing to add: the split's finish lists the samples and writes the bad report."""


@dataclass
class PartOfSplit:
    """Part i of n > 1: its own shards and part manifest, under its own lock."""

    cache: Path
    direction: str
    split: str
    part: Part
    plan: str  # plan_digest of the split's images
    fragment: Fragment | None = None

    @property
    def path(self) -> Path:
        return fragment_path(self.cache, self.direction, self.split, self.part)

    @property
    def prefix(self) -> str:
        return self.part.shard_prefix(self.direction, self.split)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        lock = self.path.with_suffix(".lock")
        what = f"part {self.part.tag} of {self.direction} {self.split}"
        return file_lock(lock, f"{lock}: {what} is already running (lock held)")

    def open(self, settings: dict) -> Manifest:
        """What the part may reuse (the merged cache and its own earlier shards); the part
        manifest is marked unfinished until `done`."""
        main = load_manifest(self.cache)
        if main is not None:
            check_settings(manifest_path(self.cache), main.settings, settings)
        frag = load_fragment(self.path)
        if frag is None:
            index, count = self.part.index, self.part.count
            frag = Fragment(settings, self.direction, self.split, index, count, self.plan)
        else:
            check_settings(self.path, frag.settings, settings)
            if frag.plan != self.plan:
                raise bad_file(
                    self.path,
                    "this part was started on another pair list; rerun with the same pairs "
                    "or delete the part's manifest to start it over",
                )
        work = Manifest(settings=frag.settings)
        for src in (main, frag):
            if src is not None:
                _add_listing(work, src, overwrite=True)
        frag.done, frag.bad = False, []
        save_fragment(self.path, frag)  # drops the journal it replayed
        self.fragment = frag
        self.journal = fragment_journal(self.path)
        return work

    def publish(
        self, work: Manifest, name: str, info: dict, images: list[str], cands: list[tuple[str, str]]
    ) -> None:
        """A shard just renamed into place: listed in `work`, in the part manifest and in its
        journal (the part manifest written whole once the journal has grown as long as it)."""
        list_shard(work, name, info, images, cands)
        list_shard(self.fragment, name, info, images, cands)
        self.journal.append(name, info, images, cands)
        if _grown(self.journal, len(self.fragment.shards)):
            save_fragment(self.path, self.fragment)
            self.journal.lines = 0

    def done(self, work: Manifest, bad: list[dict]) -> None:
        self.fragment.bad = bad
        self.fragment.done = True
        save_fragment(self.path, self.fragment)


def split_listing(
    cache: Path, direction: str, split: str, part: Part, plan: str
) -> WholeSplit | PartOfSplit:
    """Where part `part` of a split lists what it writes."""
    if part.count == 1:
        return WholeSplit(cache, part.shard_prefix(direction, split))
    return PartOfSplit(cache, direction, split, part, plan)


def _add_listing(manifest: Manifest, src: Manifest | Fragment, overwrite: bool) -> None:
    """List `src`'s shards, images and candidate sets in `manifest`; without `overwrite`,
    entries already there stay."""
    put = dict.__setitem__ if overwrite else dict.setdefault
    for name, info in src.shards.items():
        put(manifest.shards, name, info)
    for key, name in src.images.items():
        put(manifest.images, key, name)
    for d, table in src.candidates.items():
        mine = manifest.candidates.setdefault(d, {})
        for key, name in table.items():
            put(mine, key, name)


def merge_parts(
    cache: Path, direction: str, split: str, count: int, plan: str
) -> tuple[Manifest, list[dict]]:
    """Every finished part manifest listed in the cache's manifest (returned, not saved yet),
    and the parts' bad images. The caller holds the cache lock."""
    frags = []
    for i in range(count):
        path = fragment_path(cache, direction, split, Part(i, count))
        frag = load_fragment(path)
        if frag is None or not frag.done:
            raise bad_file(path, "part not finished; rerun it, then --merge")
        if frag.plan != plan:
            raise bad_file(path, "part computed from another pair list than this merge's")
        frags.append((path, frag))
    main = load_manifest(cache) or Manifest(settings=frags[0][1].settings)
    for path, frag in frags:
        check_settings(path, main.settings, frag.settings)
        for name, info in frag.shards.items():
            shard = shards_dir(cache) / name
            if not shard.is_file() or shard.stat().st_size != info.get("bytes"):
                raise bad_file(shard, "shard of a finished part is missing or has another size")
        _add_listing(main, frag, overwrite=False)
    return main, [b for _, frag in frags for b in frag.bad]
