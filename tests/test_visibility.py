"""The fitted visibility confidence, against plain numpy oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omama.matcher.checkpoint import OPTIONAL_KEYS, load_matcher_state, save_matcher_state
from omama.matcher.model import OMaMaMatcher
from omama.matcher.visibility import VisibilityHead, fit_visibility, visibility_features
from omama.predict.scoring import Scored, with_confidence


def _plain_features(sims: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros((len(sims), 3), np.float32)
    for i, (row, ok) in enumerate(zip(sims, valid, strict=True)):
        s = sorted(row[ok].astype(np.float64), reverse=True)
        if s:
            p1 = 1 / sum(np.exp((v - s[0]) / 0.07) for v in s)  # the model's softmax at its T
            out[i] = (s[0], s[0] - s[1] if len(s) > 1 else 0.0, p1)
    return out


def test_features_match_a_plain_sort(seed):
    rng = np.random.default_rng(seed)
    sims = rng.uniform(-1, 1, (40, 7)).astype(np.float32)
    valid = rng.random((40, 7)) < 0.6
    valid[0], valid[1] = False, False
    valid[1, 3] = True  # one candidate: margin 0
    got = visibility_features(torch.from_numpy(sims), torch.from_numpy(valid)).numpy()
    np.testing.assert_allclose(got, _plain_features(sims, valid), rtol=0, atol=1e-6)
    assert got[0].tolist() == [0.0, 0.0, 0.0] and got[1, 1] == 0.0 and got[1, 2] == 1.0


def _balanced_gradient(x: np.ndarray, y: np.ndarray, theta: np.ndarray, l2: float) -> np.ndarray:
    """Gradient of sum_i c_i BCE(a_i . theta, y_i) + l2 |w|^2, c = 1/(2 n_class), plainly."""
    a = np.hstack([x, np.ones((len(x), 1))])
    c = np.where(y > 0.5, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    p = 1 / (1 + np.exp(-(a @ theta)))
    return a.T @ (c * (p - y)) + 2 * l2 * np.append(theta[:-1], 0.0)


def test_fit_is_the_balanced_optimum(seed):
    rng = np.random.default_rng(seed)
    n_vis, n_hid = 30, 90  # unbalanced classes: the fit weighs them equally
    x = np.vstack(
        [rng.normal([0.6, 0.1], 0.15, (n_vis, 2)), rng.normal([0.3, 0.03], 0.15, (n_hid, 2))]
    )
    y = np.r_[np.ones(n_vis), np.zeros(n_hid)]
    w, b = fit_visibility(torch.from_numpy(x).float(), torch.from_numpy(y))
    theta = np.r_[w.double().numpy(), b]
    x32 = torch.from_numpy(x).float().double().numpy()
    assert np.abs(_balanced_gradient(x32, y, theta, 1e-3)).max() < 1e-5  # a stationary point
    pred = x32 @ theta[:2] + theta[2] > 0
    recall = 0.5 * (pred[y > 0].mean() + (~pred[y == 0]).mean())
    assert recall > 0.75 and w[0] > 0  # a higher best score means visible
    again = fit_visibility(torch.from_numpy(x).float(), torch.from_numpy(y))
    assert torch.equal(again[0], w) and again[1] == b  # deterministic
    assert fit_visibility(torch.from_numpy(x).float(), torch.ones(len(y))) is None


def _scored(features: list[tuple[float, float, float]]) -> list[Scored]:
    return [Scored(None, 0, 0.3, (0,) * 5, 3, f) for f in features]  # type: ignore[arg-type]


def test_confidence_is_the_fitted_decision():
    head = VisibilityHead()
    scored = _scored([(0.9, 0.2, 0.8), (0.1, 0.0, 0.1), (0.6, 0.05, 0.3)])
    assert with_confidence(scored, head, "visibility") == scored  # unfitted: the reference's
    head.set(torch.tensor([4.0, 10.0, 1.0]), -2.8)
    got = with_confidence(scored, head, "visibility")
    logits = [4 * a + 10 * m + p - 2.8 for a, m, p in (s.features for s in scored)]
    assert [g.confidence > 0.5 for g in got] == [v > 0 for v in logits] == [True, False, True]
    assert got[0].confidence == pytest.approx(1 / (1 + np.exp(-logits[0])), rel=1e-6)
    assert with_confidence(scored, head, "reference") == scored


def test_fitted_part_round_trips_and_old_checkpoints_load_unfitted(tmp_path, caplog):
    model = OMaMaMatcher((4, 4), (3, 5))
    model.visibility.set(torch.tensor([1.5, -0.5, 2.0]), 0.25)
    save_matcher_state(model, tmp_path / "fitted.pt")
    back = OMaMaMatcher((4, 4), (3, 5))
    load_matcher_state(back, tmp_path / "fitted.pt")
    assert back.visibility.fitted and back.visibility.weight.tolist() == [1.5, -0.5, 2.0]
    old = {k: v for k, v in model.state_dict().items() if k not in OPTIONAL_KEYS}
    torch.save(old, tmp_path / "released_style.pt")  # as O-MaMa's file: no visibility part
    with caplog.at_level("INFO"):
        load_matcher_state(back, tmp_path / "released_style.pt")
    assert not back.visibility.fitted and "no fitted visibility part" in caplog.text


def test_eval_writes_fitted_or_reference_confidence(cache_dir, tmp_path):
    """best.pt of a run carries its fit; --confidence reference writes sigmoid(best cosine),
    and both choose the same masks."""
    from omama.cli.eval import main as eval_main
    from omama.cli.train import main as train_main

    run = tmp_path / "run"
    argv = ["--cache", str(cache_dir), "--out", str(run), "--epochs", "1", "--batch-size", "4"]
    assert train_main([*argv, "--n-masks", "4", "--workers", "0", "--device", "cpu"]) == 0
    model = OMaMaMatcher((1, 1), (1, 1))
    ckpt = torch.load(run / "best.pt", weights_only=True)
    model.visibility.load_state_dict({k.split(".", 1)[1]: ckpt[k] for k in OPTIONAL_KEYS})
    assert model.visibility.fitted
    preds = {}
    for conf in ("visibility", "reference"):
        out = tmp_path / f"{conf}.json"
        common = ["--cache", str(cache_dir), "--checkpoint", str(run / "best.pt"), "--split", "val"]
        assert eval_main([*common, "--out", str(out), "--confidence", conf, "--workers", "0"]) == 0
        preds[conf] = json.loads(out.read_text())
    entries = {}
    for conf, pred in preds.items():
        (top,) = pred.values()
        for take in top["results"].values():
            for obj, cams in take["masks"].items():
                for pair, frames in cams.items():
                    for frame, e in frames.items():
                        entries.setdefault((obj, pair, frame), {})[conf] = e
    assert entries
    assert all(
        e["visibility"]["pred_mask"] == e["reference"]["pred_mask"] for e in entries.values()
    )
    assert any(
        e["visibility"]["confidence"] != e["reference"]["confidence"] for e in entries.values()
    )
