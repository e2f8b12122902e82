"""Input fingerprints: which input files each cached record came from, as they were then.

A record is computed once and reused by every later run; an input edited after that (an
object's RLE in annotation.json, a candidate file, a frame) would go unnoticed. So each
record's inputs are fingerprinted when its job is planned, before any is read:

    img/{key}             {"frame": [bytes, mtime_ns], "ann": hash of the image's RLEs}
    cand/{direction}/{key} the same, plus "masks" and "boxes": [bytes, mtime_ns]

Frames and candidate files are fingerprinted by size and modification time (one `stat`
each); the annotation by a hash of the image's own objects and RLEs (annotation.json is
read anyway, and the hash leaves the take's other images alone when one mask changes).
A candidate record depends on its frame and annotation too (its descriptors and anchors do).

They are written beside the cache, one file per shard (`CACHE/inputs/{shard}.json`, with the
root and masks folder the shard was computed from), before the manifest lists the shard:
a listed shard's records always have theirs. A record without one (a cache written before
fingerprints were kept) is never called stale. `stale_records` compares them with the files
now: a rerun says which records are stale (and stops, recomputes or keeps them: `--stale`),
and `--verify` lists them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omama.cache.manifest import Manifest
from omama.cache.paths import inputs_path
from omama.dataset.candidates import candidate_paths
from omama.dataset.layout import Annotations, image_path
from omama.errors import OmamaError
from omama.files import write_json

log = logging.getLogger(__name__)


def file_print(path: Path) -> list[int]:
    """[bytes, mtime_ns] of a file; [-1, -1] when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


def annotation_print(ann: Annotations, take: str, cam: str, frame: str) -> str:
    """A hash of one image's objects and their RLEs in annotation.json."""
    digest = hashlib.sha256()
    for obj in ann.objects_at(take, cam, frame):
        rle = ann.rle(take, obj, cam, frame) or {}
        counts = rle.get("counts", "")
        counts = counts.encode() if isinstance(counts, str) else repr(counts).encode()
        digest.update(f"{obj}\0{rle.get('size')}\0".encode())
        digest.update(counts)
        digest.update(b"\0")
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class Inputs:
    """Where one shard's records were computed from."""

    root: Path
    masks_dir: Path
    ann: Annotations

    def image(self, take: str, cam: str, frame: str) -> dict:
        return {
            "frame": file_print(image_path(self.root, take, cam, frame)),
            "ann": annotation_print(self.ann, take, cam, frame),
        }

    def candidates(self, take: str, cam: str, frame: str, image: dict | None = None) -> dict:
        """The image's print (`image`, when already taken) and its candidate files'."""
        masks, boxes = candidate_paths(self.masks_dir, take, cam, frame)
        return {
            **(image if image is not None else self.image(take, cam, frame)),
            "masks": file_print(masks),
            "boxes": file_print(boxes),
        }

    def paths(self, take: str, cam: str, frame: str) -> dict[str, Path]:
        """The file each fingerprint entry stands for (for messages)."""
        masks, boxes = candidate_paths(self.masks_dir, take, cam, frame)
        return {
            "frame": image_path(self.root, take, cam, frame),
            "ann": self.ann.path(take),
            "masks": masks,
            "boxes": boxes,
        }


def _split_key(key: str) -> tuple[str, str, str]:
    take, cam, frame = key.rsplit("/", 2)
    return take, cam, frame


def record_prints(inputs: Inputs, jobs: Iterable, direction: str) -> dict[str, dict]:
    """Fingerprints of the records `jobs` will write (taken now, before they are read: an
    edit after this point shows as stale on the next run, never the other way round)."""
    out: dict[str, dict] = {}
    for job in jobs:
        image = inputs.image(job.take, job.cam, job.frame)
        if job.need_image:
            out[f"img/{job.key}"] = image
        if job.need_cands:
            out[f"cand/{direction}/{job.key}"] = inputs.candidates(
                job.take, job.cam, job.frame, image
            )
    return out


def write_shard_prints(
    cache: Path,
    shard: str,
    inputs: Inputs,
    prints: dict[str, dict],
    images: list[str],
    cands: list[tuple[str, str]],
) -> None:
    """The fingerprints of one shard's records, written before the shard is listed."""
    records = {f"img/{k}": prints[f"img/{k}"] for k in images if f"img/{k}" in prints}
    for direction, key in cands:
        path = f"cand/{direction}/{key}"
        if path in prints:
            records[path] = prints[path]
    doc = {
        "root": str(inputs.root.absolute()),
        "masks_dir": str(inputs.masks_dir.absolute()),
        "records": records,
    }
    write_json(doc, inputs_path(cache, shard))


def _load(cache: Path, shard: str, memo: dict[str, dict | None]) -> dict | None:
    if shard not in memo:
        path = inputs_path(cache, shard)
        try:
            memo[shard] = json.loads(path.read_text()) if path.exists() else None
        except (OSError, ValueError):
            memo[shard] = None  # unreadable: unknown, as for a cache without fingerprints
    return memo[shard]


@dataclass(frozen=True)
class Stale:
    """One record whose inputs changed: its record path and what changed."""

    record: str
    why: str


def stale_records(
    cache: Path,
    manifest: Manifest,
    records: Iterable[tuple[str, str]],
    root: Path | None = None,
    ann: Annotations | None = None,
) -> list[Stale]:
    """Of `records` ((record path, shard) pairs), those whose input files differ now from
    their fingerprints. `root`: the dataset root to compare against (default: the one each
    shard was computed from), `ann` its annotations when already read; candidate files are
    looked up in the masks folder recorded."""
    memo: dict[str, dict | None] = {}
    inputs: dict[tuple[str, str], Inputs] = {}
    anns: dict[str, Annotations] = {str(root): ann} if root is not None and ann else {}
    images: dict[tuple[Path, str], dict] = {}
    out = []
    for record, shard in records:
        doc = _load(cache, shard, memo)
        saved = (doc or {}).get("records", {}).get(record)
        if saved is None:
            continue
        base = Path(root) if root is not None else Path(doc["root"])
        masks_dir = Path(doc["masks_dir"])
        if root is not None and Path(doc["root"]) in masks_dir.parents:  # moves with the root
            masks_dir = base / masks_dir.relative_to(doc["root"])
        where = inputs.setdefault(
            (str(base), str(masks_dir)),
            Inputs(base, masks_dir, anns.setdefault(str(base), Annotations(base))),
        )
        key = record.split("/", 1 if record.startswith("img/") else 2)[-1]
        take, cam, frame = _split_key(key)
        try:
            base_print = images.get((where.root, key))
            if base_print is None:  # an image's own part, once for its image and candidates
                base_print = images[(where.root, key)] = where.image(take, cam, frame)
            now = base_print
            if record.startswith("cand/"):
                now = where.candidates(take, cam, frame, base_print)
        except OmamaError as exc:  # annotation.json unreadable or the object gone
            out.append(Stale(record, f"its annotation cannot be read now ({exc})"))
            continue
        changed = [name for name in saved if saved[name] != now.get(name)]
        if changed:
            paths = where.paths(take, cam, frame)
            what = ", ".join(f"{paths[n]} ({_change(n, now[n])})" for n in changed)
            out.append(Stale(record, f"input changed since it was cached: {what}"))
    return out


def _change(name: str, now: object) -> str:
    if name == "ann":
        return "its RLEs for this image"
    return "gone" if isinstance(now, list) and now[0] < 0 else "changed"


def listed_records(manifest: Manifest, keys: Iterable[str], dest: Iterable[str], direction: str):
    """(record path, shard) of the listed image records of `keys` and candidate records of
    `dest` in `direction`."""
    have = manifest.candidates.get(direction, {})
    dest = set(dest)
    for key in keys:
        if key in manifest.images:
            yield f"img/{key}", manifest.images[key]
        if key in dest and key in have:
            yield f"cand/{direction}/{key}", have[key]


def all_records(manifest: Manifest):
    """(record path, shard) of every record the manifest lists."""
    for key, shard in manifest.images.items():
        yield f"img/{key}", shard
    for direction, table in manifest.candidates.items():
        for key, shard in table.items():
            yield f"cand/{direction}/{key}", shard


def forget(manifest: Manifest, stale: list[Stale]) -> None:
    """Unlist stale records from the in-memory manifest, so the run computes them again (the
    new ones are listed in their new shards; the old bytes stay, unlisted, in theirs)."""
    for s in stale:
        kind, rest = s.record.split("/", 1)
        if kind == "img":
            manifest.images.pop(rest, None)
        else:
            direction, key = rest.split("/", 1)
            manifest.candidates.get(direction, {}).pop(key, None)


def stale_message(cache: Path, stale: list[Stale]) -> str:
    n = len(stale)
    first = f"{stale[0].record}: {stale[0].why}"
    more = f" (and {n - 1} more, logged above)" if n > 1 else ""
    return (
        f"{cache}: {n} cached record{'s are' if n > 1 else ' is'} stale, {first}{more}; rerun "
        "with --stale recompute to compute them again, or --stale keep to use them as cached"
    )
