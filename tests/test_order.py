"""The block order and the rolling token store: same samples, same tokens, locality kept."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import precompute_config

from omama.cache.reader import Cache
from omama.errors import OmamaError
from omama.loader.order import plan_order, take_blocks
from omama.loader.rolling_store import RollingTokenStore
from omama.loader.sampler import EpochSampler
from omama.loader.token_store import GB, TokenStore, role_keys
from omama.loader.train_samples import TrainSamples
from omama.precompute.run import run_precompute
from omama.synth import SynthConfig, generate
from omama.train.step import train_loader

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def takes_cache(weights, tmp_path_factory) -> Path:
    """A train split of four takes, two frames each."""
    root = tmp_path_factory.mktemp("synth_takes") / "data"
    generate(SynthConfig(seed=1, small=True, takes=6, frames=2, objects=3), root)
    cache = tmp_path_factory.mktemp("cache_takes") / "cache"
    run_precompute(precompute_config(root, cache, weights, split="train"))
    return cache


def _take_bytes(cache: Cache, samples) -> dict[str, int]:
    takes = sorted({s.take for s in samples})
    return {t: TokenStore.bytes_needed(cache, [s for s in samples if s.take == t]) for t in takes}


def _one_take_gb(cache: Cache, samples) -> float:
    """A store budget whose half holds the largest take, and no two takes together."""
    sizes = sorted(_take_bytes(cache, samples).values())
    assert sizes[0] + sizes[1] > sizes[-1]  # so two takes exceed the block budget
    return 2 * sizes[-1] / GB


def test_blocks_are_whole_takes_within_the_budget(takes_cache):
    cache = Cache(takes_cache)
    samples = cache.samples("exo2ego", "train")
    per_take = _take_bytes(cache, samples)
    assert len(per_take) == 4
    budget = 2 * max(per_take.values())  # room for about two takes
    blocks = take_blocks(cache, samples, budget)
    assert 2 <= len(blocks) < len(per_take)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(len(samples)))
    seen: set[str] = set()
    for block in blocks:
        takes = {samples[i].take for i in block}
        assert not takes & seen  # a take is never split over blocks
        seen |= takes
        assert TokenStore.bytes_needed(cache, [samples[i] for i in block]) <= budget
    assert len(take_blocks(cache, samples, 10 * budget)) == 1
    assert len(take_blocks(cache, samples, 1)) == len(per_take)  # too small: one take each


def test_block_order_every_sample_once_reproducible_blocks_contiguous():
    blocks = [np.arange(0, 7), np.arange(7, 10), np.arange(10, 22), np.arange(22, 25)]
    block_of = np.concatenate([np.full(len(b), k) for k, b in enumerate(blocks)])
    s = EpochSampler(25, seed=3, blocks=blocks)
    orders = []
    for epoch in range(3):
        s.set_epoch(epoch)
        order = [i for _, i in s]
        assert sorted(order) == list(range(25))
        visits = block_of[order]
        assert (np.diff(visits) != 0).sum() == len(blocks) - 1  # each block once, whole
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    again = EpochSampler(25, seed=3, blocks=blocks)
    again.set_epoch(1)
    assert [i for _, i in again] == orders[1]
    other = EpochSampler(25, seed=4, blocks=blocks)
    other.set_epoch(1)
    assert [i for _, i in other] != orders[1]


def test_block_order_ranks_and_resume():
    blocks = [np.arange(0, 5), np.arange(5, 13), np.arange(13, 17)]
    full = EpochSampler(17, seed=8, blocks=blocks)
    full.set_epoch(2)
    whole = list(full)
    full.set_epoch(2, start=6)
    assert list(full) == whole[6:]
    parts = []
    for rank in range(3):
        r = EpochSampler(17, seed=8, rank=rank, num_replicas=3, blocks=blocks)
        r.set_epoch(2)
        mine = list(r)
        assert mine == whole[rank::3]
        r.set_epoch(2, start=2)
        assert list(r) == mine[2:]
        parts += mine
    assert sorted(parts) == sorted(whole)


def test_auto_is_todays_shuffle_when_the_split_fits(takes_cache):
    cache = Cache(takes_cache)
    plain = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    stored = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    need = TokenStore.bytes_needed(cache, stored.samples)
    plan = plan_order("auto", cache, stored.samples, CPU, 2 * need / GB, 3)
    assert plan.order == "shuffle" and plan.blocks is None
    assert isinstance(plan.store, TokenStore)
    off = plan_order("auto", cache, stored.samples, CPU, 0, 3)
    assert off.order == "shuffle" and off.store is None
    today = EpochSampler(len(plain), 5)
    auto = EpochSampler(len(stored), 5, blocks=plan.blocks)
    for epoch in range(2):
        today.set_epoch(epoch)
        auto.set_epoch(epoch)
        assert np.array_equal(today.order(), auto.order())
    stored.use_store(plan.store.rows)
    want = list(train_loader(plain, today, 3, 0, CPU))
    got = list(train_loader(stored, auto, 3, 0, CPU))
    assert len(want) == len(got) == -(-len(plain) // 3)
    for w, g in zip(want, got, strict=True):
        g = plan.store.gather(g)
        assert set(g) == set(w)
        for key, value in w.items():
            assert torch.equal(g[key], value), key
    small = plan_order("auto", cache, stored.samples, CPU, 0.5 * need / GB, 3)
    assert small.order == "blocks" and isinstance(small.store, RollingTokenStore)
    with pytest.raises(OmamaError, match="token-store-gb 0"):
        plan_order("blocks", cache, stored.samples, CPU, 0, 3)


@pytest.mark.parametrize("workers", [0, 1])
def test_small_rolling_store_gives_the_tokens_read_per_batch(takes_cache, workers):
    """Two epochs of block-ordered batches through a store of one batch's slots (evicting in
    nearly every step), and through the planned two-block store: equal to reading per batch."""
    cache = Cache(takes_cache)
    plain = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    stored = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    plan = plan_order("blocks", cache, stored.samples, CPU, _one_take_gb(cache, plain.samples), 3)
    assert plan.order == "blocks" and len(plan.blocks) == 4
    keys = role_keys(stored.samples)
    tiny = RollingTokenStore(cache, keys, {"src": 3, "dst": 3}, CPU)
    stored.use_store(plan.store.rows)
    assert tiny.rows == plan.store.rows
    for epoch in range(2):
        reads = plan.store.reads
        batches = {}
        for name, data in (("plain", plain), ("stored", stored)):
            sampler = EpochSampler(len(data), 7, blocks=plan.blocks)
            sampler.set_epoch(epoch)
            batches[name] = list(train_loader(data, sampler, 3, workers, CPU))
        for want, got in zip(batches["plain"], batches["stored"], strict=True):
            assert "src_tokens" not in got
            for store in (tiny, plan.store):
                gathered = store.gather(got)
                assert set(gathered) == set(want)
                for key, value in want.items():
                    assert torch.equal(gathered[key], value), key
        if epoch == 0:  # the two-block store reads each image once per visit of its block
            assert plan.store.reads - reads == len(keys["src"]) + len(keys["dst"])
    assert tiny.reads > plan.store.reads  # the one-batch store did evict and re-read


def test_training_with_block_order_and_a_tiny_store(takes_cache, tmp_path):
    from omama.cli.train import main as train_main

    cache = Cache(takes_cache)
    gb = _one_take_gb(cache, cache.samples("exo2ego", "train"))
    out = tmp_path / "blocks"
    argv = ["--cache", str(takes_cache), "--out", str(out), "--epochs", "1", "--batch-size", "6"]
    argv += ["--n-masks", "6", "--workers", "1", "--device", "cpu", "--val-split", "none"]
    assert train_main([*argv, "--order", "blocks", "--token-store-gb", f"{gb:.12f}"]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["order"] == {"order": "blocks", "blocks": 4, "budget": int(gb * GB)}
    assert log["config"]["order"] == "blocks"
    losses = [s["loss"] for s in log["steps"]]
    assert len(log["epochs"]) == 1 and all(np.isfinite(losses))
    weights = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_a_recorded_budget_gives_the_same_blocks(takes_cache):
    """`auto` resolves against the free memory; a resumed run passes the order and budget its
    log recorded, and gets the same blocks whatever `--token-store-gb` says now (0 included),
    so the rest of an epoch comes in the order its first part did."""
    cache = Cache(takes_cache)
    samples = cache.samples("exo2ego", "train")
    begun = plan_order("auto", cache, samples, CPU, _one_take_gb(cache, samples), 3)
    assert begun.order == "blocks" and len(begun.blocks) == 4
    rec = begun.summary()
    for gb in (-1.0, 0.0):
        again = plan_order(rec["order"], cache, samples, CPU, gb, 3, rec["budget"])
        assert again.summary() == rec
        assert all(np.array_equal(a, b) for a, b in zip(again.blocks, begun.blocks, strict=True))


@pytest.mark.parametrize("slow", [False, True], ids=["fast disk", "slow disk"])
def test_the_next_block_is_read_ahead_in_the_background(slow, takes_cache, monkeypatch):
    """Following the epoch's order, the two-block store reads every block after the first
    ahead (a background thread, pinned host memory on CUDA) and each image once per visit;
    the gathered batches still equal the batches read per batch. On a slow disk the read of
    the next block is still running when training enters it: the step waits for it and keeps
    it, rather than dropping it and reading the block again."""
    cache = Cache(takes_cache)
    plain = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    stored = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    plan = plan_order("blocks", cache, stored.samples, CPU, _one_take_gb(cache, plain.samples), 3)
    stored.use_store(plan.store.rows)
    store = plan.store
    if slow:
        read_ahead = store._read_ahead

        def slowly(*args):
            time.sleep(0.5)
            return read_ahead(*args)

        monkeypatch.setattr(store, "_read_ahead", slowly)
    n_images = sum(len(v) for v in role_keys(stored.samples).values())
    for epoch in range(2):
        sampler = EpochSampler(len(stored), 7, blocks=plan.blocks)
        sampler.set_epoch(epoch)
        plan.follow(sampler.order())
        first = plan.blocks[store.sequence[0]]
        first_images = sum(len(v) for v in role_keys([stored.samples[i] for i in first]).values())
        reads, ahead = store.reads, store.ahead
        want = list(train_loader(plain, sampler, 3, 0, CPU))
        for w, got in zip(want, train_loader(stored, sampler, 3, 0, CPU), strict=True):
            g = store.gather(got)
            for key, value in w.items():
                assert torch.equal(g[key], value), key
        assert store.ahead > ahead
        if epoch == 0:  # an empty store: every image once, all but the first block's ahead
            assert store.reads - reads == n_images
            assert store.ahead - ahead == n_images - first_images
    store.close()


def test_a_take_larger_than_half_the_store_is_refused(takes_cache):
    cache = Cache(takes_cache)
    samples = cache.samples("exo2ego", "train")
    gb = _one_take_gb(cache, samples) * 0.9  # the largest take is more than half of it
    with pytest.raises(OmamaError, match=r"^--token-store-gb .*: take .* alone needs .* half"):
        plan_order("blocks", cache, samples, CPU, gb, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rolling_store_reads_ahead_into_pinned_memory(takes_cache):
    """On CUDA: the read-ahead's host tokens are pinned, copies are asynchronous, and the
    gathered batches equal the batches read per batch."""
    cache, dev = Cache(takes_cache), torch.device("cuda")
    plain = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    stored = TrainSamples(cache, "exo2ego", "train", 6, seed=3)
    plan = plan_order("blocks", cache, stored.samples, dev, _one_take_gb(cache, plain.samples), 3)
    stored.use_store(plan.store.rows)
    sampler = EpochSampler(len(stored), 7, blocks=plan.blocks)
    sampler.set_epoch(0)
    plan.follow(sampler.order())
    pinned = []
    want_all = list(train_loader(plain, sampler, 3, 0, dev))
    for w, got in zip(want_all, train_loader(stored, sampler, 3, 0, dev), strict=True):
        pinned += [v[2].is_pinned() for v in plan.store.staged.values()]
        g = plan.store.gather(got)
        for key, value in w.items():
            assert torch.equal(g[key].cpu(), value.cpu()), key
    assert plan.store.ahead > 0 and all(pinned)
    plan.store.close()
