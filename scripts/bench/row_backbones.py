"""Row 8: precompute per backbone. The whole precompute stage (decode .. HDF5 writes) of the
same images with each backbone, each into a fresh cache: images/s and cache bytes per image.
The ratio is ViT-S's images/s over the default ViT-B's, measured in one run, one after the
other (a busy host slows both alike only roughly: the figures are noisy on a shared CPU)."""

from __future__ import annotations

import shutil
import time

from bench.common import DIRECTION, Ctx, Row
from bench.host import cpu_with_children
from omama.backbones import DEFAULT_BACKBONE, backbone_info
from omama.cache.manifest import load_manifest
from omama.precompute import backbone
from omama.precompute.run import PrecomputeConfig, run_precompute

SPLIT = "test"  # one take of the bench's synthetic data: a few real-size images
SMALL = "dinov2_vits14_reg4"
# the GPU also times ViT-L (a 1.2 GB random-init file; on 2 CPU cores it alone would take
# minutes); ViT-g's 4.4 GB file is left out everywhere
BACKBONES = {
    "cpu": (SMALL, DEFAULT_BACKBONE.name),
    "cuda": (SMALL, DEFAULT_BACKBONE.name, "dinov2_vitl14_reg4"),
}


def precompute_once(ctx: Ctx, name: str) -> dict:
    """Precompute the split with backbone `name` into a fresh cache; seconds, CPU seconds,
    images computed and the cache's shard bytes."""
    spec = backbone_info(name)
    folder = ctx.out / "backbones"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}-random-init-seed0.pth"
    if not weights.exists():
        backbone.save_random_init(weights, 0, spec)
    cache = folder / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    cfg = PrecomputeConfig(
        root=ctx.data,
        cache=cache,
        weights=weights,
        backbone=name,
        direction=DIRECTION,
        split=SPLIT,
        device=ctx.device.type,
    )
    t0, c0 = time.perf_counter(), cpu_with_children()
    report = run_precompute(cfg)
    seconds, cpu = time.perf_counter() - t0, cpu_with_children() - c0
    manifest = load_manifest(cache)
    assert manifest is not None
    shard_bytes = sum(info["bytes"] for info in manifest.shards.values())
    shutil.rmtree(cache)
    return {
        "backbone": name,
        "width": spec.width,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "images": report.images_computed,
        "images_per_s": report.images_computed / seconds,
        "bytes_per_image": shard_bytes / max(1, report.images_computed),
    }


def _text(m: dict) -> str:
    return (
        f"{backbone_info(m['backbone']).title}: {m['images_per_s']:.3f} images/s, "
        f"{m['bytes_per_image'] / 1e6:.2f} MB/image"
    )


def run(ctx: Ctx) -> list[Row]:
    names = BACKBONES["cuda" if ctx.device.type == "cuda" else "cpu"]
    if ctx.plan.precompute_warmup:  # first CUDA use, kernels, allocator: not timed
        precompute_once(ctx, SMALL)
    got = {name: precompute_once(ctx, name) for name in names}
    small, base = got[SMALL], got[DEFAULT_BACKBONE.name]
    ratio = small["images_per_s"] / base["images_per_s"]
    others = [_text(m) for n, m in got.items() if n not in (SMALL, DEFAULT_BACKBONE.name)]
    gpu = ctx.device.type == "cuda"
    return [
        Row(
            row="8",
            what=f"precompute per backbone ({base['images']} images of the {SPLIT} split, "
            f"whole stage), {ctx.device.type}" + (" FP16" if gpu else " fp32"),
            project=_text(small),
            baseline=_text(base),
            ratio=ratio,
            target="ViT-S faster than ViT-B (> 1); bytes per image reported",
            met=ratio > 1.0,
            command=ctx.command("8"),
            note="one timed run each into a fresh cache, ViT-S first; bytes are the shards "
            "(tokens scale with the width: 384 / 768 / 1024 values per patch); CPU seconds "
            f"(all processes, robust to other tenants): {small['cpu_seconds']:.1f} vs "
            f"{base['cpu_seconds']:.1f} ({base['cpu_seconds'] / small['cpu_seconds']:.2f})"
            + (f"; also {'; '.join(others)}" if others else ""),
            details={"backbones": list(got.values())},
        )
    ]
