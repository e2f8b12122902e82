"""Backbone: Meta/timm weight files, error messages, and patch_tokens vs a plain forward."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

from omama.errors import OmamaError
from omama.precompute.backbone import (
    load_backbone,
    patch_tokens,
    save_random_init,
    weights_fingerprint,
)

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def meta_file(tmp_path_factory):
    return save_random_init(tmp_path_factory.mktemp("weights") / "meta.pth", seed=7)


@pytest.fixture(scope="module")
def meta_sd(meta_file):
    return torch.load(meta_file, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model(meta_file):
    return load_backbone(meta_file)


def plain_forward(sd: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """DINOv2 ViT/14 reg4 written out from Meta's tensors (no timm): the test oracle. Width and
    depth are read from the tensors (ViT-S 384 x 12, ViT-B 768 x 12), 64 channels per head."""
    c = sd["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    heads = c // 64
    x = images.permute(0, 3, 1, 2).float() / 255.0
    x = (x - MEAN) / STD
    b, _, h, w = x.shape
    gh, gw = h // 14, w // 14
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    t = t.flatten(2).transpose(1, 2)  # [B, gh*gw, C], row-major
    pos = sd["pos_embed"]
    side = int(round((pos.shape[1] - 1) ** 0.5))
    grid = pos[:, 1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", antialias=True, align_corners=False)
    t = t + grid.permute(0, 2, 3, 1).reshape(1, gh * gw, c)
    cls = (sd["cls_token"] + pos[:, :1]).expand(b, -1, -1)
    x = torch.cat([cls, sd["register_tokens"].expand(b, -1, -1), t], dim=1)
    n = x.shape[1]
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, heads, 64).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) / 8.0).softmax(dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, n, c)
        o = F.linear(o, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        x = x + sd[p + "ls1.gamma"] * o
        y = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
        y = F.linear(F.gelu(y), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        x = x + sd[p + "ls2.gamma"] * y
    x = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return x[:, 5:]


def test_meta_file_has_released_layout(meta_sd):
    assert meta_sd["pos_embed"].shape == (1, 1 + 37 * 37, 768)
    assert meta_sd["register_tokens"].shape == (1, 4, 768)
    assert meta_sd["mask_token"].shape == (1, 768)
    assert meta_sd["cls_token"].shape == (1, 1, 768)
    assert meta_sd["patch_embed.proj.weight"].shape == (768, 3, 14, 14)
    assert meta_sd["blocks.11.mlp.fc1.weight"].shape == (3072, 768)
    assert meta_sd["blocks.0.ls2.gamma"].shape == (768,)
    assert "blocks.12.norm1.weight" not in meta_sd
    assert not any(k.startswith("reg_token") for k in meta_sd)


def test_round_trip_meta(model, meta_sd):
    sd = model.state_dict()
    assert torch.equal(sd["reg_token"], meta_sd["register_tokens"])
    assert torch.equal(sd["pos_embed"], meta_sd["pos_embed"][:, 1:])
    assert torch.equal(sd["cls_token"], meta_sd["cls_token"] + meta_sd["pos_embed"][:, :1])
    for key in ("blocks.3.attn.qkv.weight", "blocks.5.ls1.gamma", "blocks.11.norm2.bias"):
        assert torch.equal(sd[key], meta_sd[key])
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_save_is_deterministic(meta_file, tmp_path):
    again = save_random_init(tmp_path / "again.pth", seed=7)
    assert weights_fingerprint(again) == weights_fingerprint(meta_file)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temp file


def test_fingerprint_is_sha256(meta_file):
    assert weights_fingerprint(meta_file) == hashlib.sha256(meta_file.read_bytes()).hexdigest()


@pytest.mark.parametrize("size", [(56, 56), (42, 70), (70, 28)])
def test_patch_tokens_vs_plain_forward(model, meta_sd, size):
    h, w = size
    images = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8)
    got = patch_tokens(model, images)
    want = plain_forward(meta_sd, images)
    assert got.dtype == torch.float32
    assert got.shape == (2, (h // 14) * (w // 14), 768)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    got[0, 0, 0] = 0.0  # a plain tensor: callers may write into it


def test_patch_tokens_fp16_close(model):
    images = torch.randint(0, 256, (1, 42, 42, 3), dtype=torch.uint8)
    a = patch_tokens(model, images, fp16=False)
    b = patch_tokens(model, images, fp16=True)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_patch_tokens_cuda_matches_cpu(meta_file, model):
    gpu = load_backbone(meta_file, device="cuda")
    images = torch.randint(0, 256, (2, 56, 84, 3), dtype=torch.uint8)
    cpu = patch_tokens(model, images)
    fp32 = patch_tokens(gpu, images, fp16=False).cpu()
    fp16 = patch_tokens(gpu, images).cpu()  # default: autocast fp16 on CUDA
    torch.testing.assert_close(fp32, cpu, atol=2e-3, rtol=1e-3)
    assert (fp16 - cpu).abs().max() < 0.05


def test_patch_tokens_rejects_bad_input(model):
    with pytest.raises(ValueError):
        patch_tokens(model, torch.zeros(1, 50, 56, 3, dtype=torch.uint8))
    with pytest.raises(ValueError):
        patch_tokens(model, torch.zeros(1, 56, 56, 3))
    with pytest.raises(ValueError):
        patch_tokens(model, torch.zeros(1, 3, 56, 56, dtype=torch.uint8))


def test_timm_format_loads(model, tmp_path):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "timm.pth"
    torch.save(sd, path)
    other = load_backbone(path)
    for key, value in other.state_dict().items():
        assert torch.equal(value, sd[key]), key
    images = torch.randint(0, 256, (1, 28, 42, 3), dtype=torch.uint8)
    torch.testing.assert_close(patch_tokens(other, images), patch_tokens(model, images))


def test_timm_safetensors_loads(model, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "timm.safetensors"
    st.save_file(sd, str(path))
    other = load_backbone(path)
    assert torch.equal(other.state_dict()["blocks.7.mlp.fc2.weight"], sd["blocks.7.mlp.fc2.weight"])


def _one_line_error(path, match: str, excinfo) -> None:
    msg = str(excinfo.value)
    assert str(path) in msg
    assert "\n" not in msg
    assert match in msg


def _small_meta_dict(dim: int) -> dict[str, torch.Tensor]:
    """A ViT-S-like (dim 384) or ViT-B-like Meta dict holding only the first block."""
    sd = {
        "cls_token": torch.zeros(1, 1, dim),
        "register_tokens": torch.zeros(1, 4, dim),
        "mask_token": torch.zeros(1, dim),
        "pos_embed": torch.zeros(1, 1 + 37 * 37, dim),
        "patch_embed.proj.weight": torch.zeros(dim, 3, 14, 14),
        "patch_embed.proj.bias": torch.zeros(dim),
        "blocks.0.attn.qkv.weight": torch.zeros(3 * dim, dim),
    }
    return sd


def test_wrong_architecture_is_reported(tmp_path):
    path = tmp_path / "vits.pth"
    torch.save(_small_meta_dict(384), path)
    with pytest.raises(OmamaError) as excinfo:
        load_backbone(path)
    _one_line_error(path, "expected 768-d", excinfo)
    assert "384" in str(excinfo.value)


def test_missing_keys_are_reported(tmp_path):
    path = tmp_path / "partial.pth"
    torch.save(_small_meta_dict(768), path)
    with pytest.raises(OmamaError) as excinfo:
        load_backbone(path)
    _one_line_error(path, "missing keys", excinfo)


def test_unexpected_keys_are_reported(meta_sd, tmp_path):
    sd = dict(meta_sd)
    sd["blocks.12.norm1.weight"] = torch.zeros(768)
    path = tmp_path / "thirteen.pth"
    torch.save(sd, path)
    with pytest.raises(OmamaError) as excinfo:
        load_backbone(path)
    _one_line_error(path, "unexpected keys", excinfo)


def test_wrong_pos_embed_is_reported(meta_sd, tmp_path):
    sd = dict(meta_sd)
    sd["pos_embed"] = torch.zeros(1, 1 + 37 * 36, 768)
    path = tmp_path / "pos.pth"
    torch.save(sd, path)
    with pytest.raises(OmamaError) as excinfo:
        load_backbone(path)
    _one_line_error(path, "pos_embed", excinfo)


def test_other_square_pos_grid_is_resampled(meta_sd, tmp_path):
    sd = dict(meta_sd)
    sd["pos_embed"] = torch.randn(1, 1 + 16 * 16, 768)
    path = tmp_path / "pos16.pth"
    torch.save(sd, path)
    model = load_backbone(path)
    assert model.state_dict()["pos_embed"].shape == (1, 37 * 37, 768)


def test_missing_unreadable_and_foreign_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(OmamaError) as excinfo:
        load_backbone(missing)
    _one_line_error(missing, "not found", excinfo)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(OmamaError) as excinfo:
        load_backbone(garbage)
    _one_line_error(garbage, "cannot read", excinfo)

    foreign = tmp_path / "foreign.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, foreign)
    with pytest.raises(OmamaError) as excinfo:
        load_backbone(foreign)
    _one_line_error(foreign, "DINOv2", excinfo)

    with pytest.raises(OmamaError) as excinfo:
        weights_fingerprint(missing)
    _one_line_error(missing, "cannot read", excinfo)
