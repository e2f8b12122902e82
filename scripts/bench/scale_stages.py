"""The scale row's stages, each run in a fresh process by `row_scale.in_fresh_process`.

Each goes through the project's own entry points, so that it measures whatever they do now:
`run_precompute` (its backbone stage replaced by `scale_world.fake_build`), `Cache.samples`,
the trainer's loader, the trainer's validation calls, `run_eval` and `verify_cache`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench import scale_world as world
from omama.cache.reader import Cache
from omama.cache.verify import verify_cache
from omama.loader.sampler import EpochSampler
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import build_matcher, save_matcher_state
from omama.precompute import run as precompute_run
from omama.precompute.options import PrecomputeConfig
from omama.predict.evaluate import EvalConfig, measure, run_eval
from omama.predict.ranks import score_across_ranks
from omama.predict.scoring import fit_confidence, with_confidence
from omama.train.step import train_loader

CPU = torch.device("cpu")


def precompute(
    root: Path,
    cache: Path,
    split: str,
    part: int | None,
    parts: int,
    shard_records: int,
    merge: bool = False,
) -> dict:
    """One `omama-precompute` run (a part, a plain run or `--merge`), records by fake_build."""
    weights = cache.parent / "weights.bin"
    if not weights.exists():
        weights.write_bytes(b"scale bench: no backbone runs")
    world.Timings.write = world.Timings.publish = world.Timings.open = 0.0
    precompute_run.build = world.fake_build
    precompute_run.resolve_weights = lambda cfg, cache: weights
    cfg = PrecomputeConfig(
        root=root,
        cache=cache,
        direction=world.DIRECTION,
        split=split,
        backbone=world.BACKBONE,
        random_init=True,
        part=part,
        parts=parts,
        merge=merge,
        shard_records=shard_records,
        workers=0,
    )
    report = precompute_run.run_precompute(cfg)
    return {
        "write": world.Timings.write,
        "publish": world.Timings.publish,
        "open": world.Timings.open,
        "samples": report.samples,
    }


def samples(cache: Path, split: str) -> dict:
    return {"n": len(Cache(cache).samples(world.DIRECTION, split))}


def epoch(cache: Path, batch_size: int, n_masks: int, share: int) -> dict:
    """The first 1/`share` of an epoch of the trainer's loader over the train split (one
    worker process), from the loader's start: per sample read."""
    data = TrainSamples(Cache(cache), world.DIRECTION, "train", n_masks, seed=0)
    sampler = EpochSampler(len(data), seed=0)
    loader = train_loader(data, sampler, batch_size, 1, CPU)
    n, stop = 0, len(data) // share
    for batch in loader:
        n += len(batch["visible"])
        if n >= stop:
            break
    return {"n": n}


def _matcher(cache: Cache, split: str):
    return build_matcher(*cache.role_grids(cache.samples(world.DIRECTION, split)), None, world.SPEC)


def validation(cache_path: Path, batch_size: int) -> dict:
    """The trainer's validation of the val split (omama.train.loop, end of an epoch)."""
    cache = Cache(cache_path)
    val = cache.samples(world.DIRECTION, "val")
    torch.manual_seed(0)
    model = _matcher(cache, "val").eval()
    scored = score_across_ranks(
        cache, model, world.DIRECTION, val, CPU, None, batch_size=batch_size
    )
    fit_confidence(model.visibility, scored)
    scored = with_confidence(scored, model.visibility, "visibility")
    _, _, metrics = measure(cache, world.DIRECTION, val, scored, 1)
    return {"n": metrics.n}


def evaluation(cache_path: Path, out: Path) -> dict:
    """`omama-eval` of the val split with an untrained matcher (the checkpoint written first,
    untimed by the row as it is a constant)."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "init.pt"
    torch.manual_seed(0)
    save_matcher_state(_matcher(Cache(cache_path), "val"), ckpt)
    cfg = EvalConfig(
        cache=cache_path,
        direction=world.DIRECTION,
        split="val",
        checkpoint=ckpt,
        out=out / "val_pred.json",
        device="cpu",
        workers=1,
    )
    metrics = run_eval(cfg)
    return {"n": metrics.n}


def verify(cache: Path) -> dict:
    report = verify_cache(cache)
    if report.problems:
        raise RuntimeError(f"verify found problems: {report.problems[:3]}")
    return {"records": report.images + report.candidate_sets}
