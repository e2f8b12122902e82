"""What a precompute run is asked to do (its options), what it reports, and the cache settings
that shape the bytes it writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omama.backbones import BACKBONES, DEFAULT_BACKBONE, Backbone
from omama.cache.quant import FEATURES
from omama.config import default_device, default_workers, opt
from omama.constants import DIRECTIONS, SPLITS


@dataclass
class PrecomputeConfig:
    root: Path | None = opt(None, "dataset root (holds processed/, dataset_jsons/, Masks_*)")
    direction: str = opt("exo2ego", "exo2ego (source exo, destination ego) or ego2exo", DIRECTIONS)
    split: str = opt("train", "which split's pairs to cache", SPLITS)
    cache: Path | None = opt(None, "cache folder; several runs (splits, directions) share it")
    pairs: Path | None = opt(
        None,
        "pair file (default ROOT/dataset_jsons/{split}_{set}_pairs.json, else the reference's "
        "train_{set}_20percent_pairs.json / custom_val_{set}_pairs_10.json)",
    )
    masks_dir: Path | None = opt(None, "candidate masks (default ROOT/Masks_{SPLIT}_{DIRECTION})")
    weights: Path | None = opt(None, "the backbone's weights file (Meta's .pth or timm's)")
    backbone: str = opt(
        DEFAULT_BACKBONE.name,
        "DINOv2 with 4 registers (ViT-S/B/L/g 14) or DINOv3 (ViT-S/B/L 16); see docs/backbones.md",
        BACKBONES,
    )
    random_init: bool = opt(False, "use a seeded random-init backbone instead of --weights")
    seed: int = opt(0, "seed of the --pairs-fraction subset and of the random-init backbone")
    device: str = opt(default_device(), "cpu or cuda", ("cpu", "cuda"))
    batch_size: int = opt(16, "images per backbone batch", low=1)
    workers: int = opt(
        default_workers(cap=None),
        "CPU workers decoding images and masks (default: every core but one)",
        low=0,
    )
    skip_bad: bool = opt(False, "log bad items to CACHE/reports/ and carry on instead of stopping")
    shard_records: int = opt(256, "records per HDF5 shard before a new shard starts", low=1)
    features: str = opt(
        "fp16", "token storage: fp16, or int8 with one fp16 scale per token", FEATURES
    )
    pairs_fraction: float = opt(
        1.0, "cache a seeded fraction of the pairs (the reference trains on 0.2); see --seed", low=0
    )
    part: int | None = opt(
        None,
        "job arrays: compute part I of --parts; the last part done merges",
        low=0,
        aliases=("--shard-index",),
    )
    parts: int = opt(
        1,
        "job arrays: number of parts (torchrun: the world size)",
        low=1,
        aliases=("--num-shards",),
    )
    merge: bool = opt(False, "only merge the finished parts of this split into manifest.json")
    dry_run: bool = opt(False, "only print the images, candidates and bytes the cache will take")
    stale: str = opt(
        "stop",
        "cached records whose input files (frame, candidate files, the image's RLEs in "
        "annotation.json) changed since they were computed: stop (list them and exit 2), "
        "recompute them, or keep them as cached",
        ("stop", "recompute", "keep"),
    )
    verify: bool = opt(False, "only check --cache (shard sha256, records, samples); exit 0 or 2")


@dataclass
class PrecomputeReport:
    images_computed: int = 0
    candidate_sets_computed: int = 0
    images_reused: int = 0
    samples: int = 0
    bad: list[dict] = field(default_factory=list)  # bad pairs, then this process's bad images
    seconds: float = 0.0
    part: str = ""  # "i-of-n" for one part of a run split into parts
    merged: bool = False  # a run in parts: this process merged them into manifest.json


def cache_settings(
    weights_sha: str,
    features: str = "fp16",
    backbone: Backbone = DEFAULT_BACKBONE,
    precision: str = "fp32",
) -> dict:
    """Everything that changes cached bytes; a cache built otherwise is refused (also the
    parts of one split at merge). `precision`: the backbone's number format
    (`backbone.precision_on`); recorded as `backbone_precision` when not fp32, so caches
    made on the CPU keep their bytes, and fp16 (CUDA) and fp32 parts are never mixed."""
    extra = {} if precision == "fp32" else {"backbone_precision": precision}
    return extra | {
        "backbone": backbone.arch,
        "weights_sha256": weights_sha,
        "patch": backbone.patch,
        "portrait_policy": "stretch-to-landscape",
        "features": "float16" if features == "fp16" else "int8+float16-scale-per-token",
        "descriptor": "mask-mean+context100-mean@1/4",
        "adjacency_order": 2,
    }
