"""Session-wide fixtures: one small synthetic dataset, one random-init backbone, one cache.

Every test runs seeded: `seed` (autouse) is a pure function of OMAMA_TEST_SEED (default 0)
and the test's id; it seeds torch, numpy and random before the test and is printed, so a
failure shows how to replay it. Set OMAMA_TEST_SEED to draw other random cases.
"""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from omama.precompute.backbone import save_random_init
from omama.precompute.run import PrecomputeConfig, run_precompute
from omama.synth import SynthConfig, generate

torch.set_num_threads(min(2, os.cpu_count() or 1))
BASE_SEED = int(os.environ.get("OMAMA_TEST_SEED", "0"))


@pytest.fixture(autouse=True)
def seed(request) -> int:
    """This test's seed; torch, numpy and random are seeded with it before the test."""
    s = (BASE_SEED * 1_000_003 + zlib.crc32(request.node.nodeid.encode())) % 2**31
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
    print(f"seed {s} (OMAMA_TEST_SEED={BASE_SEED} {request.node.nodeid})")
    return s


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate(SynthConfig(seed=0, small=True, takes=3, frames=2, objects=3), root)
    return root


@pytest.fixture(scope="session")
def download(tmp_path_factory) -> Path:
    """`synth_root`'s takes as an Ego-Exo4D download (omama-synth --download), for
    omama-prepare: 3 takes, 3 cameras each, 31 frames a video."""
    from omama.synth.download import write_download

    dl = tmp_path_factory.mktemp("download") / "dl"
    write_download(SynthConfig(seed=0, small=True, takes=3, frames=2, objects=3), dl)
    return dl


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
