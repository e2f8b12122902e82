"""Session-wide fixtures: one small synthetic dataset, one random-init backbone, one cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from omama.dataset.synth import SynthConfig, generate
from omama.precompute.backbone import save_random_init
from omama.precompute.pipeline import PrecomputeConfig, run_precompute

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(SynthConfig(seed=0, small=True, n_takes=3, n_frames=2, n_objects=3), root)
    return root


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    return save_random_init(tmp_path_factory.mktemp("weights") / "dinov2_vitb14_reg4.pth", seed=0)


def precompute_config(root: Path, cache: Path, weights: Path, **kw) -> PrecomputeConfig:
    base = dict(root=root, cache=cache, weights=weights, device="cpu", batch_size=4, workers=0)
    base.update(kw)
    return PrecomputeConfig(**base)


@pytest.fixture(scope="session")
def cache_dir(synth_root, weights, tmp_path_factory) -> Path:
    """exo2ego train/val/test cached with the random-init backbone."""
    cache = tmp_path_factory.mktemp("cache") / "cache"
    for split in ("train", "val", "test"):
        run_precompute(precompute_config(synth_root, cache, weights, split=split))
    return cache
