"""The precompute stage end to end, checked against plain recomputations from the raw files."""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
import torch
from conftest import precompute_config
from oracles import loop_descriptors
from pycocotools import mask as mask_utils
from scipy.spatial import Delaunay

from omama.cache.reader import Cache
from omama.errors import OmamaError
from omama.precompute.backbone import load_backbone, patch_tokens, save_random_init
from omama.precompute.run import run_precompute
from omama.synth import SynthConfig, generate


def plain_image(root, take, cam, frame):
    """docs/reference.md, Preprocessing, by hand: BGR->RGB, portrait stretched to landscape,
    sides floored to x14."""
    img = cv2.imread(str(root / "processed" / take / cam / f"{int(frame)}.jpg"))[..., ::-1]
    h, w = img.shape[:2]
    if h > w:
        img = cv2.resize(img, (h, w), interpolation=cv2.INTER_NEAREST)
        h, w = w, h
    return cv2.resize(img, (w // 14 * 14, h // 14 * 14), interpolation=cv2.INTER_NEAREST)


def record(cache, path):
    """Every dataset of one record (`img/KEY` or `cand/DIRECTION/KEY`), read straight from its
    shard with plain h5py."""
    kind, rest = path.split("/", 1)
    if kind == "img":
        shard = cache.manifest.images[rest]
    else:
        direction, key = rest.split("/", 1)
        shard = cache.manifest.candidates[direction][key]
    with h5py.File(cache.path / "shards" / shard, "r") as f:
        return {name: ds[()] for name, ds in f[path].items()}


def plain_box_iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


def test_every_pair_image_is_cached_once(cache_dir):
    cache = Cache(cache_dir)
    for split in ("train", "val", "test"):
        for s in cache.samples("exo2ego", split):
            assert s.src in cache.manifest.images and s.dst in cache.manifest.images
            assert s.dst in cache.manifest.candidates["exo2ego"]
    assert len(set(cache.manifest.images)) == len(cache.manifest.images)


def test_tokens_equal_a_direct_backbone_forward(cache_dir, synth_root, weights):
    cache = Cache(cache_dir)
    model = load_backbone(weights)
    for key in sorted(cache.manifest.images)[:2]:
        take, cam, frame = key.split("/")
        img = plain_image(synth_root, take, cam, frame)
        want = patch_tokens(model, torch.from_numpy(np.ascontiguousarray(img))[None])[0]
        got = torch.from_numpy(cache.tokens(key)).float()
        torch.testing.assert_close(got, want.half().float(), atol=2e-3, rtol=2e-3)
        np.testing.assert_array_equal(record(cache, f"img/{key}")["image"], img)


def test_candidate_records_equal_plain_recomputation(cache_dir, synth_root):
    cache = Cache(cache_dir)
    key = sorted(cache.manifest.candidates["exo2ego"])[0]
    take, cam, frame = key.split("/")
    folder = synth_root / "Masks_TRAIN_EXO2EGO" / take / cam
    if not folder.exists():
        folder = next(synth_root.glob(f"Masks_*_EXO2EGO/{take}/{cam}"))
    masks = np.load(folder / f"{frame}_masks.npz")["arr_0"]
    boxes = np.load(folder / f"{frame}_boxes.npy").astype(np.float32)
    g = record(cache, f"cand/exo2ego/{key}")
    grid = cache.grid(key)
    tokens = torch.from_numpy(cache.tokens(key)).float()
    dense = torch.nn.functional.interpolate(
        tokens.T.reshape(1, 768, *grid),
        size=(grid[0] * 14 // 4, grid[1] * 14 // 4),
        mode="bilinear",
        align_corners=False,
    )[0]
    want = loop_descriptors(dense, torch.from_numpy(masks), torch.from_numpy(boxes))
    torch.testing.assert_close(torch.from_numpy(g["desc"]), want, atol=1e-5, rtol=1e-5)
    # order-2 Delaunay adjacency of the mask centroids, straight from scipy
    cents = np.array([np.argwhere(m).mean(0) for m in masks])
    tri = Delaunay(cents)
    a = np.zeros((len(masks), len(masks)), int)
    for simplex in tri.simplices:
        for i in simplex:
            for j in simplex:
                if i != j:
                    a[i, j] = 1
    np.testing.assert_array_equal(g["adj"].astype(bool), (a + a @ a) > 0)
    for i in (0, len(masks) - 1):
        rle = json.loads(g["rle"][i])
        np.testing.assert_array_equal(
            mask_utils.decode({**rle, "counts": rle["counts"].encode()}), masks[i]
        )
    # anchors: the candidate of highest box IoU with each object's tight box
    ann = json.loads((synth_root / "processed" / take / "annotation.json").read_text())
    img = record(cache, f"img/{key}")
    names = [n.decode() if isinstance(n, bytes) else n for n in img["obj_names"]]
    for k, obj in enumerate(names):
        r = ann["masks"][obj][cam][frame]
        gt = mask_utils.decode({**r, "counts": r["counts"].encode()})
        gt = cv2.resize(gt, masks.shape[1:][::-1], interpolation=cv2.INTER_NEAREST)
        ys, xs = np.nonzero(gt)
        if len(ys) == 0:
            assert g["anchor"][k] == -1
            continue
        box = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        ious = [plain_box_iou(b, box) for b in boxes]
        assert g["anchor"][k] == int(np.argmax(ious))
        np.testing.assert_allclose(img["obj_box"][k], box)


def test_rerun_computes_nothing(cache_dir, synth_root, weights):
    report = run_precompute(precompute_config(synth_root, cache_dir, weights, split="test"))
    assert report.images_computed == 0 and report.candidate_sets_computed == 0


def test_other_direction_reuses_images(cache_dir, synth_root, weights, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    before = Cache(cache)
    tokens = {k: before.tokens(k) for k in before.manifest.images}
    before.close()
    report = run_precompute(
        precompute_config(synth_root, cache, weights, split="test", direction="ego2exo")
    )
    assert report.candidate_sets_computed > 0
    after = Cache(cache)
    assert after.samples("ego2exo", "test")
    for k, t in tokens.items():
        np.testing.assert_array_equal(after.tokens(k), t)


def test_cache_built_with_other_weights_is_refused(cache_dir, synth_root, tmp_path):
    other = save_random_init(tmp_path / "other.pth", seed=1)
    with pytest.raises(OmamaError, match="weights_sha256"):
        run_precompute(precompute_config(synth_root, cache_dir, other, split="val"))


def test_reference_pair_file_names_run_end_to_end(weights, tmp_path, caplog):
    """A root with only O-MaMa's own pair-file names (a 20 % train file, a 10 % val file)
    precomputes and trains with no --pairs flag, on exactly the pairs of those files."""
    from omama.cli.train import main as train_main

    root = tmp_path / "data"
    generate(
        SynthConfig(seed=0, small=True, takes=3, frames=2, objects=3, pair_names="reference"), root
    )
    assert not (root / "dataset_jsons" / "train_exoego_pairs.json").exists()
    cache = tmp_path / "cache"
    with caplog.at_level("INFO"):
        for split, name in (
            ("train", "train_exoego_20percent_pairs.json"),
            ("val", "custom_val_exoego_pairs_10.json"),
        ):
            run_precompute(precompute_config(root, cache, weights, split=split))
            assert f"{name}: pairs from the reference's file" in caplog.text
            pairs = {tuple(p) for p in json.loads((root / "dataset_jsons" / name).read_text())}
            assert len(Cache(cache).samples("exo2ego", split)) == len(pairs)
    argv = ["--cache", str(cache), "--out", str(tmp_path / "run"), "--epochs", "1"]
    argv += ["--batch-size", "2", "--n-masks", "4", "--workers", "0", "--device", "cpu"]
    assert train_main(argv) == 0
    assert (tmp_path / "run" / "best.pt").is_file()
