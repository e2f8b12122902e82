"""The matcher against a plain transcription of docs/reference.md, Matcher, plus checkpoint I/O."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from omama.errors import OmamaError
from omama.matcher.attention import ContextAttention, choose_order
from omama.matcher.checkpoint import (
    OPTIONAL_KEYS,
    infer_grid,
    load_matcher_state,
    save_matcher_state,
)
from omama.matcher.model import OMaMaMatcher, matching_loss, predict

C = 768
HEADS = 4

# docs/reference.md, Matcher, written out key by key.
REFERENCE_KEYS = sorted(
    [f"mlp.mlp.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    + [f"mlp_visible.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")]
    + [f"CROSS_context_attn.{m}.{p}" for m in ("query", "key", "value") for p in ("weight", "bias")]
    + [f"CROSS_context_attn.project.0.{p}" for p in ("weight", "bias")]
    + [f"CROSS_context_attn.norm_input.{p}" for p in ("weight", "bias")]
    + [f"CROSS_context_attn.norm_output.{p}" for p in ("weight", "bias")]
    + [f"CROSS_context_attn.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    + ["pos_embed_T", "pos_embed_Q"]
)


# ---------------------------------------------------------------- plain transcription (oracle)
def _layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _linear(x, p, name):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _plain_attention(p, desc, img):
    a = "CROSS_context_attn."
    b, nq, _ = desc.shape
    t = img.shape[1]
    d = _layer_norm(desc, p[a + "norm_input.weight"], p[a + "norm_input.bias"])
    x = _layer_norm(img, p[a + "norm_input.weight"], p[a + "norm_input.bias"])
    q = _linear(d, p, a + "query").reshape(b, nq, HEADS, C // HEADS).permute(0, 2, 1, 3)
    k = _linear(x, p, a + "key").reshape(b, t, HEADS, C // HEADS).permute(0, 2, 1, 3)
    v = _linear(x, p, a + "value").reshape(b, t, HEADS, C // HEADS).permute(0, 2, 1, 3)
    logits = q @ k.transpose(-1, -2) / math.sqrt(C // HEADS)
    e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    weights = e / e.sum(dim=-1, keepdim=True)
    y = (weights @ v).permute(0, 2, 1, 3).reshape(b, nq, C)
    y = _linear(y, p, a + "project.0")
    h = _layer_norm(y, p[a + "norm_output.weight"], p[a + "norm_output.bias"])
    h = _linear(_gelu(_linear(h, p, a + "mlp.0")), p, a + "mlp.2")
    return y + h


def _plain_mlp3(p, x):
    x = torch.relu(_linear(x, p, "mlp.mlp.0"))
    x = torch.relu(_linear(x, p, "mlp.mlp.2"))
    return _linear(x, p, "mlp.mlp.4")


def _plain_matcher(p, src_desc, cand_desc, src_tokens, dst_tokens):
    src = src_desc[:, None, :]
    q_ctx = _plain_attention(p, src[..., :C], dst_tokens + p["pos_embed_T"])
    t_ctx = _plain_attention(p, cand_desc[..., :C], src_tokens + p["pos_embed_Q"])
    q = _plain_mlp3(p, torch.cat([q_ctx, src], dim=-1))
    t = _plain_mlp3(p, torch.cat([t_ctx, cand_desc], dim=-1))
    q = q / q.norm(dim=-1, keepdim=True)
    t = t / t.norm(dim=-1, keepdim=True)
    return (q * t).sum(dim=-1)


# ------------------------------------------------------------------------------------ helpers
def _sharp_model(grid_t, grid_q):
    """A freshly initialised model whose attention is far from uniform (a stricter test)."""
    model = OMaMaMatcher(grid_t, grid_q)
    with torch.no_grad():
        model.CROSS_context_attn.query.weight.mul_(3.0)
        model.CROSS_context_attn.key.weight.mul_(3.0)
        model.CROSS_context_attn.key.bias.normal_(0.0, 0.5)
        model.CROSS_context_attn.value.bias.normal_(0.0, 0.5)
        model.CROSS_context_attn.norm_input.weight.normal_(1.0, 0.2)
        model.CROSS_context_attn.norm_input.bias.normal_(0.0, 0.2)
        model.pos_embed_T.normal_(0.0, 0.5)
        model.pos_embed_Q.normal_(0.0, 0.5)
    return model


def _inputs(grid_t, grid_q, n, b=2, dtype=torch.float32):
    tt, tq = grid_t[0] * grid_t[1], grid_q[0] * grid_q[1]
    return (
        torch.randn(b, 2 * C, dtype=dtype),
        torch.randn(b, n, 2 * C, dtype=dtype),
        torch.randn(b, tq, C, dtype=dtype),
        torch.randn(b, tt, C, dtype=dtype),
    )


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


GRIDS = [((50, 50), (38, 68)), ((38, 68), (50, 50))]


# --------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("grid_t,grid_q", GRIDS)
@pytest.mark.parametrize("n", [32, 200])
def test_forward_matches_plain_transcription(grid_t, grid_q, n):
    model = _sharp_model(grid_t, grid_q)
    inputs = _inputs(grid_t, grid_q, n)
    p64 = {k: v.detach().double() for k, v in model.state_dict().items()}
    want = _plain_matcher(p64, *(x.double() for x in inputs))
    assert want.shape == (2, n)
    with torch.no_grad():
        for order in ("fast", "standard", "auto"):
            got = model(*inputs, attn_order=order)
            assert got.shape == (2, n) and got.dtype == torch.float32
            assert _rel(got.double(), want) < 1e-4, order
        model.attn_order = "fast"
        assert _rel(model(*inputs).double(), want) < 1e-4


@pytest.mark.parametrize("order", ["fast", "standard"])
def test_gradients_match_plain_transcription(order):
    grid_t, grid_q = GRIDS[0]
    model = _sharp_model(grid_t, grid_q).double()
    inputs = _inputs(grid_t, grid_q, 32, dtype=torch.float64)
    pos = torch.randint(0, 32, (2,))
    visible = torch.tensor([1.0, 1.0], dtype=torch.float64)

    p = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    sims = _plain_matcher(p, *inputs)
    per_sample = -(sims / 0.07).log_softmax(dim=1).gather(1, pos[:, None])[:, 0]
    (per_sample * visible).mean().backward()

    loss = matching_loss(model(*inputs, attn_order=order), pos, visible)
    assert loss.dtype == torch.float64
    loss.backward()
    for name, param in model.named_parameters():
        want = p[name].grad
        if name.startswith("mlp_visible."):
            assert param.grad is None and want is None  # unused by forward, like the reference
            continue
        assert param.grad is not None, name
        err = (param.grad - want).norm().item()
        # key.bias has an exactly-zero gradient (softmax is shift invariant): absolute check
        assert err <= 1e-4 * want.norm().item() + 1e-9, (name, err, want.norm().item())


def test_context_attention_orders_and_auto():
    attn = ContextAttention()
    with torch.no_grad():
        attn.key.weight.mul_(3.0)
    desc, img = torch.randn(1, 7, C), torch.randn(1, 300, C)
    p = {"CROSS_context_attn." + k: v.detach().double() for k, v in attn.state_dict().items()}
    want = _plain_attention(p, desc.double(), img.double())
    for order in ("fast", "standard", "auto"):
        assert _rel(attn(desc, img, order=order).double(), want) < 1e-4
    with pytest.raises(ValueError):
        attn(desc, img, order="sideways")
    # The cost model: one query -> fast; thousands of queries -> standard.
    assert choose_order("auto", 1, 2500, C, HEADS) == "fast"
    assert choose_order("auto", 32, 2584, C, HEADS) == "fast"
    assert choose_order("auto", 2000, 2500, C, HEADS) == "standard"
    assert choose_order("standard", 1, 2500, C, HEADS) == "standard"


def test_fp16_tokens_and_bf16_autocast():
    grid_t, grid_q = (6, 7), (5, 9)
    model = _sharp_model(grid_t, grid_q)
    src, cand, src_tok, dst_tok = _inputs(grid_t, grid_q, 5)
    src_tok, dst_tok = src_tok.half(), dst_tok.half()
    p64 = {k: v.detach().double() for k, v in model.state_dict().items()}
    want = _plain_matcher(p64, src.double(), cand.double(), src_tok.double(), dst_tok.double())
    with torch.no_grad():
        got = model(src, cand, src_tok, dst_tok)
        assert got.dtype == torch.float32 and _rel(got.double(), want) < 1e-4
        for order in ("fast", "standard"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = model(src, cand, src_tok, dst_tok, attn_order=order)
            assert (low.double() - want).abs().max().item() < 0.1, order
    if torch.cuda.is_available():
        model = model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(src.cuda(), cand.cuda(), src_tok.cuda(), dst_tok.cuda(), attn_order="fast")
        assert (low.double().cpu() - want).abs().max().item() < 0.1


def test_state_dict_keys_and_shapes():
    model = OMaMaMatcher((16, 16), (14, 25))
    state = model.state_dict()
    assert sorted(set(state) - set(OPTIONAL_KEYS)) == REFERENCE_KEYS
    assert not model.visibility.fitted and not state["visibility.fitted_flag"].any()
    assert state["pos_embed_T"].shape == (1, 256, C)
    assert state["pos_embed_Q"].shape == (1, 350, C)
    assert state["mlp.mlp.0.weight"].shape == (C, 3 * C)
    assert state["mlp_visible.0.weight"].shape == (C, 2 * C)
    assert state["mlp_visible.6.weight"].shape == (2, 128)
    assert model.grid_t == (16, 16) and model.grid_q == (14, 25)
    # trunc_normal std 0.02, truncated at +-2 (absolute), as torch's default
    assert state["pos_embed_Q"].std().item() == pytest.approx(0.02, rel=0.1)


def _plain_resize(pos, src, dst):
    grid = pos.reshape(1, src[0], src[1], C).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, -1, C)


def test_infer_grid():
    assert infer_grid(2500, (16, 16)) == (50, 50)
    assert infer_grid(2584, (14, 25)) == (38, 68)
    assert infer_grid(2584, (25, 14)) == (68, 38)
    assert infer_grid(2584, (16, 16)) == (38, 68)  # a tie goes to landscape
    assert infer_grid(2500, (38, 68)) == (50, 50)


def test_load_resizes_position_embeddings(tmp_path, caplog):
    big = OMaMaMatcher((50, 50), (38, 68))
    path = tmp_path / "Exo2Ego_weights_checkpoint.pt"
    torch.save(big.state_dict(), path)  # the released file is a plain state_dict
    small = OMaMaMatcher((16, 16), (14, 25))
    with caplog.at_level(logging.INFO, logger="omama.matcher.checkpoint"):
        load_matcher_state(small, path)
    assert "50x50" in caplog.text and "38x68" in caplog.text
    got = small.state_dict()
    ref = big.state_dict()
    assert torch.allclose(got["pos_embed_T"], _plain_resize(ref["pos_embed_T"], (50, 50), (16, 16)))
    assert torch.allclose(got["pos_embed_Q"], _plain_resize(ref["pos_embed_Q"], (38, 68), (14, 25)))
    for key in REFERENCE_KEYS:
        if not key.startswith("pos_embed"):
            assert torch.equal(got[key], ref[key]), key


def test_load_wrapped_and_round_trip(tmp_path):
    model = OMaMaMatcher((6, 6), (4, 9))
    other = OMaMaMatcher((6, 6), (4, 9))
    load_matcher_state(other, {"model": model.state_dict()})
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )

    path = tmp_path / "run" / "best.pt"
    save_matcher_state(model, path)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp file left
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert sorted(set(raw) - set(OPTIONAL_KEYS)) == REFERENCE_KEYS
    fresh = OMaMaMatcher((6, 6), (4, 9))
    load_matcher_state(fresh, str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    load_matcher_state(fresh, {"state_dict": raw})


def test_load_errors(tmp_path):
    model = OMaMaMatcher((6, 6), (4, 9))
    state = model.state_dict()

    bad = dict(state)
    bad["mlp.mlp.2.weight"] = torch.zeros(C, 700)
    path = tmp_path / "bad_shape.pt"
    torch.save(bad, path)
    with pytest.raises(OmamaError, match="mlp.mlp.2.weight") as err:
        load_matcher_state(model, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)

    missing = {k: v for k, v in state.items() if k != "CROSS_context_attn.key.bias"}
    with pytest.raises(OmamaError, match="missing keys CROSS_context_attn.key.bias"):
        load_matcher_state(model, missing)
    extra = dict(state, extra_head=torch.zeros(3))
    with pytest.raises(OmamaError, match="unexpected keys extra_head"):
        load_matcher_state(model, extra)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(OmamaError, match="garbage.pt: not a PyTorch checkpoint"):
        load_matcher_state(model, garbage)
    with pytest.raises(OmamaError, match="not found"):
        load_matcher_state(model, tmp_path / "absent.pt")


def test_load_refuses_other_direction():
    ego2exo = OMaMaMatcher((38, 68), (50, 50)).state_dict()
    exo2ego_small = OMaMaMatcher((16, 16), (14, 25))
    with pytest.raises(OmamaError, match="other direction"):
        load_matcher_state(exo2ego_small, ego2exo)
    exo2ego = OMaMaMatcher((50, 50), (38, 68)).state_dict()
    ego2exo_full = OMaMaMatcher((38, 68), (50, 50))
    with pytest.raises(OmamaError, match="other direction"):
        load_matcher_state(ego2exo_full, exo2ego)
    load_matcher_state(OMaMaMatcher((38, 68), (50, 50)), ego2exo)  # the right direction loads


def test_matching_loss_by_hand():
    sims = torch.rand(4, 9) * 2 - 1
    pos = torch.tensor([0, 8, 3, 3])
    visible = torch.tensor([1.0, 0.0, 1.0, 1.0])
    per = [F.cross_entropy(sims[i : i + 1] / 0.07, pos[i : i + 1]) * visible[i] for i in range(4)]
    want = sum(per) / 4
    assert matching_loss(sims, pos, visible).item() == pytest.approx(want.item(), rel=1e-5)
    want_t = (
        sum(F.cross_entropy(sims[i : i + 1] / 0.5, pos[i : i + 1]) * visible[i] for i in range(4))
        / 4
    )
    assert matching_loss(sims, pos, visible, temperature=0.5).item() == pytest.approx(
        want_t.item(), rel=1e-5
    )
    assert matching_loss(sims, pos, torch.zeros(4)).item() == 0.0


def test_predict_hand_cases():
    sims = torch.tensor(
        [
            [0.1, 0.9, 0.3, 0.5, 0.2, 0.7, 0.0],  # all valid
            [0.1, 0.2, 0.8, 0.95, 0.99, -0.1, -0.3],  # the two highest are padding
            [0.3, -0.2, 0.6, 0.9, 0.9, 0.9, 0.9],  # three valid candidates
        ]
    )
    valid = torch.tensor(
        [
            [True] * 7,
            [True, True, True, False, False, True, True],
            [True, True, True, False, False, False, False],
        ]
    )
    best, conf, top5 = predict(sims, valid)
    assert best.tolist() == [1, 2, 2]
    want_conf = [1 / (1 + math.exp(-v)) for v in (0.9, 0.8, 0.6)]
    assert conf.tolist() == pytest.approx(want_conf, rel=1e-6)
    assert top5[0].tolist() == [1, 5, 3, 2, 4]
    assert top5[1].tolist() == [2, 1, 0, 5, 6]
    assert top5[2].tolist() == [2] * 5  # fewer than 5 valid: the best, repeated

    best, conf, top5 = predict(sims[:, :3])  # no mask, N < 5
    assert best.tolist() == [1, 2, 2]
    assert top5.tolist() == [[1] * 5, [2] * 5, [2] * 5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_and_bf16_autocast():
    grid_t, grid_q = GRIDS[0]
    model = _sharp_model(grid_t, grid_q)
    inputs = _inputs(grid_t, grid_q, 32)
    p64 = {k: v.detach().double() for k, v in model.state_dict().items()}
    want = _plain_matcher(p64, *(x.double() for x in inputs))
    model = model.cuda()
    cuda_inputs = [x.cuda() for x in inputs]
    pos = torch.randint(0, 32, (2,), device="cuda")
    visible = torch.ones(2, device="cuda")
    grads = {}
    for order in ("fast", "standard"):
        model.zero_grad(set_to_none=True)
        sims = model(*cuda_inputs, attn_order=order)
        assert _rel(sims.double().cpu(), want) < 1e-4, order
        matching_loss(sims, pos, visible).backward()
        grads[order] = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(*cuda_inputs[:2], cuda_inputs[2].half(), cuda_inputs[3].half(), order)
            loss = matching_loss(low, pos, visible)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert (low.double().cpu() - want).abs().max().item() < 0.1, order
        loss.backward()
    for name, g in grads["standard"].items():
        if name != "CROSS_context_attn.key.bias":
            assert _rel(grads["fast"][name], g) < 1e-3, name
