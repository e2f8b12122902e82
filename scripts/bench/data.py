"""The bench's data: a synthetic dataset at real sizes, a random-init backbone, and the train
split's cache made by the real precompute, each reused while the plan's sizes match."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time

from bench.common import DIRECTION, LOOP_SPLIT, TRAIN_SPLIT, Ctx
from bench.host import cpu_with_children
from omama.cache.samples import load_samples, save_samples
from omama.precompute import backbone
from omama.precompute.run import PrecomputeConfig, run_precompute
from omama.synth import SynthConfig, generate

log = logging.getLogger("bench")


def ensure_data(ctx: Ctx) -> None:
    """Synthetic dataset and random-init backbone, reused while the plan's sizes match."""
    p = ctx.plan
    ctx.data = ctx.out / "data"
    ctx.weights = ctx.out / "backbone-random-init-seed0.pth"
    want = {"small": p.small, "n_takes": p.n_takes, "n_frames": p.n_frames, "seed": 7}
    marker = ctx.out / "data.json"
    if not (marker.exists() and json.loads(marker.read_text()) == want):
        t0 = time.perf_counter()
        shutil.rmtree(ctx.data, ignore_errors=True)
        shutil.rmtree(ctx.out / "cache", ignore_errors=True)
        generate(SynthConfig(seed=7, small=p.small, takes=p.n_takes, frames=p.n_frames), ctx.data)
        marker.write_text(json.dumps(want))
        log.info("synthetic dataset in %.1f s", time.perf_counter() - t0)
    if not ctx.weights.exists():
        backbone.save_random_init(ctx.weights, seed=0)


def precompute_cfg(ctx: Ctx, split: str) -> PrecomputeConfig:
    return PrecomputeConfig(
        root=ctx.data,
        cache=ctx.cache,
        weights=ctx.weights,
        direction=DIRECTION,
        split=split,
        device=ctx.device.type,
    )


def ensure_cache(ctx: Ctx, fresh: bool) -> dict:
    """The train split's cache; `fresh` rebuilds it and returns how long that took (row 5
    reports it): seconds, CPU seconds of all processes, images."""
    ctx.cache = ctx.out / "cache"
    info: dict = {}
    marker = ctx.cache / "bench-ready.json"
    if fresh or not marker.exists():
        shutil.rmtree(ctx.cache, ignore_errors=True)
        if ctx.plan.precompute_warmup:  # first CUDA use, kernels, allocator: not timed
            run_precompute(precompute_cfg(ctx, "test"))
        t0, c0 = time.perf_counter(), cpu_with_children()
        report = run_precompute(precompute_cfg(ctx, TRAIN_SPLIT))
        info = {
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": cpu_with_children() - c0,
            "images": report.images_computed,
        }
        marker.write_text(json.dumps(info))
    return info


def tile_loop_split(ctx: Ctx, n_needed: int, exact: bool = False) -> int:
    """Write the train pairs, repeated to at least n_needed (`exact`: exactly n_needed), as
    the loop split's sample list (a repeated pair draws other negatives: the sample's RNG is
    seeded by its index). Returns the number written."""
    samples = list(load_samples(ctx.cache, DIRECTION, TRAIN_SPLIT))
    tiled = samples * max(1, math.ceil(n_needed / len(samples)))
    tiled = tiled[:n_needed] if exact else tiled
    save_samples(ctx.cache, DIRECTION, LOOP_SPLIT, tiled)
    return len(tiled)
