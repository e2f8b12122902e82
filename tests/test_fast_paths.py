"""The fast paths `make bench` times, against their plain forms at fresh random draws.

What tests/test_descriptors.py and tests/test_matcher.py already cover is not repeated here;
this adds the evaluation-sized cases (200 candidates), the hand-written backward of the
fused attention core, and the training loader's extent reads and pooled arrays. Every test
draws a new seed and prints it, so a failure can be replayed.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from oracles import loop_descriptors
from test_descriptors import make_case
from test_matcher import _plain_attention, _plain_matcher, _sharp_model
from torch.utils.data import DataLoader

from omama.cache.manifest import load_manifest
from omama.cache.paths import shards_dir
from omama.cache.reader import Cache
from omama.loader.negatives import choose_negatives
from omama.loader.sampler import EpochSampler
from omama.loader.train_samples import TrainSamples
from omama.matcher.attention import ContextAttention, _TokenAttention
from omama.matcher.model import matching_loss
from omama.precompute.descriptors import mask_descriptors

C = 768


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_descriptors_200_candidates_real_size(seed):
    """All candidates of one evaluation image (200, 700x700) in one call (several internal
    chunks), checked against the loop on a random quarter of them (the loop is slow)."""
    dense, masks, boxes = make_case(seed, (50, 50), 200)
    got = mask_descriptors(dense, masks, boxes)
    assert got.shape == (200, 2 * C)
    pick = torch.randperm(200, generator=torch.Generator().manual_seed(seed))[:50]
    want = loop_descriptors(dense, masks[pick], boxes[pick])
    torch.testing.assert_close(got[pick], want, atol=1e-5, rtol=0)


def test_token_attention_gradcheck(seed):
    """The hand-written backward of the fused core against finite differences."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        x = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        return x.requires_grad_(True)

    x = rand(2, 7, 6, scale=2.0)  # raw tokens, not normalised
    q_tok = rand(2, 3, 6)
    shift = rand(2, 3)
    weight = (1 + 0.3 * torch.randn(6, generator=gen, dtype=torch.float64)).requires_grad_(True)
    bias = rand(6, scale=0.3)
    args = (x, q_tok, shift, weight, bias, 1e-5)
    assert torch.autograd.gradcheck(_TokenAttention.apply, args, eps=1e-6, atol=1e-7)


def _sharp_attention(gen: torch.Generator) -> ContextAttention:
    attn = ContextAttention(C).double()
    with torch.no_grad():
        attn.query.weight.mul_(3.0)
        attn.key.weight.mul_(3.0)
        for p in (attn.key.bias, attn.value.bias, attn.norm_input.bias):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3)
        attn.norm_input.weight.copy_(1 + 0.2 * torch.randn(C, generator=gen, dtype=torch.float64))
    return attn


@pytest.mark.parametrize("n_query", [1, 32, 200])
def test_context_attention_gradients_vs_plain(n_query, seed):
    """Outputs and the gradients w.r.t. every input and parameter, each order vs the plain
    transcription of docs/reference.md, Matcher (fp64; the token count does not change the code
    path)."""
    gen = torch.Generator().manual_seed(seed)
    attn = _sharp_attention(gen)
    desc = torch.randn(2, n_query, C, generator=gen, dtype=torch.float64)
    img = torch.randn(2, 900, C, generator=gen, dtype=torch.float64) * 1.5 + 0.2
    weights = torch.randn(2, n_query, C, generator=gen, dtype=torch.float64)

    def grads(fn):
        d = desc.clone().requires_grad_(True)
        x = img.clone().requires_grad_(True)
        attn.zero_grad(set_to_none=True)
        out = fn(d, x)
        (out * weights).sum().backward()
        named = {k: v.grad.clone() for k, v in attn.named_parameters() if v.grad is not None}
        return out.detach(), {"desc": d.grad, "img": x.grad, **named}

    params = {"CROSS_context_attn." + k: v for k, v in attn.named_parameters()}
    want_out, want = grads(lambda d, x: _plain_attention(params, d, x))
    for order in ("fast", "standard"):
        out, got = grads(lambda d, x, o=order: attn(d, x, order=o))
        assert _rel(out, want_out) < 1e-10, order
        for name, g in want.items():
            if name == "key.bias":  # zero up to rounding: softmax ignores a constant shift
                assert got[name].abs().max() < 1e-9, (order, name)
                continue
            assert _rel(got[name], g) < 1e-9, (order, name)


def test_matcher_fp32_gradients_at_200_candidates(seed):
    """The whole matcher in fp32 with 200 candidates: fast and standard orders vs the plain
    fp64 transcription, scores and every parameter's gradient within 1e-4 relative (smaller
    patch grids than the real ones keep it quick; the code path is the same)."""
    torch.manual_seed(seed)
    grid_t, grid_q = (30, 30), (19, 34)
    model = _sharp_model(grid_t, grid_q)
    b, n = 2, 200
    inputs = (
        torch.randn(b, 2 * C),
        torch.randn(b, n, 2 * C),
        torch.randn(b, grid_q[0] * grid_q[1], C),
        torch.randn(b, grid_t[0] * grid_t[1], C),
    )
    pos = torch.randint(0, n, (b,))
    visible = torch.tensor([1.0, 1.0])
    p64 = {k: v.detach().double().requires_grad_(True) for k, v in model.named_parameters()}
    sims64 = _plain_matcher(p64, *(x.double() for x in inputs))
    matching_loss(sims64, pos, visible.double()).backward()
    total = torch.cat([v.grad.flatten() for v in p64.values() if v.grad is not None]).norm()
    for order in ("fast", "standard"):
        model.zero_grad(set_to_none=True)
        sims = model(*inputs, attn_order=order)
        matching_loss(sims, pos, visible).backward()
        assert _rel(sims, sims64) < 1e-4, order
        for name, param in model.named_parameters():
            want = p64[name].grad
            if want is None:
                assert param.grad is None, name  # mlp_visible: unused, like the reference
                continue
            err = float((param.grad.double() - want).norm())
            assert err <= 1e-4 * float(want.norm()) + 1e-6 * float(total), (order, name, err)


def _plain_group(cache: Cache, shard: str, path: str) -> dict:
    """A record's datasets read whole through h5py, tokens dequantised the plain way."""
    with h5py.File(shards_dir(cache.path) / shard, "r") as f:
        g = {name: ds[()] for name, ds in f[path].items()}
    if "token_scale" in g:
        g["tokens"] = (g["tokens"].astype(np.float32) * g["token_scale"][:, None]).astype(
            np.float16
        )
    return g


def _plain_sample(data: TrainSamples, epoch: int, i: int) -> dict[str, torch.Tensor]:
    """A training sample (docs/reference.md, Training sample) read the plain way: whole h5py
    datasets, indexed in numpy."""
    s = data.samples[i]
    m = load_manifest(data.cache.path)  # the workers' reader carries no manifest
    rng = np.random.default_rng([data.seed, epoch, i])
    src = _plain_group(data.cache, m.images[s.src], f"img/{s.src}")
    dst = _plain_group(data.cache, m.images[s.dst], f"img/{s.dst}")
    cand = _plain_group(
        data.cache, m.candidates[data.direction][s.dst], f"cand/{data.direction}/{s.dst}"
    )
    desc = cand["desc"]
    anchor = int(cand["anchor"][s.dst_k]) if s.dst_k >= 0 else -1
    adj_row = cand["adj"][anchor] if anchor >= 0 else None
    negatives = choose_negatives(len(desc), data.n_masks, anchor, adj_row, rng)
    if anchor >= 0:
        positive = dst["obj_desc"][s.dst_k]
    else:
        positive = desc[int(rng.integers(len(desc)))]
    slot = int(rng.integers(0, data.n_masks))
    return {
        "src_tokens": torch.from_numpy(src["tokens"]),
        "dst_tokens": torch.from_numpy(dst["tokens"]),
        "src_desc": torch.from_numpy(src["obj_desc"][s.src_k]),
        "cand_desc": torch.from_numpy(np.insert(desc[negatives], slot, positive, axis=0)),
        "pos_index": torch.tensor(slot),
        "visible": torch.tensor(float(anchor >= 0)),
    }


def test_train_samples_read_exactly_the_plain_sample(cache_dir, seed):
    """Extent reads into batch arrays give the plain h5py reading, bit for bit, and a
    sample still held is never overwritten by the next one."""
    data = TrainSamples(Cache(cache_dir), "exo2ego", "train", n_masks=8, seed=seed % 1000)
    held = []
    for epoch in range(2):
        for i in range(len(data)):
            got = data[(epoch, i)]
            want = _plain_sample(data, epoch, i)
            for key in want:
                assert torch.equal(got[key], want[key].to(got[key].dtype)), key
            held.append((got, want))
    for got, want in held:  # later reads reused no array that a held sample still uses
        assert torch.equal(got["src_tokens"], want["src_tokens"])
        assert torch.equal(got["dst_tokens"], want["dst_tokens"])
    data.cache.close()


def test_batches_read_in_place_equal_single_samples(cache_dir, seed):
    """A batch read by __getitems__ (in-process and in 2 worker processes, where its arrays
    live in shared memory) holds exactly the single samples of the same (epoch, index)."""
    data = TrainSamples(Cache(cache_dir), "exo2ego", "train", n_masks=8, seed=seed % 1000)
    sampler = EpochSampler(len(data), seed=seed % 1000)
    sampler.set_epoch(1)
    indices = list(sampler)
    for workers in (0, 2):
        loader = DataLoader(
            data, batch_size=5, sampler=sampler, collate_fn=data.collate, num_workers=workers
        )
        for k, batch in enumerate(loader):
            for j, index in enumerate(indices[5 * k : 5 * k + 5]):
                one = data[index]
                for key, value in one.items():
                    assert torch.equal(batch[key][j], value), (workers, key)
    data.cache.close()
