"""The token store: the same batches, the same training, tokens read once."""

from __future__ import annotations

import pytest
import torch

from omama.cache.reader import Cache
from omama.errors import OmamaError
from omama.loader import token_store
from omama.loader.sampler import EpochSampler
from omama.loader.token_store import (
    STAGE_BYTES,
    TokenStore,
    check_room,
    read_tokens,
    role_keys,
    stage_into,
    stage_rows,
    to_device,
)
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


def test_staged_in_chunks_equals_one_read(cache_dir):
    """The store fills a few images at a time (any chunk size) with the bytes of one read."""
    cache = Cache(cache_dir)
    keys = role_keys(cache.samples("exo2ego", "train"))["dst"]
    whole = read_tokens(cache, keys)
    for rows in (1, 2, len(keys) + 3):
        out = torch.full_like(whole, float("nan"))
        stage_into(cache, keys, out, rows)
        assert torch.equal(out, whole), rows
    assert stage_rows(1024, 768) * 1024 * 768 * 2 <= STAGE_BYTES
    assert stage_rows(10**6, 10**4) == 1


def test_a_store_the_memory_cannot_hold_is_refused_in_one_line(cache_dir, monkeypatch):
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", "train")
    need = TokenStore.bytes_needed(cache, samples)
    monkeypatch.setattr(token_store, "free_bytes", lambda device: need // 2)
    with pytest.raises(OmamaError, match=r"^--token-store-gb 3: the token store needs .* free"):
        TokenStore.maybe(cache, samples, CPU, 3.0)
    check_room(need // 4, 3.0, CPU)  # fits: no error
    with pytest.raises(OmamaError, match="host memory"):  # pinned staging for a GPU store
        check_room(need // 4, 3.0, torch.device("cuda"), staging=need)


def test_the_step_never_reads_the_device_back():
    """Row numbers reach the store's device without a host read-back: on the meta device,
    where any read-back raises, the gather runs; on the CPU `to_device` is the plain copy."""
    keys = {"src": list("abcde"), "dst": list("xyz")}
    tokens = {r: torch.empty((len(keys[r]), 4, 3), device="meta") for r in ("src", "dst")}
    store = TokenStore(tokens, keys)
    batch = {"src_row": torch.tensor([0, 4, 4]), "dst_row": torch.tensor([2, 0, 1])}
    out = store.gather({**batch, "visible": torch.ones(3)})
    assert out["src_tokens"].device.type == "meta" and out["src_tokens"].shape == (3, 4, 3)
    rows = torch.arange(5)
    assert torch.equal(to_device(rows, CPU), rows)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_store_staged_and_gathered_without_blocking(cache_dir):
    """On CUDA: the store fills through pinned chunks and gathers from rows copied without
    blocking; the batches equal those read per batch."""
    cache, dev = Cache(cache_dir), torch.device("cuda")
    plain = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    stored = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    store = TokenStore.maybe(cache, stored.samples, dev, -1.0)
    assert store is not None and store.tokens["src"].device.type == "cuda"
    stored.use_store(store.rows)
    assert to_device(torch.arange(3), dev).device.type == "cuda"
    for want, got in zip(_batches(plain), _batches(stored), strict=True):
        got = store.gather(got)
        for key, value in want.items():
            assert torch.equal(got[key].cpu(), value), key
