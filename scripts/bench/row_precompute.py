"""Row 5: the whole precompute stage (decode .. HDF5 writes, timed by `data.ensure_cache`)
against the backbone forward alone on exactly the images the backbone saw."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch

from bench.common import DIRECTION, TRAIN_SPLIT, Ctx, Row
from omama.backbones import DEFAULT_BACKBONE
from omama.cache.reader import Cache
from omama.cache.samples import load_samples
from omama.precompute import backbone
from omama.precompute.options import PrecomputeConfig


def backbone_batches(ctx: Ctx) -> list[torch.Tensor]:
    """The cached images of the train split (what the backbone saw), in batches of the
    precompute's default size, each of one image size."""
    cache = Cache(ctx.cache)
    keys = sorted(
        {k for s in load_samples(ctx.cache, DIRECTION, TRAIN_SPLIT) for k in (s.src, s.dst)}
    )
    images = [cache.pixels(k) for k in keys]
    cache.close()
    batch_size = PrecomputeConfig().batch_size
    by_size: dict[tuple, list[np.ndarray]] = defaultdict(list)
    for im in images:
        by_size[im.shape].append(im)
    return [
        torch.from_numpy(np.stack(group[i : i + batch_size]))
        for group in by_size.values()
        for i in range(0, len(group), batch_size)
    ]


def run(ctx: Ctx) -> list[Row]:
    dev, build = ctx.device, ctx.build
    batches = backbone_batches(ctx)
    model = backbone.load_backbone(ctx.weights, dev)
    if dev.type == "cuda":
        backbone.patch_tokens(model, batches[0])
    else:  # a small forward: first-call costs without paying a full 700x700 forward
        side = 16 * DEFAULT_BACKBONE.patch
        backbone.patch_tokens(model, torch.zeros(1, side, side, 3, dtype=torch.uint8))
    ctx.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for x in batches:
        backbone.patch_tokens(model, x)
    ctx.sync()
    fwd, fwd_cpu = time.perf_counter() - t0, time.process_time() - c0
    del model
    n = sum(len(x) for x in batches)
    pre_rate, fwd_rate = build["images"] / build["seconds"], n / fwd
    ratio = pre_rate / fwd_rate
    gpu = dev.type == "cuda"
    cpu_text = (
        f"; CPU seconds (all processes, robust to other tenants): "
        f"{build['cpu_seconds']:.1f} vs {fwd_cpu:.1f} ({fwd_cpu / build['cpu_seconds']:.2f})"
        if not gpu and build.get("cpu_seconds")
        else ""
    )
    return [
        Row(
            row="5",
            what=f"precompute, whole stage ({build['images']} images: decode, crop, backbone, "
            f"pooling, adjacency, HDF5), {dev.type}" + (" FP16" if gpu else " fp32"),
            project=f"{pre_rate:.3f} images/s ({build['seconds']:.1f} s)",
            baseline=f"{fwd_rate:.3f} images/s (backbone forward alone, {fwd:.1f} s)",
            ratio=ratio,
            target=">= 0.9 on a GPU in FP16; CPU figure reported",
            met=(ratio >= 0.9) if gpu else None,
            command=ctx.command("5"),
            note=f"one timed run of each ({len(batches)} backbone batches); the stage includes "
            f"loading the backbone and hashing its weights file{cpu_text}",
            details={
                "precompute_s": build["seconds"],
                "precompute_cpu_s": build.get("cpu_seconds"),
                "forward_s": fwd,
                "forward_cpu_s": fwd_cpu,
                "images": n,
            },
        )
    ]
