"""Check a cache without trusting it: shards whole, every listed record present and well formed.

A cache lives for months on shared storage and is copied between machines; `verify_cache`
re-reads everything the manifest promises, shard by shard over worker processes (sha256 of
each shard, shapes and dtypes of each record, its table of contents against the records,
sample rows pointing at cached objects) and returns the problems as one-line
`"<file>: <problem>"` strings instead of stopping at the first one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from omama.backbones import DEFAULT_BACKBONE, Backbone
from omama.cache import schema
from omama.cache.manifest import Manifest, load_manifest
from omama.cache.paths import bad_report_path, manifest_path, samples_path, shards_dir
from omama.cache.samples import SampleTable, load_samples
from omama.cache.toc import toc_problems
from omama.config import default_workers
from omama.errors import OmamaError
from omama.files import file_sha256, read_json
from omama.parallel import ordered_map

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


def verify_cache(cache: str | Path, workers: int | None = None) -> VerifyReport:
    """Every check of a finished cache; `report.problems` is empty for a good one.

    Shard by shard: each shard's sha256 and its listed records are checked with only that
    shard open, over `workers` processes (default: one per core, at most 9), so memory and open
    files stay those of one shard per process whatever the cache's size. Problems come in
    shard order, then the samples'."""
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
    workers = default_workers() + 1 if workers is None else workers  # the main one waits
    n_objects = _check_shards(manifest, shard_dir, workers, report)
    _check_samples(cache, manifest, n_objects, report)
    return report


@dataclass(frozen=True)
class _ShardWork:
    """What one shard's check needs: its name, what the manifest says of it, its records
    (image keys; (direction, key, object count or -1) of candidate sets)."""

    name: str
    info: dict
    images: list[str] = field(default_factory=list)
    cands: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class _ShardResult:
    whole: bool
    problems: list[str]
    n_objects: dict[str, int]


def _check_shards(
    manifest: Manifest, shard_dir: Path, workers: int, report: VerifyReport
) -> dict[str, int]:
    """Every listed shard whole (size, sha256) and its image records, then the candidate
    records of the whole shards (their anchors sized by the images' object counts); returns
    each readable image's object count."""
    listed = manifest.shards
    work = {name: _ShardWork(name, info) for name, info in sorted(listed.items())}
    report.shards = len(work)
    where = manifest_path(shard_dir.parent)
    for key, shard in sorted(manifest.images.items()):
        report.images += 1
        if shard in work:
            work[shard].images.append(key)
        else:
            report.problems.append(f"{where}: img/{key} points at unlisted {shard}")
    context = (shard_dir, manifest.backbone)
    first = ordered_map(_image_chunk, context, list(work.values()), workers, 1, 2)
    n_objects: dict[str, int] = {}
    whole = set()
    for w, result in zip(work.values(), first, strict=True):
        report.problems += result.problems
        n_objects |= result.n_objects
        if result.whole:
            whole.add(w.name)
    cand_work = {name: _ShardWork(name, listed[name]) for name in sorted(whole)}
    for direction, table in sorted(manifest.candidates.items()):
        for key, shard in sorted(table.items()):
            report.candidate_sets += 1
            if shard not in listed:
                report.problems.append(
                    f"{where}: cand/{direction}/{key} points at unlisted {shard}"
                )
            elif shard in cand_work:  # a shard not whole is reported once, above
                cand_work[shard].cands.append((direction, key, n_objects.get(key, -1)))
    todo = [w for w in cand_work.values() if w.cands]
    for result in ordered_map(_cand_chunk, context, todo, workers, 1, 2):
        report.problems += result.problems
    unlisted = {p.name for p in shard_dir.glob("*.h5")} - set(listed)
    if unlisted:  # left by a run killed between rename and manifest update: harmless
        log.info("%d shard files not listed in the manifest are ignored", len(unlisted))
    return n_objects


def _image_chunk(context: tuple[Path, Backbone], chunk: list[_ShardWork]) -> list[_ShardResult]:
    return [_check_shard(context[0], context[1], w) for w in chunk]


def _cand_chunk(context: tuple[Path, Backbone], chunk: list[_ShardWork]) -> list[_ShardResult]:
    return [_check_cands(context[0], context[1], w) for w in chunk]


def _whole(path: Path, info: dict) -> str | None:
    """None when the shard file is whole (listed size and sha256), else why not."""
    if not path.is_file():
        return f"{path}: shard listed in the manifest is missing"
    size = path.stat().st_size
    if size != info.get("bytes"):
        return f"{path}: {size} bytes, the manifest says {info.get('bytes')} (truncated?)"
    if file_sha256(path) != info.get("sha256"):
        return f"{path}: sha256 differs from the manifest (corrupt shard)"
    return None


@contextlib.contextmanager
def _opened(path: Path, problems: list[str]) -> Iterator[h5py.File | None]:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        problems.append(f"{path}: not a readable HDF5 file ({exc})")
        yield None
        return
    try:
        yield f
    finally:
        f.close()


def _check_shard(shard_dir: Path, backbone: Backbone, w: _ShardWork) -> _ShardResult:
    """One shard whole, and its image records."""
    path = shard_dir / w.name
    out = _ShardResult(False, [], {})
    if w.name.endswith(".tmp"):
        out.problems.append(f"{path}: an unfinished .tmp shard is listed as good")
    problem = _whole(path, w.info)
    if problem:
        out.problems.append(problem)
        return out
    out.whole = True
    with _opened(path, out.problems) as f:
        if f is None:
            out.whole = False
            return out
        for key in w.images:
            g = f.get(f"img/{key}")
            if not isinstance(g, h5py.Group):
                out.problems.append(f"{path}: record img/{key} is missing")
                continue
            problems, out.n_objects[key] = image_problems(g, backbone)
            out.problems += [f"{path}: img/{key}: {p}" for p in problems]
        out.problems += [f"{path}: {p}" for p in toc_problems(f)]
    return out


def _check_cands(shard_dir: Path, backbone: Backbone, w: _ShardWork) -> _ShardResult:
    """The candidate records of one whole shard."""
    path = shard_dir / w.name
    out = _ShardResult(True, [], {})
    with _opened(path, out.problems) as f:
        if f is None:
            return out
        for direction, key, n_objects in w.cands:
            rec = f"cand/{direction}/{key}"
            g = f.get(rec)
            if not isinstance(g, h5py.Group):
                out.problems.append(f"{path}: record {rec} is missing")
                continue
            problems = cand_problems(g, n_objects, backbone)
            out.problems += [f"{path}: {rec}: {p}" for p in problems]
    return out


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
        report.problems += sample_problems(
            path, samples, manifest.images, cands, n_objects, skipped, direction
        )


_UNKNOWN = np.iinfo(np.int64).max  # an image whose object count is unknown: any row >= 0


def sample_problems(
    path: Path,
    samples: SampleTable,
    images: Container[str],
    cands: Container[str],
    n_objects: dict[str, int],
    skipped: Container[str],
    direction: str,
) -> list[str]:
    """The rows of one split's samples that name an image not cached (`images`; a
    destination also needs its candidates, `cands`) or an object row its image does not
    have (`n_objects`; an image missing there is not checked), in row order, pairs of
    `skipped` images excepted. Each image is looked up once and the rows are checked as
    numpy over the id columns; only a row with a problem is turned into its keys."""
    keys = samples.names("images")
    cached = np.array([k in images for k in keys], bool)
    has_cands = np.array([k in cands for k in keys], bool)
    skip = np.array([k in skipped for k in keys], bool)
    count = np.array([n_objects.get(k, _UNKNOWN) for k in keys], np.int64)
    src, dst = samples.column("src"), samples.column("dst")
    src_k = samples.column("src_k").astype(np.int64)
    dst_k = samples.column("dst_k").astype(np.int64)
    live = ~(skip[src] | skip[dst])
    no_src = live & ~cached[src]
    no_dst = live & ~no_src & ~(cached[dst] & has_cands[dst])
    bad_rows = ~((src_k >= 0) & (src_k < count[src])) | ~((dst_k >= -1) & (dst_k < count[dst]))
    bad_rows &= live & ~no_src & ~no_dst
    problems = []
    for i in np.flatnonzero(no_src | no_dst | bad_rows).tolist():
        s, d = keys[src[i]], keys[dst[i]]
        if no_src[i]:
            problems.append(f"{path}: sample {i} names source image {s}, not cached")
        elif no_dst[i]:
            problems.append(f"{path}: sample {i} names destination {d}, not cached for {direction}")
        else:
            problems.append(
                f"{path}: sample {i} names object rows {src_k[i]}/{dst_k[i]} that the "
                f"images {s} / {d} do not have"
            )
    return problems


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
