"""Planning a split: its pairs, the unique images they name, the work still to do, its samples.

    pairs (file, --pairs-fraction, --skip-bad) -> samples -> unique images -> jobs -> (build)

`table_images` is the one place that turns a split's pairs (as samples, `plan.make_plan`)
into images: the run, its parts, the merge and `--dry-run` all plan from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omama.cache.manifest import Manifest
from omama.cache.records import Sample, image_key
from omama.cache.samples import SampleTable
from omama.dataset.layout import (
    Annotations,
    Pair,
    find_pairs_file,
    load_pairs,
    split_takes,
    validate_pairs,
)
from omama.errors import OmamaError
from omama.precompute.options import PrecomputeConfig
from omama.precompute.subset import select_fraction, subset_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """The pairs a run caches, and what was left out of the pair file."""

    pairs: list[Pair]
    subset: dict | None = None  # what the manifest records about a --pairs-fraction subset
    bad: list[dict] = field(default_factory=list)  # pairs --skip-bad left out, with the error


@dataclass(frozen=True)
class SplitImages:
    """Every image the pairs name (key -> take, camera, frame) and the destination images,
    whose candidate masks are cached too."""

    where: dict[str, tuple[str, str, str]]
    dest: frozenset[str]


@dataclass(frozen=True)
class Job:
    """One image to read and compute."""

    key: str
    take: str
    cam: str
    frame: str
    objects: tuple[str, ...]
    need_image: bool  # backbone + object descriptors
    need_cands: bool  # candidate descriptors, adjacency, anchors


def select_pairs(cfg: PrecomputeConfig, ann: Annotations) -> Selection:
    """The split's pairs: the pair file, its --pairs-fraction subset, bad pairs handled."""
    root = Path(cfg.root)
    split_takes(root, cfg.split)  # a split absent from split.json is a typo: refuse
    path = cfg.pairs or find_pairs_file(root, cfg.split, cfg.direction)
    pairs = load_pairs(path, cfg.direction)
    subset = None
    if cfg.pairs_fraction != 1.0:
        n_all = len(pairs)
        pairs = select_fraction(pairs, cfg.pairs_fraction, cfg.seed)
        subset = subset_record(cfg.pairs_fraction, cfg.seed, n_all, len(pairs))
        log.info("%s: kept %d of %d pairs (seed %d)", path, len(pairs), n_all, cfg.seed)
    if not cfg.skip_bad:
        validate_pairs(pairs, ann, path)
        return Selection(pairs, subset)
    good, bad = [], []
    for p in pairs:
        try:
            validate_pairs([p], ann, path)
            good.append(p)
        except OmamaError as exc:
            log.warning("skipping bad pair: %s", exc)
            bad.append({"pair": [p.take, p.obj, p.src_cam, p.frame], "error": str(exc)})
    if not good:
        raise OmamaError(f"{path}: every pair is bad (see the warnings above)")
    return Selection(good, subset, bad)


def table_images(samples: SampleTable) -> SplitImages:
    """The unique images (sources and destinations, in key order) of a split's samples, from
    their columns: each image's take, camera and frame from its first row."""
    keys, takes = samples.names("images"), samples.names("takes")
    cams, frames = samples.names("cams"), samples.names("frames")
    take, frame = samples.column("take"), samples.column("frame")
    where: dict[str, tuple[str, str, str]] = {}
    for role in ("src", "dst"):
        ids, first = np.unique(samples.column(role), return_index=True)
        cam = samples.column(f"{role}_cam")[first]
        for i, t, c, f in zip(ids.tolist(), take[first].tolist(), cam.tolist(),
                              frame[first].tolist(), strict=True):  # fmt: skip
            where[keys[i]] = (takes[t], cams[c], frames[f])
    dest = frozenset(keys[i] for i in np.unique(samples.column("dst")).tolist())
    return SplitImages(dict(sorted(where.items())), dest)


def plan_jobs(
    images: SplitImages,
    keys: Iterable[str],
    ann: Annotations,
    manifest: Manifest,
    direction: str,
) -> list[Job]:
    """The images among `keys` (in key order) whose records `manifest` does not list yet."""
    have_cands = manifest.candidates.get(direction, {})
    jobs = []
    for key in sorted(keys):
        take, cam, frame = images.where[key]
        need_image = key not in manifest.images
        need_cands = key in images.dest and key not in have_cands
        if need_image or need_cands:
            objects = tuple(ann.objects_at(take, cam, frame))
            jobs.append(Job(key, take, cam, frame, objects, need_image, need_cands))
    return jobs


def build_samples(pairs: list[Pair], ann: Annotations) -> list[Sample]:
    """Each pair resolved to its cached images and the object's row in each."""
    samples = []
    for p in pairs:
        src_objs = ann.objects_at(p.take, p.src_cam, p.frame)
        dst_objs = ann.objects_at(p.take, p.dst_cam, p.frame)
        samples.append(
            Sample(
                take=p.take,
                obj=p.obj,
                src_cam=p.src_cam,
                dst_cam=p.dst_cam,
                frame=p.frame,
                src=image_key(p.take, p.src_cam, p.frame),
                dst=image_key(p.take, p.dst_cam, p.frame),
                src_k=src_objs.index(p.obj),
                dst_k=dst_objs.index(p.obj) if p.obj in dst_objs else -1,
            )
        )
    return samples
