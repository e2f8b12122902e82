"""The scale row's data: a dataset root with real counts at tiny sizes, and its records.

Every take has one ego camera and four exo cameras, `FRAMES` frames and `OBJECTS` objects,
each annotated in every camera at every frame except the ego camera at one frame in four
(so a quarter of the exo2ego pairs are invisible): 24 exo2ego pairs per 5 images, the ratio
of the real train split (about 1.5M pairs over 300k images). Frames are never read: the
records are written through the real shard writer by `fake_build`, which stands in for the
backbone stage of `omama.precompute.build.build` (same arguments, same publishing), so the
planning, shard naming, manifest, part manifests, merge and samples measured are the
project's own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from omama import rle
from omama.backbones import backbone_info
from omama.cache.records import CandidateRecord, ImageRecord
from omama.cache.writer import ShardWriter
from omama.files import write_json
from omama.precompute.build import Built
from omama.precompute.jobs import Job

DIRECTION = "exo2ego"
BACKBONE = "dinov2_vits14_reg4"  # the narrowest tokens (C = 384)
SPEC = backbone_info(BACKBONE)
EGO, EXOS = "aria01", ("cam01", "cam02", "cam03", "cam04")
FRAMES = 50  # frames per take
OBJECTS = 6  # objects per take
CANDS = 8  # candidate masks per destination image
GRID = (2, 2)  # patch grid of every image: 28 x 28 pixels
SIDE = GRID[0] * SPEC.patch


def _square_rle(h: int, w: int) -> dict:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : h // 2, w // 4 : w // 2] = 1
    return rle.encode(mask)


GT_RLE = _square_rle(SIDE, SIDE)  # every annotation, at the "original" size 28 x 28
GT_TEXT = json.dumps(GT_RLE)
CAND_TEXT = json.dumps(_square_rle(SIDE, SIDE))


def visible_in_ego(obj: int, frame: int) -> bool:
    return (obj + frame) % 4 != 0


def take_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def write_root(root: Path, splits: dict[str, int]) -> dict[str, int]:
    """`ROOT` with `splits[name]` takes per split; returns each split's pair count."""
    takes = {name: take_names(f"{name}-take", n) for name, n in splits.items()}
    write_json(takes, root / "processed" / "split.json")
    write_json({}, root / "takes.json")
    counts = {}
    for split, names in takes.items():
        pairs = []
        for take in names:
            masks: dict = {}
            for o in range(OBJECTS):
                obj = f"object {o}"
                cams = {cam: {str(f): GT_RLE for f in range(FRAMES)} for cam in EXOS}
                cams[EGO] = {str(f): GT_RLE for f in range(FRAMES) if visible_in_ego(o, f)}
                masks[obj] = cams
                for cam in EXOS:
                    for f in range(FRAMES):
                        pairs.append(
                            [
                                f"R//{take}//{EGO}//{obj}//rgb//{f}",
                                f"R//{take}//{EGO}//{obj}//mask//{f}",
                                f"R//{take}//{cam}//{obj}//rgb//{f}",
                                f"R//{take}//{cam}//{obj}//mask//{f}",
                            ]
                        )
            doc = {"masks": masks, "subsample_idx": list(range(FRAMES))}
            path = root / "processed" / take / "annotation.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc))
        write_json(pairs, root / "dataset_jsons" / f"{split}_exoego_pairs.json")
        counts[split] = len(pairs)
    return counts


def image_record(objects: tuple[str, ...]) -> ImageRecord:
    k = len(objects)
    rng = np.random.default_rng(k)
    return ImageRecord(
        tokens=rng.standard_normal((GRID[0] * GRID[1], SPEC.width)).astype(np.float16),
        image=np.zeros((SIDE, SIDE, 3), np.uint8),
        grid=GRID,
        orig_hw=(SIDE, SIDE),
        obj_names=list(objects),
        obj_desc=rng.standard_normal((k, SPEC.desc_dim)).astype(np.float32),
        obj_box=np.tile(np.float32([7, 7, 7, 7]), (k, 1)),
        obj_rle=[GT_TEXT] * k,
    )


def candidate_record(objects: tuple[str, ...]) -> CandidateRecord:
    rng = np.random.default_rng(CANDS)
    adj = np.ones((CANDS, CANDS), np.uint8)
    np.fill_diagonal(adj, 0)
    return CandidateRecord(
        desc=rng.standard_normal((CANDS, SPEC.desc_dim)).astype(np.float32),
        boxes=np.tile(np.float32([7, 7, 7, 7]), (CANDS, 1)),
        adj=adj,
        rle=[CAND_TEXT] * CANDS,
        anchor=(np.arange(len(objects)) % CANDS).astype(np.int32),
    )


class Timings:
    """Seconds spent writing records, publishing shards and opening (naming) shards."""

    write = 0.0
    publish = 0.0
    open = 0.0


def fake_build(
    cfg, jobs: list[Job], work, weights, device, ann, prefix, publish, on_publish=None
) -> Built:
    """`omama.precompute.build.build` without the backbone (the same parameters): tiny
    records for `jobs`, written and published through the real `ShardWriter`, the records'
    input fingerprints (`on_publish`) and the split's `publish`."""
    t_start = time.perf_counter()
    publish_before, open_before = Timings.publish, Timings.open

    def on_shard(name: str, info: dict, images: list[str], cands: list) -> None:
        t0 = time.perf_counter()
        if on_publish is not None:
            on_publish(name, images, cands)
        publish(work, name, info, images, cands)
        Timings.publish += time.perf_counter() - t0

    writer = ShardWriter(Path(cfg.cache), prefix, on_shard, cfg.shard_records, backbone=SPEC)
    opener = writer._open

    def timed_open():
        t0 = time.perf_counter()
        try:
            return opener()
        finally:
            Timings.open += time.perf_counter() - t0

    writer._open = timed_open
    built = Built()
    for job in jobs:
        if job.need_image:
            writer.add_image(job.key, image_record(job.objects))
            built.images += 1
        if job.need_cands:
            writer.add_candidates(cfg.direction, job.key, candidate_record(job.objects))
            built.candidate_sets += 1
    writer.close_shard()
    spent = time.perf_counter() - t_start
    Timings.write += spent - (Timings.publish - publish_before) - (Timings.open - open_before)
    return built
