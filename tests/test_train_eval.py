"""Training and evaluation from the cache, checked through their files and a per-pixel oracle."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from omama.cli.eval import main as eval_main
from omama.cli.train import main as train_main
from omama.matcher.checkpoint import OPTIONAL_KEYS
from omama.matcher.model import OMaMaMatcher
from omama.metrics.validate import schema_problems

REFERENCE_KEYS = {
    *(f"mlp.mlp.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")),
    *(f"mlp_visible.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")),
    *(
        f"CROSS_context_attn.{m}.{p}"
        for m in (
            "query",
            "key",
            "value",
            "project.0",
            "norm_input",
            "norm_output",
            "mlp.0",
            "mlp.2",
        )
        for p in ("weight", "bias")
    ),
    "pos_embed_T",
    "pos_embed_Q",
}


def decode(rle):
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})


@pytest.fixture(scope="module")
def run_dir(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    argv = [
        "--cache",
        str(cache_dir),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--n-masks",
        "8",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--log-every",
        "2",
    ]
    assert train_main(argv) == 0
    return out


def test_training_writes_reference_checkpoints_and_curves(run_dir):
    for name in ("init.pt", "last.pt", "best.pt", "state.pt", "log.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    assert set(state) == REFERENCE_KEYS | set(OPTIONAL_KEYS)  # + the fitted visibility part
    assert state["visibility.fitted_flag"].item() == 1.0
    log = json.loads((run_dir / "log.json").read_text())
    steps = [s["step"] for s in log["steps"]]
    assert steps == sorted(set(steps)) and all(np.isfinite(s["loss"]) for s in log["steps"])
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    assert {"iou", "shape_acc", "location_score", "balanced_acc", "n"} <= set(log["epochs"][0])
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lrs = [s["lr"] for s in log["steps"]]
    assert lrs == sorted(lrs, reverse=True)  # cosine annealing only goes down


def test_training_refuses_to_overwrite_a_run(cache_dir, run_dir, capsys):
    argv = ["--cache", str(cache_dir), "--out", str(run_dir), "--workers", "0"]
    assert train_main(argv) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_eval_output_schema_and_metrics_against_pixel_oracle(cache_dir, run_dir, tmp_path, capsys):
    pred_path = tmp_path / "pred.json"
    argv = [
        "--cache",
        str(cache_dir),
        "--split",
        "test",
        "--checkpoint",
        str(run_dir / "best.pt"),
        "--out",
        str(pred_path),
        "--visualize",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert eval_main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pred = json.loads(pred_path.read_text())
    gt = json.loads((tmp_path / "pred_gt.json").read_text())
    assert schema_problems(pred, gt, "exo2ego") == []
    assert json.loads((tmp_path / "pred_metrics.json").read_text()) == printed
    assert len(list((tmp_path / "pred_vis").glob("0*.png"))) == 2
    assert (tmp_path / "pred_vis" / "contact_sheet.png").is_file()

    # independent oracle: walk the GT, resize each visible destination mask, per-pixel IoU
    ious, hits, n_vis = [], [], 0
    for take, t in gt["annotations"].items():
        for obj, cams in t["masks"].items():
            ego = next(c for c in cams if "aria" in c)
            for exo in (c for c in cams if "aria" not in c):
                for frame in cams[exo]:
                    if int(frame) not in t["annotated_frames"][obj][ego]:
                        continue
                    entry = pred["exo-ego"]["results"][take]["masks"][obj][f"{exo}_{ego}"][frame]
                    visible = frame in cams[ego]
                    hits.append((entry["confidence"] > 0.5, visible))
                    if not visible:
                        continue
                    g = decode(cams[ego][frame])
                    h, w = g.shape
                    s = 480 / max(h, w)
                    g = cv2.resize(g, (int(w * s), int(h * s)), interpolation=cv2.INTER_NEAREST)
                    p = decode(entry["pred_mask"])
                    assert p.shape == g.shape
                    inter = sum(int(a and b) for a, b in zip(p.ravel(), g.ravel(), strict=True))
                    union = sum(int(a or b) for a, b in zip(p.ravel(), g.ravel(), strict=True))
                    ious.append(1.0 if union == 0 else inter / (union + 1e-7))
                    n_vis += 1
    assert printed["n"] == n_vis
    assert printed["iou"] == pytest.approx(float(np.mean(ious)), abs=1e-9)


def test_released_checkpoint_grids_load_into_small_grids(cache_dir, tmp_path, capsys):
    """A checkpoint made for the real 50x50 / 38x68 grids evaluates on the small demo grids."""
    real = OMaMaMatcher(grid_t=(50, 50), grid_q=(38, 68))
    torch.save(real.state_dict(), tmp_path / "Exo2Ego_weights_checkpoint.pt")
    argv = [
        "--cache",
        str(cache_dir),
        "--checkpoint",
        str(tmp_path / "Exo2Ego_weights_checkpoint.pt"),
        "--out",
        str(tmp_path / "p.json"),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert eval_main(argv) == 0
    other = OMaMaMatcher(grid_t=(38, 68), grid_q=(50, 50))
    torch.save(other.state_dict(), tmp_path / "ego2exo.pt")
    argv[3] = str(tmp_path / "ego2exo.pt")
    assert eval_main(argv) == 2
    assert "other direction" in capsys.readouterr().err


def test_training_learns(cache_dir, tmp_path, capsys):
    """On the tiny synthetic set, training lifts IoU on the pairs it trained on well above the
    untrained matcher's (the same seed draws the same untrained matcher)."""
    out = tmp_path / "run"
    argv = ["--cache", str(cache_dir), "--out", str(out), "--device", "cpu", "--workers", "0"]
    train = ["--epochs", "6", "--batch-size", "4", "--n-masks", "8", "--lr", "3e-4"]
    assert train_main([*argv, *train, "--val-split", "none"]) == 0
    ious = {}
    for name in ("init", "last"):
        pred = ["--checkpoint", str(out / f"{name}.pt"), "--out", str(tmp_path / f"{name}.json")]
        capsys.readouterr()
        assert eval_main([*argv[:2], *argv[4:], "--split", "train", *pred]) == 0
        ious[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["iou"]
    print(ious)
    assert ious["last"] >= ious["init"] + 0.15, ious
