"""`--precision`: fp32 is the default of evaluation, bf16 stays close to it."""

from __future__ import annotations

import torch

from omama.cache.reader import Cache
from omama.loader.sampler import EpochSampler
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import build_matcher
from omama.precision import autocast, resolve
from omama.predict.scoring import score_samples
from omama.train.step import TrainStep, build_optimizer, train_loader

CPU = torch.device("cpu")


def test_auto_is_bf16_on_cuda_only():
    assert resolve("auto", torch.device("cuda")) == "bf16"
    assert resolve("auto", CPU) == "fp32" and resolve("bf16", CPU) == "bf16"
    x = torch.randn(4, 4)
    with autocast("fp32", CPU):
        assert (x @ x).dtype == torch.float32
    with autocast("bf16", CPU):
        assert (x @ x).dtype == torch.bfloat16


def test_bf16_scores_stay_close_to_fp32(cache_dir):
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", "val")
    model = build_matcher(*cache.role_grids(samples))
    runs = {
        p: score_samples(cache, model, "exo2ego", samples, CPU, 4, progress=False, precision=p)
        for p in ("fp32", "bf16")
    }
    again = score_samples(cache, model, "exo2ego", samples, CPU, 4, progress=False)
    assert again == runs["fp32"]  # fp32 is the default, and repeatable
    diffs = [abs(a.features[0] - b.features[0]) for a, b in zip(*runs.values(), strict=True)]
    assert 0 < max(diffs) < 0.05  # bf16 did run, and stays close


def test_bf16_training_step_tracks_fp32(cache_dir):
    cache = Cache(cache_dir)
    data = TrainSamples(cache, "exo2ego", "train", 4, seed=0)
    batch = next(iter(train_loader(data, EpochSampler(len(data), 0), 4, 0, CPU)))
    losses = {}
    for p in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_matcher(*cache.role_grids(data.samples))
        optimizer, schedule = build_optimizer(model, 1e-4, 0.01, 1e-6, 10)
        losses[p] = float(TrainStep(model, optimizer, schedule, CPU, p)(batch))
    assert losses["fp32"] != losses["bf16"]
    assert abs(losses["fp32"] - losses["bf16"]) < 0.05 * abs(losses["fp32"]) + 1e-3
