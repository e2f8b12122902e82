"""Every bad input through the real command lines: exit code 2 and one line naming the file.

Each case breaks one thing in a fresh copy of the small synthetic dataset (or passes one bad
file or option) and runs `main(argv)` of omama/cli/*.py. Precompute cases whose problem sits
in an image's files swap the ViT-B for a stub that fails if it is ever run: the bad item is
met while the images are read, before any backbone batch, and the stub saves seconds per case.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_lines import one_error_line

from omama import rle
from omama.cache.reader import Cache
from omama.cli import eval as eval_cli
from omama.cli import precompute as precompute_cli
from omama.cli import train as train_cli
from omama.matcher.checkpoint import save_matcher_state
from omama.matcher.model import OMaMaMatcher
from omama.precompute import backbone

SPLIT = "val"


def expect_exit2(capsys, main, argv: list[str], prog: str, file: Path | str, why: str) -> str:
    assert main([str(a) for a in argv]) == 2
    line = one_error_line(capsys, prog)
    assert str(file) in line and why in line, line
    return line


# ------------------------------------------------------------------ dataset layout helpers


@pytest.fixture
def root(synth_root, tmp_path) -> Path:
    """A private copy of the synthetic dataset, free to break."""
    return Path(shutil.copytree(synth_root, tmp_path / "data"))


def val_take(root: Path) -> str:
    return json.loads((root / "processed" / "split.json").read_text())[SPLIT][0]


def pairs_path(root: Path) -> Path:
    return root / "dataset_jsons" / f"{SPLIT}_exoego_pairs.json"


def first_destination(root: Path) -> tuple[str, str, str]:
    """(take, ego camera, frame) of the first pair: an image with candidates in exo2ego."""
    parts = json.loads(pairs_path(root).read_text())[0][0].rsplit("//", 5)
    return parts[1], parts[2], parts[5]


def frame_path(root: Path) -> Path:
    take, cam, frame = first_destination(root)
    return root / "processed" / take / cam / f"{frame}.jpg"


def masks_paths(root: Path) -> tuple[Path, Path]:
    take, cam, frame = first_destination(root)
    base = root / f"Masks_{SPLIT.upper()}_EXO2EGO" / take / cam
    return base / f"{frame}_masks.npz", base / f"{frame}_boxes.npy"


def precompute_argv(root: Path, cache: Path, weights: Path, *extra: str) -> list:
    return [
        "--root",
        root,
        "--cache",
        cache,
        "--weights",
        weights,
        "--split",
        SPLIT,
        "--device",
        "cpu",
        "--workers",
        "0",
        *extra,
    ]


class _NoBackbone(torch.nn.Module):
    """Stands in for ViT-B where the bad input must stop the run before any forward pass."""

    def forward_features(self, x):
        raise AssertionError("the bad input was not caught before the backbone ran")


@pytest.fixture
def no_backbone(monkeypatch):
    monkeypatch.setattr(backbone, "load_backbone", lambda *a, **k: _NoBackbone())


# ------------------------------------------------------------------ broken dataset files


def _truncate_jpeg(root: Path) -> tuple[Path, str]:
    path = frame_path(root)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated JPEG"


def _corrupt_jpeg(root: Path) -> tuple[Path, str]:
    path = frame_path(root)
    data = path.read_bytes()
    path.write_bytes(data[:2] + b"\x00" * 64 + data[66:])
    return path, "corrupt JPEG"


def _missing_frame(root: Path) -> tuple[Path, str]:
    path = frame_path(root)
    path.unlink()
    return path, "image file missing"


def _missing_masks(root: Path) -> tuple[Path, str]:
    path = masks_paths(root)[0]
    path.unlink()
    return path, "candidate masks file missing"


def _unreadable_masks(root: Path) -> tuple[Path, str]:
    path = masks_paths(root)[0]
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    return path, "unreadable npz"


def _boxes_count_differs(root: Path) -> tuple[Path, str]:
    masks, boxes = masks_paths(root)
    n = len(np.load(masks)["arr_0"])
    np.save(boxes, np.load(boxes)[:-1])
    return boxes, f"{n - 1} boxes for {n} masks"


def _masks_wrong_size(root: Path) -> tuple[Path, str]:
    masks, boxes = masks_paths(root)
    n = len(np.load(boxes))
    np.savez_compressed(masks, np.zeros((n, 50, 200), np.uint8))
    return masks, "masks of an unexpected size 50x200"


def _rle_does_not_decode(root: Path) -> tuple[Path, str]:
    # the first pair's source mask (exo camera): every pair has one
    _, take, cam, obj, _, frame = json.loads(pairs_path(root).read_text())[0][2].rsplit("//", 5)
    path = root / "processed" / take / "annotation.json"
    ann = json.loads(path.read_text())
    ann["masks"][obj][cam][frame]["counts"] = "0"  # pycocotools would decode it to garbage
    path.write_text(json.dumps(ann))
    return path, "RLE does not decode"


def _rle_wrong_aspect(root: Path) -> tuple[Path, str]:
    # a valid RLE, but 100x300 for a frame whose annotations are square or 16:9-ish
    _, take, cam, obj, _, frame = json.loads(pairs_path(root).read_text())[0][2].rsplit("//", 5)
    path = root / "processed" / take / "annotation.json"
    ann = json.loads(path.read_text())
    mask = np.zeros((100, 300), np.uint8)
    mask[10:40, 20:90] = 1
    ann["masks"][obj][cam][frame] = rle.encode(mask)
    path.write_text(json.dumps(ann))
    return path, "RLE of 100x300 does not have the aspect of its image"


BROKEN_FILES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "truncated jpeg": _truncate_jpeg,
    "corrupt jpeg": _corrupt_jpeg,
    "missing frame": _missing_frame,
    "missing masks npz": _missing_masks,
    "unreadable masks npz": _unreadable_masks,
    "boxes count differs from masks": _boxes_count_differs,
    "masks of unexpected size": _masks_wrong_size,
    "rle does not decode": _rle_does_not_decode,
    "rle of another aspect": _rle_wrong_aspect,
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_dataset_file(case, root, weights, tmp_path, capsys, no_backbone):
    path, why = BROKEN_FILES[case](root)
    argv = precompute_argv(root, tmp_path / "cache", weights)
    expect_exit2(capsys, precompute_cli.main, argv, "omama-precompute", path, why)


# ------------------------------------------------------------------ pair files and splits


def _rewrite_first_pair(root: Path, old: str, new: str) -> None:
    pairs = json.loads(pairs_path(root).read_text())
    pairs[0] = [s.replace(f"//{old}//", f"//{new}//") for s in pairs[0]]
    pairs_path(root).write_text(json.dumps(pairs))


def _absent_take(root: Path) -> tuple[Path, str]:
    _rewrite_first_pair(root, first_destination(root)[0], "no-such-take")
    return pairs_path(root), "take 'no-such-take' has no annotation file"


def _absent_object(root: Path) -> tuple[Path, str]:
    obj = json.loads(pairs_path(root).read_text())[0][0].rsplit("//", 5)[3]
    _rewrite_first_pair(root, obj, "ghost_9")
    return pairs_path(root), "object 'ghost_9' absent from annotation.json"


def _malformed_pair(root: Path) -> tuple[Path, str]:
    pairs = json.loads(pairs_path(root).read_text())
    pairs[1][2] = "ROOT//take//cam01//rgb"
    pairs_path(root).write_text(json.dumps(pairs))
    return pairs_path(root), "entry 1 element 2 (exo rgb) 'ROOT//take//cam01//rgb' is not"


def _empty_pairs(root: Path) -> tuple[Path, str]:
    pairs_path(root).write_text("[]")
    return pairs_path(root), "the pair list is empty"


def _split_missing(root: Path) -> tuple[Path, str]:
    path = root / "processed" / "split.json"
    splits = json.loads(path.read_text())
    del splits[SPLIT]
    path.write_text(json.dumps(splits))
    return path, f"no split '{SPLIT}' (splits present: test, train)"


BAD_PAIRS: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "pair names absent take": _absent_take,
    "pair names absent object": _absent_object,
    "malformed pair string": _malformed_pair,
    "empty pair file": _empty_pairs,
    "split missing from split.json": _split_missing,
}


@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_bad_pairs_and_splits(case, root, weights, tmp_path, capsys, no_backbone):
    path, why = BAD_PAIRS[case](root)
    argv = precompute_argv(root, tmp_path / "cache", weights)
    expect_exit2(capsys, precompute_cli.main, argv, "omama-precompute", path, why)
    assert not (tmp_path / "cache" / "manifest.json").exists()


# ------------------------------------------------------------------ weights, checkpoints, caches


def test_weights_of_wrong_architecture(root, tmp_path, capsys):
    vit_s = tmp_path / "dinov2_vits14_reg4_pretrain.pth"  # a ViT-S/14: 384-d
    torch.save(
        {"cls_token": torch.zeros(1, 1, 384), "register_tokens": torch.zeros(1, 4, 384)}, vit_s
    )
    argv = precompute_argv(root, tmp_path / "cache", vit_s)
    why = "expected 768-d DINOv2 ViT-B/14 reg4 weights, found cls_token of shape (1, 1, 384)"
    expect_exit2(capsys, precompute_cli.main, argv, "omama-precompute", vit_s, why)


@pytest.fixture
def cache_copy(cache_dir, tmp_path) -> Path:
    return Path(shutil.copytree(cache_dir, tmp_path / "cache"))


def test_cache_built_with_other_backbone(root, cache_copy, tmp_path, capsys):
    other = tmp_path / "other_weights.pth"
    torch.save({"x": torch.zeros(1)}, other)
    argv = precompute_argv(root, cache_copy, other)
    why = "cache was built with weights_sha256="
    expect_exit2(
        capsys, precompute_cli.main, argv, "omama-precompute", cache_copy / "manifest.json", why
    )


def test_cache_built_with_other_size_policy(root, cache_copy, weights, capsys):
    path = cache_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["settings"]["portrait_policy"] = "keep-portrait"
    path.write_text(json.dumps(manifest))
    argv = precompute_argv(root, cache_copy, weights)
    why = "cache was built with portrait_policy='keep-portrait', this run asks "
    expect_exit2(capsys, precompute_cli.main, argv, "omama-precompute", path, why)


def cache_grids(cache_dir: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    cache = Cache(cache_dir)
    try:
        return cache.role_grids(cache.samples("exo2ego", "test"))
    finally:
        cache.close()


def eval_argv(cache: Path, checkpoint: Path, out: Path) -> list:
    return [
        "--cache",
        cache,
        "--split",
        "test",
        "--checkpoint",
        checkpoint,
        "--out",
        out,
        "--device",
        "cpu",
        "--workers",
        "0",
    ]


def test_matcher_checkpoint_of_wrong_shape(cache_dir, tmp_path, capsys):
    grid_t, grid_q = cache_grids(cache_dir)
    state = OMaMaMatcher(grid_t, grid_q).state_dict()
    state["mlp.mlp.0.weight"] = torch.zeros(768, 1536)  # an MLP that skips the context half
    ckpt = tmp_path / "wrong_shape.pt"
    torch.save(state, ckpt)
    why = "mlp.mlp.0.weight has shape (768, 1536), expected (768, 2304)"
    argv = eval_argv(cache_dir, ckpt, tmp_path / "pred.json")
    expect_exit2(capsys, eval_cli.main, argv, "omama-eval", ckpt, why)
    assert not (tmp_path / "pred.json").exists()


def test_matcher_checkpoint_of_other_direction(cache_dir, tmp_path, capsys):
    grid_t, grid_q = cache_grids(cache_dir)
    ckpt = tmp_path / "ego2exo_best.pt"
    save_matcher_state(OMaMaMatcher(grid_t=grid_q, grid_q=grid_t), ckpt)
    why = "checkpoint is for the other direction"
    argv = eval_argv(cache_dir, ckpt, tmp_path / "pred.json")
    expect_exit2(capsys, eval_cli.main, argv, "omama-eval", ckpt, why)
    train_argv = ["--cache", cache_dir, "--out", tmp_path / "run", "--init", ckpt]
    train_argv += ["--device", "cpu", "--workers", "0"]
    expect_exit2(capsys, train_cli.main, train_argv, "omama-train", ckpt, why)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ options out of range


OPTION_CASES = [
    (
        precompute_cli.main,
        "omama-precompute",
        ["--batch-size", "0"],
        "--batch-size must be at least 1, got 0",
    ),
    (
        train_cli.main,
        "omama-train",
        ["--batch-size", "0"],
        "--batch-size must be at least 1, got 0",
    ),
    (eval_cli.main, "omama-eval", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (train_cli.main, "omama-train", ["--n-masks", "1"], "--n-masks must be at least 2, got 1"),
    (
        precompute_cli.main,
        "omama-precompute",
        ["--direction", "up2down"],
        "invalid choice: 'up2down'",
    ),
    (train_cli.main, "omama-train", ["--direction", "up2down"], "invalid choice: 'up2down'"),
    (eval_cli.main, "omama-eval", ["--direction", "up2down"], "invalid choice: 'up2down'"),
    (train_cli.main, "omama-train", ["--epochs", "two"], "--epochs: invalid int value: 'two'"),
    (
        precompute_cli.main,
        "omama-precompute",
        ["--num-shards", "0"],  # the old name of --parts
        "--parts must be at least 1, got 0",
    ),
    (
        precompute_cli.main,
        "omama-precompute",
        ["--root", "ROOT", "--cache", "CACHE", "--random-init", "--parts", "4"],
        "--parts 4 needs --part I (or --merge)",
    ),
]


@pytest.mark.parametrize("main,prog,argv,why", OPTION_CASES, ids=lambda v: str(v)[:24])
def test_option_out_of_range(main, prog, argv, why, capsys):
    assert main(argv) == 2
    line = one_error_line(capsys, prog)
    assert why in line, line


def test_option_out_of_range_in_yaml(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("common:\n  direction: exo2ego\ntrain:\n  n_masks: 1\n")
    assert train_cli.main(["--config", str(config)]) == 2
    line = one_error_line(capsys, "omama-train")
    assert str(config) in line and "--n-masks must be at least 2, got 1" in line, line


# ------------------------------------------------------------------ --skip-bad end to end


def _take_cam_frame(pair_string: str) -> list[str]:
    _, take, cam, _, _, frame = pair_string.rsplit("//", 5)
    return [take, cam, frame]


def test_skip_bad_reports_and_readers_count_skipped_pairs(root, weights, tmp_path, capsys, caplog):
    """Two bad images: precompute logs them to a report and carries on; training and eval
    skip exactly the pairs that need them and say how many."""
    bad_frame, _ = _truncate_jpeg(root)  # the first pair's destination image
    pairs = json.loads(pairs_path(root).read_text())
    exo = pairs[-1][2].rsplit("//", 5)  # the last pair's source (exo) image
    other = root / "processed" / exo[1] / exo[2] / f"{exo[5]}.jpg"
    other.write_bytes(b"")
    cache = tmp_path / "cache"
    argv = precompute_argv(root, cache, weights, "--skip-bad", "--batch-size", "4")
    assert precompute_cli.main([str(a) for a in argv]) == 0
    assert "2 bad items" in capsys.readouterr().out
    report = json.loads((cache / "reports" / f"bad_exo2ego_{SPLIT}.json").read_text())
    assert sorted(r["error"] for r in report) == sorted(
        [
            f"{bad_frame}: truncated JPEG (the file ends before its end-of-image marker 0xFFD9)",
            f"{other}: image file is empty",
        ]
    )

    def uses(entry: list[str], path: Path) -> bool:
        """Whether a pair's ego or exo image (elements 0 and 2) is the frame at `path`."""
        image = [path.parent.parent.name, path.parent.name, path.stem]
        return any(_take_cam_frame(s) == image for s in entry[::2])

    n_bad = sum(uses(e, bad_frame) or uses(e, other) for e in pairs)
    assert 0 < n_bad < len(pairs)
    expect = f"exo2ego {SPLIT}: skipping {n_bad} of {len(pairs)} pairs whose images were not cached"

    caplog.set_level(logging.WARNING)
    out = tmp_path / "pred.json"
    eval_argv_ = ["--cache", cache, "--split", SPLIT, "--baseline", "random", "--out", out]
    assert eval_cli.main([str(a) for a in eval_argv_ + ["--device", "cpu", "--workers", "0"]]) == 0
    assert expect in caplog.text
    caplog.clear()
    train_argv = ["--cache", cache, "--out", tmp_path / "run", "--train-split", SPLIT]
    train_argv += ["--val-split", "none", "--epochs", "1", "--batch-size", "16", "--n-masks", "4"]
    assert train_cli.main([str(a) for a in train_argv + ["--device", "cpu", "--workers", "0"]]) == 0
    assert expect in caplog.text
