"""The token store: the same batches, the same training, tokens read once."""

from __future__ import annotations

import torch

from omama.cache.reader import Cache
from omama.loader.sampler import EpochSampler
from omama.loader.token_store import TokenStore, role_keys
from omama.loader.train_samples import TrainSamples
from omama.train.step import train_loader

CPU = torch.device("cpu")


def _batches(data: TrainSamples, n: int = 3) -> list[dict]:
    it = iter(train_loader(data, EpochSampler(len(data), 5), 3, 0, CPU))
    return [next(it) for _ in range(n)]


def test_gathered_batches_equal_batches_read_per_sample(cache_dir):
    cache = Cache(cache_dir)
    plain = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    stored = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    store = TokenStore.load(cache, stored.samples, CPU)
    stored.use_store(store.rows)
    keys = role_keys(stored.samples)
    assert store.tokens["dst"].shape[0] == len(keys["dst"]) < len(stored.samples)
    for want, got in zip(_batches(plain), _batches(stored), strict=True):
        assert "src_tokens" not in got and "src_row" in got
        got = store.gather(got)
        assert set(got) == set(want)
        for key, value in want.items():
            assert torch.equal(got[key], value), key


def test_store_only_when_it_fits(cache_dir, caplog):
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", "train")
    need = TokenStore.bytes_needed(cache, samples)
    t, c = cache.shape(cache.image(samples[0].dst), "tokens")
    assert need > len(role_keys(samples)["dst"]) * t * c * 2  # both roles counted
    assert TokenStore.maybe(cache, samples, CPU, 0) is None
    with caplog.at_level("INFO"):
        assert TokenStore.maybe(cache, samples, CPU, 0.5 * need / 1024**3) is None
    assert "tokens read per batch" in caplog.text
    assert TokenStore.maybe(cache, samples, CPU, 2 * need / 1024**3) is not None


def test_training_with_and_without_the_store_is_identical(cache_dir, tmp_path):
    from omama.cli.train import main as train_main

    runs = {}
    for gb in ("0", "-1"):
        out = tmp_path / f"store{gb}"
        argv = ["--cache", str(cache_dir), "--out", str(out), "--epochs", "1", "--batch-size", "3"]
        argv += ["--n-masks", "6", "--workers", "0", "--device", "cpu", "--token-store-gb", gb]
        assert train_main(argv) == 0
        runs[gb] = torch.load(out / "last.pt", weights_only=True)
    assert runs["0"].keys() == runs["-1"].keys()
    for key, value in runs["0"].items():
        assert torch.equal(value, runs["-1"][key]), key
