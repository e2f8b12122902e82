"""--backbone: every table entry's Meta and timm formats, ViT-S end to end, and the one-line
refusals of a cache or a checkpoint of another backbone.

ViT-L and ViT-g (300M and 1.1B parameters) are not materialised: their key maps are checked
on the ``meta`` device (shapes only, no memory). ViT-S (DINOv2 and DINOv3) runs for real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
import torch
from test_backbone import plain_forward
from test_bad_input import expect_exit2

from omama.backbones import BACKBONE_TABLE, BACKBONES, DEFAULT_BACKBONE, backbone_info
from omama.cache.reader import Cache
from omama.cache.verify import verify_cache
from omama.cli import eval as eval_cli
from omama.cli import precompute as precompute_cli
from omama.cli import train as train_cli
from omama.dataset.images import crop_size
from omama.errors import OmamaError
from omama.matcher.checkpoint import BACKBONE_KEY, save_matcher_state
from omama.matcher.model import OMaMaMatcher
from omama.precompute import backbone as bb
from omama.precompute.options import cache_settings

VITS2 = BACKBONE_TABLE["dinov2_vits14_reg4"]
VITS3 = BACKBONE_TABLE["dinov3_vits16"]


# ------------------------------------------------------------------ the table and key maps


def test_installed_timm_has_every_backbone():
    missing = [b.arch for b in BACKBONE_TABLE.values() if not bb.available(b)]
    assert missing == []


def test_default_is_the_reference_backbone_and_its_settings_are_unchanged():
    assert DEFAULT_BACKBONE.arch == "vit_base_patch14_reg4_dinov2"
    assert (DEFAULT_BACKBONE.width, DEFAULT_BACKBONE.desc_dim, DEFAULT_BACKBONE.patch) == (
        768,
        1536,
        14,
    )
    # the literal settings of caches built before --backbone existed
    assert cache_settings("abc") == {
        "backbone": "vit_base_patch14_reg4_dinov2",
        "weights_sha256": "abc",
        "patch": 14,
        "portrait_policy": "stretch-to-landscape",
        "features": "float16",
        "descriptor": "mask-mean+context100-mean@1/4",
        "adjacency_order": 2,
    }
    assert backbone_info("vit_small_patch14_reg4_dinov2") is VITS2
    with pytest.raises(OmamaError, match="unknown backbone 'vit_h'"):
        backbone_info("vit_h")


def _meta_layout(spec):
    """Meta-format keys and shapes of `spec` from the model on the meta device (no memory)."""
    model = bb._create_model(spec, device="meta")
    return model, bb.to_meta_format(model.state_dict(), spec, bb.Fill(None, "meta"))


@pytest.mark.parametrize("name", BACKBONES)
def test_meta_key_map_round_trips_on_the_meta_device(name):
    spec = BACKBONE_TABLE[name]
    model, meta_sd = _meta_layout(spec)
    w = spec.width
    assert meta_sd["cls_token"].shape == (1, 1, w)
    assert meta_sd["mask_token"].shape == (1, w)
    assert meta_sd["patch_embed.proj.weight"].shape == (w, 3, spec.patch, spec.patch)
    last = f"blocks.{spec.depth - 1}."
    assert f"blocks.{spec.depth}.norm1.weight" not in meta_sd
    assert meta_sd[last + "ls2.gamma"].shape == (w,)
    if spec.family == "dinov2":  # Meta's DINOv2 names
        assert meta_sd["register_tokens"].shape == (1, 4, w)
        assert meta_sd["pos_embed"].shape == (1, 1 + 37 * 37, w)
        mlp = ("mlp.w12.weight", "mlp.w3.weight") if spec.swiglu else ("mlp.fc1.weight",)
        assert all(last + k in meta_sd for k in mlp)
        assert (last + "mlp.fc1.weight" in meta_sd) != spec.swiglu
    else:  # Meta's DINOv3 names: storage tokens, one masked qkv bias, RoPE periods
        assert meta_sd["storage_tokens"].shape == (1, 4, w)
        assert "pos_embed" not in meta_sd
        assert meta_sd[last + "attn.qkv.bias"].shape == (3 * w,)
        assert meta_sd[last + "attn.qkv.bias_mask"].shape == (3 * w,)
        assert meta_sd["rope_embed.periods"].shape == (16,)
    converted, is_meta = bb.convert_state_dict(Path("x.pth"), meta_sd, spec)
    assert is_meta
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == want
    # timm's own names are recognised as the timm format
    again, is_meta = bb.convert_state_dict(Path("x.pth"), model.state_dict(), spec)
    assert not is_meta and set(again) == set(want)


@pytest.mark.parametrize("name", ["dinov2_vitl14_reg4", "dinov3_vitb16"])
def test_a_file_of_another_backbone_names_the_one_it_looks_like(name, tmp_path):
    spec = BACKBONE_TABLE[name]
    _, meta_sd = _meta_layout(spec)
    with pytest.raises(OmamaError) as excinfo:
        bb.convert_state_dict(tmp_path / "w.pth", meta_sd, DEFAULT_BACKBONE)
    msg = str(excinfo.value)
    assert "\n" not in msg and str(tmp_path / "w.pth") in msg
    assert f"pass --backbone {name}" in msg, msg


# ------------------------------------------------------------------ ViT-S for real


@pytest.fixture(scope="module", params=["dinov2_vits14_reg4", "dinov3_vits16"])
def small_files(request, tmp_path_factory):
    spec = BACKBONE_TABLE[request.param]
    d = tmp_path_factory.mktemp(spec.name)
    meta = bb.save_random_init(d / "meta.pth", 5, spec, "meta")
    timm_file = bb.save_random_init(d / "timm.pth", 5, spec, "timm")
    return spec, meta, timm_file


def test_small_backbone_meta_and_timm_files_are_one_network(small_files):
    spec, meta, timm_file = small_files
    a = bb.load_backbone(meta, backbone=spec)
    b = bb.load_backbone(timm_file, backbone=spec)
    p = spec.patch
    images = torch.randint(0, 256, (2, 3 * p, 4 * p, 3), dtype=torch.uint8)
    got = bb.patch_tokens(a, images)
    assert got.shape == (2, 12, spec.width)
    torch.testing.assert_close(got, bb.patch_tokens(b, images), atol=0, rtol=0)
    if spec.family == "dinov2":  # the independent oracle
        sd = torch.load(meta, map_location="cpu", weights_only=True)
        torch.testing.assert_close(got, plain_forward(sd, images), atol=1e-4, rtol=1e-4)
    else:  # the loaded q/v biases are Meta's qkv bias without its masked k third
        sd = torch.load(meta, map_location="cpu", weights_only=True)
        qkv_bias = sd["blocks.3.attn.qkv.bias"]
        state = a.state_dict()
        assert torch.equal(state["blocks.3.attn.q_bias"], qkv_bias[: spec.width])
        assert torch.equal(state["blocks.3.attn.v_bias"], qkv_bias[2 * spec.width :])
        assert torch.equal(state["blocks.3.gamma_1"], sd["blocks.3.ls1.gamma"])
    with pytest.raises(ValueError, match=f"multiple of {p}"):
        bb.patch_tokens(a, torch.zeros(1, p + 2, p, 3, dtype=torch.uint8))


def test_random_init_files_are_deterministic(small_files, tmp_path):
    spec, meta, timm_file = small_files
    again = bb.save_random_init(tmp_path / "again.pth", 5, spec, "timm")
    assert again.read_bytes() == timm_file.read_bytes()


def test_dinov3_timm_file_without_qkv_bias_loads_with_zero_biases(tmp_path):
    sd = torch.load(bb.save_random_init(tmp_path / "t.pth", 1, VITS3, "timm"), weights_only=True)
    no_bias = {k: v for k, v in sd.items() if not k.endswith(("q_bias", "v_bias"))}
    path = tmp_path / "no_bias.pth"
    torch.save(no_bias, path)
    state = bb.load_backbone(path, backbone=VITS3).state_dict()
    assert not state["blocks.0.attn.q_bias"].any() and not state["blocks.11.attn.v_bias"].any()
    assert torch.equal(state["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])


# ------------------------------------------------------------------ end to end with ViT-S


def _precompute(root: Path, cache: Path, split: str, *extra: str) -> list[str]:
    return [
        *("--root", root, "--cache", cache, "--split", split, "--device", "cpu"),
        *("--workers", "0", "--batch-size", "4", *extra),
    ]


@pytest.fixture(scope="module")
def small_cache(synth_root, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("small") / "cache"
    for split in ("train", "val", "test"):
        argv = _precompute(synth_root, cache, split, "--random-init", "--backbone", VITS2.name)
        assert precompute_cli.main([str(a) for a in argv]) == 0
    return cache


@pytest.fixture(scope="module")
def small_run(small_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small_run") / "run"
    argv = ["--cache", small_cache, "--out", out, "--epochs", "1", "--batch-size", "8"]
    argv += ["--n-masks", "8", "--workers", "0", "--device", "cpu"]
    assert train_cli.main([str(a) for a in argv]) == 0
    return out


def test_vits_cache_records_its_backbone_and_widths(small_cache):
    manifest = json.loads((small_cache / "manifest.json").read_text())
    assert manifest["settings"]["backbone"] == VITS2.arch
    assert (small_cache / f"backbone-random-init-{VITS2.name}-seed0.pth").is_file()
    assert verify_cache(small_cache).problems == []
    cache = Cache(small_cache)
    try:
        assert cache.manifest.backbone is VITS2
        sample = cache.samples("exo2ego", "train")[0]
        tokens = cache.tokens(cache.image(sample.src))
        assert tokens.shape[1] == 384
        shard = next(iter(cache.manifest.shards))
    finally:
        cache.close()
    with h5py.File(small_cache / "shards" / shard, "r") as f:
        key = next(iter(f["img"]))
        take = f["img"][key]
        cam = next(iter(take))
        rec = take[cam][next(iter(take[cam]))]
        assert rec["obj_desc"].shape[1] == 768 and rec["tokens"].shape[1] == 384


def test_vits_trains_and_evaluates_end_to_end(small_cache, small_run, tmp_path, capsys):
    state = torch.load(small_run / "best.pt", map_location="cpu", weights_only=True)
    assert state.pop(BACKBONE_KEY) == VITS2.arch  # our checkpoint records the backbone
    assert state["mlp.mlp.0.weight"].shape == (384, 3 * 384)
    assert state["pos_embed_T"].shape[-1] == 384
    pred = tmp_path / "pred.json"
    argv = ["--cache", small_cache, "--split", "test", "--checkpoint", small_run / "best.pt"]
    argv += ["--out", pred, "--workers", "0", "--device", "cpu"]
    assert eval_cli.main([str(a) for a in argv]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n"] > 0 and 0.0 <= metrics["iou"] <= 1.0
    assert json.loads(pred.read_text())["exo-ego"]["results"]


def test_default_checkpoint_has_no_backbone_record(tmp_path):
    path = tmp_path / "b.pt"
    save_matcher_state(OMaMaMatcher((4, 4), (3, 5)), path)
    assert BACKBONE_KEY not in torch.load(path, weights_only=True)


# ------------------------------------------------------------------ refusals, one line each


def test_cache_of_another_backbone_is_refused(cache_dir, synth_root, tmp_path, capsys):
    cache = Path(shutil.copytree(cache_dir, tmp_path / "cache"))  # a ViT-B cache
    argv = _precompute(synth_root, cache, "train", "--random-init", "--backbone", VITS2.name)
    why = f"cache was built with backbone='{DEFAULT_BACKBONE.arch}', this run asks '{VITS2.arch}'"
    expect_exit2(
        capsys, precompute_cli.main, argv, "omama-precompute", cache / "manifest.json", why
    )


def test_weights_of_another_backbone_are_refused(small_files, synth_root, tmp_path, capsys):
    spec, meta, _ = small_files
    argv = _precompute(synth_root, tmp_path / "cache", "train", "--weights", meta)
    why = f"the file looks like {spec.title}: pass --backbone {spec.name}"
    expect_exit2(capsys, precompute_cli.main, argv, "omama-precompute", meta, why)


def test_checkpoint_of_another_backbone_is_refused(
    cache_dir, small_cache, small_run, tmp_path, capsys
):
    # a ViT-S checkpoint on the ViT-B cache
    ckpt = small_run / "best.pt"
    argv = ["--cache", cache_dir, "--split", "test", "--checkpoint", ckpt]
    argv += ["--out", tmp_path / "pred.json", "--workers", "0", "--device", "cpu"]
    why = "checkpoint records dinov2_vits14_reg4 (384-d tokens), but the cache was built with "
    expect_exit2(capsys, eval_cli.main, argv, "omama-eval", ckpt, why + "dinov2_vitb14_reg4")
    assert not (tmp_path / "pred.json").exists()
    # a default checkpoint (as the released O-MaMa one: no record) on the ViT-S cache
    cache = Cache(small_cache)
    grids = cache.role_grids(cache.samples("exo2ego", "test"))
    cache.close()
    released = tmp_path / "omama_released_like.pt"
    save_matcher_state(OMaMaMatcher(*grids), released)
    why = "checkpoint records no backbone, so it is for dinov2_vitb14_reg4 (768-d tokens)"
    argv = ["--cache", small_cache, "--out", tmp_path / "run", "--init", released]
    argv += ["--device", "cpu", "--workers", "0"]
    expect_exit2(capsys, train_cli.main, argv, "omama-train", released, why)
    assert not (tmp_path / "run").exists()


def test_unknown_recorded_backbone_is_one_line(small_run, tmp_path):
    state = torch.load(small_run / "best.pt", map_location="cpu", weights_only=True)
    state[BACKBONE_KEY] = "vit_huge_patch14_clip"
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    model = OMaMaMatcher((4, 4), (3, 5), VITS2)
    from omama.matcher.checkpoint import load_matcher_state

    with pytest.raises(OmamaError) as excinfo:
        load_matcher_state(model, path)
    msg = str(excinfo.value)
    assert str(path) in msg and "vit_huge_patch14_clip" in msg and "\n" not in msg


def test_dinov3_cache_crops_to_its_patch_and_dry_run_follows(synth_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = _precompute(synth_root, cache, "val", "--random-init", "--backbone", VITS3.name)
    assert precompute_cli.main([str(a) for a in argv]) == 0
    capsys.readouterr()
    assert verify_cache(cache).problems == []
    reader = Cache(cache)
    try:
        assert reader.manifest.settings["patch"] == 16
        assert reader.manifest.settings["backbone"] == VITS3.arch
        for key in sorted(reader.manifest.images):
            rec = reader.image(key)
            h, w = crop_size(*reader.attr(rec, "orig_hw"), 16)
            assert reader.attr(rec, "grid") == (h // 16, w // 16)
            assert reader.pixels(key).shape == (h, w, 3)
            assert reader.tokens(rec).shape == ((h // 16) * (w // 16), 384)
    finally:
        reader.close()
    # the dry run sizes the same backbone's records: within 5 % of the shards written
    dry = _precompute(synth_root, tmp_path / "none", "val", "--dry-run", "--backbone", VITS3.name)
    assert precompute_cli.main([str(a) for a in dry]) == 0
    text = capsys.readouterr().out
    assert f"backbone {VITS3.name}" in text.splitlines()[0]
    total = int(text.split("total")[1].split("(")[1].split(" bytes")[0])
    actual = sum(p.stat().st_size for p in (cache / "shards").glob("*.h5"))
    assert abs(total - actual) / actual < 0.05
