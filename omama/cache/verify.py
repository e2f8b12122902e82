"""Check a cache without trusting it: shards whole, every listed record present and well formed.

A cache lives for months on shared storage and is copied between machines; `verify_cache`
re-reads everything the manifest promises (sha256 of each shard, shapes and dtypes of each
record, sample rows pointing at cached objects) and returns the problems as one-line
`"<file>: <problem>"` strings instead of stopping at the first one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from omama.backbones import DEFAULT_BACKBONE, Backbone
from omama.cache import schema
from omama.cache.manifest import Manifest, load_manifest
from omama.cache.paths import bad_report_path, manifest_path, samples_path, shards_dir
from omama.cache.samples import load_samples
from omama.errors import OmamaError
from omama.files import file_sha256, read_json

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    shards: int = 0
    images: int = 0
    candidate_sets: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def _check(g: h5py.Group, spec: schema.Field, sizes: dict[str, int]) -> str | None:
    """`None` when `g` holds `spec` with its dtype and shape (-1 matches any length), else why
    not."""
    name, shape = spec.name, spec.resolve(sizes)
    if name not in g:
        return f"{name} missing"
    item = g[name]
    if not isinstance(item, h5py.Dataset):
        return f"{name} is not a dataset"
    got = schema.STR if h5py.check_string_dtype(item.dtype) else str(item.dtype)
    if got != spec.dtype:
        return f"{name} has dtype {got}, expected {spec.dtype}"
    if len(item.shape) != len(shape) or any(
        w != -1 and n != w for n, w in zip(item.shape, shape, strict=True)
    ):
        want = "(" + ", ".join("*" if w < 0 else str(w) for w in shape) + ")"
        return f"{name} has shape {item.shape}, expected {want}"
    return None


def _rows(g: h5py.Group, name: str) -> int:
    """Length of dataset `name` (-1 when it is absent)."""
    return g[name].shape[0] if isinstance(g.get(name), h5py.Dataset) else -1


def image_problems(g: h5py.Group, backbone: Backbone = DEFAULT_BACKBONE) -> tuple[list[str], int]:
    """Problems of one `img/...` group of a `backbone` cache and its object count (-1 when
    unknown)."""
    try:
        grid = tuple(int(v) for v in g.attrs["grid"])
        orig = tuple(int(v) for v in g.attrs["orig_hw"])
    except (KeyError, TypeError, ValueError):
        return ["attributes grid/orig_hw missing or malformed"], -1
    if len(grid) != 2 or len(orig) != 2 or min(grid) < 1:
        return [f"attributes grid={grid} orig_hw={orig} malformed"], -1
    k = _rows(g, "obj_names")
    quantized = "token_scale" in g  # --features int8: int8 tokens, one fp16 scale per token
    sizes = schema.image_sizes(grid, k, backbone)
    problems = [p for f in schema.image_fields(quantized) if (p := _check(g, f, sizes))]
    name = "token_scale" if quantized else "tokens"
    if not problems and not np.isfinite(g[name][()]).all():
        problems.append(f"{name} hold NaN or infinite values")
    return problems, k


def cand_problems(
    g: h5py.Group, n_objects: int, backbone: Backbone = DEFAULT_BACKBONE
) -> list[str]:
    """Problems of one `cand/...` group; `n_objects` sizes `anchor` (-1: not checked)."""
    n = _rows(g, "desc")
    sizes = schema.cand_sizes(n, n_objects, backbone)
    problems = [p for f in schema.CAND_FIELDS if (p := _check(g, f, sizes))]
    if n == 0:
        problems.append("no candidates (at least one, possibly empty, is always stored)")
    if not problems:
        anchor = g["anchor"][()]
        if anchor.size and (anchor.min() < -1 or anchor.max() >= n):
            problems.append(f"anchor holds indices outside [-1, {n})")
    return problems


def verify_cache(cache: str | Path) -> VerifyReport:
    """Every check of a finished cache; `report.problems` is empty for a good one."""
    cache = Path(cache)
    report = VerifyReport()
    try:
        manifest = load_manifest(cache)
    except OmamaError as exc:
        report.problems.append(str(exc))
        return report
    if manifest is None:
        report.problems.append(f"{manifest_path(cache)}: no manifest; not an omama cache")
        return report
    shard_dir = shards_dir(cache)
    whole = _check_shards(manifest, shard_dir, report)
    n_objects = _check_records(manifest, shard_dir, whole, report)
    _check_samples(cache, manifest, n_objects, report)
    return report


def _check_shards(manifest: Manifest, shard_dir: Path, report: VerifyReport) -> set[str]:
    """sha256 and size of each listed shard; returns the names that can be opened."""
    whole = set()
    for name, info in sorted(manifest.shards.items()):
        report.shards += 1
        path = shard_dir / name
        if name.endswith(".tmp"):
            report.problems.append(f"{path}: an unfinished .tmp shard is listed as good")
        if not path.is_file():
            report.problems.append(f"{path}: shard listed in the manifest is missing")
            continue
        size = path.stat().st_size
        if size != info.get("bytes"):
            report.problems.append(
                f"{path}: {size} bytes, the manifest says {info.get('bytes')} (truncated?)"
            )
        elif file_sha256(path) != info.get("sha256"):
            report.problems.append(f"{path}: sha256 differs from the manifest (corrupt shard)")
        else:
            whole.add(name)
    unlisted = {p.name for p in shard_dir.glob("*.h5")} - set(manifest.shards)
    if unlisted:  # left by a run killed between rename and manifest update: harmless
        log.info("%d shard files not listed in the manifest are ignored", len(unlisted))
    return whole


def _check_records(
    manifest: Manifest, shard_dir: Path, whole: set[str], report: VerifyReport
) -> dict[str, int]:
    """Shapes and dtypes of every listed record; returns each readable image's object count."""
    files: dict[str, h5py.File | None] = {}

    def group(shard: str, path: str) -> tuple[h5py.Group | None, str | None]:
        if shard not in manifest.shards:
            return None, f"{manifest_path(shard_dir.parent)}: {path} points at unlisted {shard}"
        if shard not in whole:
            return None, None  # already reported once for the whole shard
        if shard not in files:
            try:
                files[shard] = h5py.File(shard_dir / shard, "r")
            except OSError as exc:
                files[shard] = None
                report.problems.append(f"{shard_dir / shard}: not a readable HDF5 file ({exc})")
        f = files[shard]
        if f is None:
            return None, None
        g = f.get(path)
        if not isinstance(g, h5py.Group):
            return None, f"{shard_dir / shard}: record {path} is missing"
        return g, None

    n_objects: dict[str, int] = {}
    try:
        for key, shard in sorted(manifest.images.items()):
            report.images += 1
            g, problem = group(shard, f"img/{key}")
            if g is None:
                report.problems += [problem] if problem else []
                continue
            problems, n_objects[key] = image_problems(g, manifest.backbone)
            report.problems += [f"{shard_dir / shard}: img/{key}: {p}" for p in problems]
        for direction, table in sorted(manifest.candidates.items()):
            for key, shard in sorted(table.items()):
                report.candidate_sets += 1
                path = f"cand/{direction}/{key}"
                g, problem = group(shard, path)
                if g is None:
                    report.problems += [problem] if problem else []
                    continue
                problems = cand_problems(g, n_objects.get(key, -1), manifest.backbone)
                report.problems += [f"{shard_dir / shard}: {path}: {p}" for p in problems]
    finally:
        for f in files.values():
            if f is not None:
                f.close()
    return n_objects


def _check_samples(
    cache: Path, manifest: Manifest, n_objects: dict[str, int], report: VerifyReport
) -> None:
    """Each split's sample rows name cached images and objects that exist there."""
    for split_key in sorted(manifest.splits):
        direction, _, split = split_key.partition("/")
        path = samples_path(cache, direction, split)
        try:
            samples = load_samples(cache, direction, split, manifest.sample_formats)
        except OmamaError as exc:
            report.problems.append(str(exc))
            continue
        report.samples += len(samples)
        if len(samples) != manifest.splits[split_key]:
            report.problems.append(
                f"{path}: {len(samples)} samples, the manifest says {manifest.splits[split_key]}"
            )
        cands = manifest.candidates.get(direction, {})
        skipped = _bad_keys(cache, direction, split)  # readers skip these pairs, and say so
        for i, s in enumerate(samples):
            if s.src in skipped or s.dst in skipped:
                continue
            if s.src not in manifest.images:
                report.problems.append(f"{path}: sample {i} names source image {s.src}, not cached")
            elif s.dst not in manifest.images or s.dst not in cands:
                report.problems.append(
                    f"{path}: sample {i} names destination {s.dst}, not cached for {direction}"
                )
            elif not 0 <= s.src_k < n_objects.get(s.src, s.src_k + 1) or not (
                -1 <= s.dst_k < n_objects.get(s.dst, s.dst_k + 1)
            ):
                report.problems.append(
                    f"{path}: sample {i} names object rows {s.src_k}/{s.dst_k} that the "
                    f"images {s.src} / {s.dst} do not have"
                )


def _bad_keys(cache: Path, direction: str, split: str) -> set[str]:
    """Images that `--skip-bad` left out, from the run's report."""
    path = bad_report_path(cache, direction, split)
    if not path.exists():
        return set()
    try:
        rows = read_json(path, "bad-input report")
        return {row["key"] for row in rows if isinstance(row, dict) and "key" in row}
    except (OmamaError, TypeError):  # unreadable: no pair is excused, so each one is checked
        return set()
