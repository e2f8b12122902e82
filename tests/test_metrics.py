"""Official-metric re-implementation: hand-worked cases and a plain per-pixel loop oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omama import rle
from omama.errors import OmamaError
from omama.metrics.groundtruth import GTSample, build_gt_json
from omama.metrics.official import (
    Metrics,
    balanced_accuracy,
    boundary_f_measure,
    evaluate,
    location_error,
    mask_iou,
    resize_for_eval,
)
from omama.metrics.validate import eval_size

DIAG480 = math.sqrt(480**2 + 480**2)


# ------------------------------------------------------------------ sizes and resize


@pytest.mark.parametrize(
    "hw, want",
    [((1408, 1408), (480, 480)), ((2160, 3840), (270, 480)), ((3840, 2160), (480, 270))],
)
def test_eval_size(hw, want):
    assert eval_size(*hw) == want


def test_resize_for_eval_takes_every_other_pixel_at_factor_two():
    rng = np.random.default_rng(0)
    m = (rng.random((960, 540)) < 0.5).astype(np.uint8)
    out = resize_for_eval(m)
    assert out.shape == (480, 270)
    assert np.array_equal(out, m[::2, ::2])  # nearest at an exact factor 2: source 2*i


def test_resize_for_eval_accepts_bool():
    out = resize_for_eval(np.ones((1408, 1408), bool))
    assert out.shape == (480, 480) and out.all()


# ------------------------------------------------------------------ IoU


def test_iou_hand_cases():
    pred = np.zeros((4, 4), np.uint8)
    gt = np.zeros((4, 4), np.uint8)
    pred[0:2] = 1  # 8 px
    gt[1:3] = 1  # 8 px, 4 shared -> 4 / 12
    assert mask_iou(pred, gt) == pytest.approx(1 / 3, rel=1e-6)
    assert mask_iou(gt, gt) == pytest.approx(1.0, rel=1e-6)
    assert mask_iou(np.zeros_like(gt), gt) == 0.0  # empty prediction
    assert mask_iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # empty union counts 1


def test_iou_shape_mismatch_is_an_error():
    with pytest.raises(OmamaError):
        mask_iou(np.zeros((3, 4)), np.zeros((4, 3)))


# ------------------------------------------------------------------ boundary F


def strip(h, w, cols):
    m = np.zeros((h, w), np.uint8)
    m[:, :cols] = 1
    return m


def test_boundary_f_identical_empty_and_one_sided():
    gt = strip(10, 10, 3)
    assert boundary_f_measure(gt, gt) == 1.0
    assert boundary_f_measure(np.zeros_like(gt), gt) == 0.0  # no predicted boundary
    assert boundary_f_measure(gt, np.zeros_like(gt)) == 0.0  # no GT boundary
    assert boundary_f_measure(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_boundary_f_hand_worked_step():
    # 10x10: tolerance ceil(0.008 * 14.1) = 1 px (a plus-shaped neighbourhood).
    # GT columns 0..2 -> boundary = column 2 (10 px; the boundary sits on the last inside
    # pixel of a left-to-right edge).
    # Pred: columns 0..2 on rows 0..4, columns 0..5 on rows 5..9 -> boundary = (0..4, 2),
    # the step (4, 3..5) and (5..9, 5): 13 px. Within 1 px of GT: (0..4, 2) and (4, 3) -> 6.
    # GT pixels within 1 px of the pred boundary: rows 0..4, and (5, 2) below (4, 2) -> 6.
    # P = 6/13, R = 6/10, F = 2PR / (P + R) = 12/23.
    gt = strip(10, 10, 3)
    pred = gt.copy()
    pred[5:, :6] = 1
    assert boundary_f_measure(pred, gt) == pytest.approx(12 / 23, rel=1e-12)


@pytest.mark.parametrize("h, w, tol", [(480, 480, 6), (270, 480, 5)])
def test_boundary_tolerance_is_ceil_of_0008_diagonal(h, w, tol):
    # 480x480: ceil(0.008 * 678.8) = 6 px; 270x480: ceil(0.008 * 550.7) = 5 px.
    gt = strip(h, w, 100)  # boundary column 99
    assert boundary_f_measure(strip(h, w, 100 + tol), gt) == 1.0  # edge moved by tol: matched
    assert boundary_f_measure(strip(h, w, 101 + tol), gt) == 0.0  # one pixel further: not


# ------------------------------------------------------------------ location


def test_location_error_hand_cases():
    gt = np.zeros((480, 480), np.uint8)
    gt[10:21, 30:42] = 1  # box x 30..41, y 10..20 -> centre (35, 15)
    pred = np.zeros((480, 480), np.uint8)
    pred[100:104, 50] = 1  # box x 50..50, y 100..103 -> centre (50, 101)
    assert location_error(pred, gt) == pytest.approx(math.sqrt(15**2 + 86**2) / DIAG480)
    assert location_error(gt, gt) == 0.0
    empty = np.zeros((480, 480), np.uint8)
    assert location_error(empty, empty) == 0.0


def test_location_error_empty_prediction_uses_swapped_centre():
    # The official tool puts an empty mask's centre at (x = H // 2, y = W // 2): for a
    # 270x480 mask that is (135, 240), not the image centre (240, 135). Always / 480*sqrt(2).
    gt = np.zeros((270, 480), np.uint8)
    gt[135, 240] = 1  # centre (240, 135)
    empty = np.zeros_like(gt)
    assert location_error(empty, gt) == pytest.approx(105 / 480, rel=1e-12)


# ------------------------------------------------------------------ balanced accuracy


def test_balanced_accuracy_hand_counts():
    gt = [1, 1, 1, 0, 0]
    pred = [1, 0, 1, 0, 1]  # recall(visible) 2/3, recall(invisible) 1/2
    assert balanced_accuracy(pred, gt) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert balanced_accuracy([1, 1, 0, 0], [1, 1, 0, 0]) == 1.0


def test_balanced_accuracy_class_missing_from_gt_is_dropped():
    # Only visible GT samples: the mean is the recall of "visible" alone (3 of 4).
    assert balanced_accuracy([1, 0, 1, 1], [1, 1, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(balanced_accuracy([], []))


# ------------------------------------------------------------------ evaluate vs a loop oracle


def blocks(small: np.ndarray) -> np.ndarray:
    """Upsample by 2 so that any nearest downsample by 2 gives `small` back exactly."""
    return np.kron(small, np.ones((2, 2), np.uint8))


def rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def loop_iou(pred, gt):
    inter = union = 0
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            p, g = pred[y][x] != 0, gt[y][x] != 0
            inter += p and g
            union += p or g
    return 1.0 if union == 0 else inter / union


def loop_centre(m):
    xs, ys = [], []
    for y in range(m.shape[0]):
        for x in range(m.shape[1]):
            if m[y][x]:
                xs.append(x)
                ys.append(y)
    if not xs:  # official quirk: (x, y) = (H // 2, W // 2)
        return m.shape[0] // 2, m.shape[1] // 2
    return (min(xs) + max(xs)) // 2, (min(ys) + max(ys)) // 2


def loop_location(pred, gt):
    (px, py), (gx, gy) = loop_centre(pred), loop_centre(gt)
    return math.sqrt((px - gx) ** 2 + (py - gy) ** 2) / DIAG480


def make_case():
    """exo2ego, one take, one object, two exo cams (one portrait); ego 960x960 -> 480x480.

    Returns GT, prediction, and for each sample (gt_small or None, pred_small, confidence).
    """
    ego, exo1, exo2 = "aria01", "cam01", "cam02"
    e = (480, 480)
    ego_gt = {  # destination masks at eval size (None: not visible)
        "0": rect(*e, 100, 200, 50, 120),
        "10": None,
        "20": rect(*e, 0, 40, 400, 480),
        "30": rect(*e, 300, 301, 10, 11),
    }
    src = {exo1: rect(540, 960, 10, 50, 10, 50), exo2: rect(960, 540, 10, 50, 10, 50)}
    samples, expected, preds = [], [], {}
    for cam in (exo1, exo2):
        for frame, small in ego_gt.items():
            dst = None if small is None else rle.encode(blocks(small))
            samples.append(GTSample("t1", "obj", cam, ego, frame, rle.encode(src[cam]), dst))
    pred_masks = {
        (exo1, "0"): (rect(*e, 110, 210, 60, 130), 0.9),
        (exo1, "10"): (rect(*e, 5, 9, 5, 9), 0.7),
        (exo1, "20"): (np.zeros(e, np.uint8), 0.2),
        (exo1, "30"): (rect(*e, 300, 301, 10, 11), 0.95),
        (exo2, "0"): (rect(*e, 400, 470, 300, 470), 0.5),
        (exo2, "10"): (np.zeros(e, np.uint8), 0.1),
        (exo2, "20"): (rect(*e, 0, 40, 400, 480), 0.8),
        (exo2, "30"): (rect(*e, 200, 260, 200, 220), 0.6),
    }
    for (cam, frame), (mask, conf) in pred_masks.items():
        preds.setdefault(f"{cam}_{ego}", {})[frame] = {
            "pred_mask": rle.encode(mask),
            "confidence": conf,
        }
        expected.append((ego_gt[frame], mask, conf))
    gt = build_gt_json(samples)
    pred = {
        "exo-ego": {
            "version": "xx",
            "challenge": "xx",
            "results": {"t1": {"masks": {"obj": preds}, "subsample_idx": [0, 10, 20, 30]}},
        }
    }
    return gt, pred, expected


def test_evaluate_matches_loop_oracle():
    gt, pred, expected = make_case()
    got = evaluate(pred, gt, "exo2ego")
    visible = [(g, p) for g, p, _ in expected if g is not None]
    want_iou = sum(loop_iou(p, g) for g, p in visible) / len(visible)
    want_loc = sum(loop_location(p, g) for g, p in visible) / len(visible)
    # visibility by hand: GT visible = frames 0, 20, 30 (x2 cams), invisible = frame 10 (x2).
    # conf > 0.5: cam01 [0.9 y, 0.7 y, 0.2 n, 0.95 y], cam02 [0.5 n, 0.1 n, 0.8 y, 0.6 y]
    # visible recall: cam01 0 y, 20 n, 30 y; cam02 0 n, 20 y, 30 y -> 4/6; invisible: 1/2.
    assert isinstance(got, Metrics)
    assert got.n == 6 and got.n_visibility == 8
    assert got.iou == pytest.approx(want_iou, rel=1e-6)
    assert got.location_score == pytest.approx(want_loc, rel=1e-12)
    assert got.balanced_acc == pytest.approx((4 / 6 + 1 / 2) / 2)
    assert 0.0 <= got.shape_acc <= 1.0
    d = got.as_dict()
    assert {"iou", "shape_acc", "location_score", "balanced_acc", "n"} <= set(d)


def test_evaluate_ego2exo_counts_a_camera_where_the_object_is_never_visible():
    # The object is never visible in cam02: its samples must still count for visibility.
    samples = []
    for frame in ("1", "2"):
        src = rle.encode(rect(960, 960, 0, 10, 0, 10))
        dst1 = rle.encode(blocks(rect(270, 480, 10, 20, 10, 20)))
        samples.append(GTSample("t", "o", "aria01", "cam01", frame, src, dst1))
        samples.append(GTSample("t", "o", "aria01", "cam02", frame, src, None))
    gt = build_gt_json(samples)
    pair1 = {
        f: {"pred_mask": rle.encode(rect(270, 480, 10, 20, 10, 20)), "confidence": 0.9}
        for f in ("1", "2")
    }
    empty = rle.encode(np.zeros((270, 480), np.uint8))
    pair2 = {
        "1": {"pred_mask": empty, "confidence": 0.9},
        "2": {"pred_mask": empty, "confidence": 0.1},
    }
    pred = {
        "ego-exo": {
            "results": {
                "t": {
                    "masks": {"o": {"aria01_cam01": pair1, "aria01_cam02": pair2}},
                    "subsample_idx": [1, 2],
                }
            }
        }
    }
    got = evaluate(pred, gt, "ego2exo")
    assert got.n == 2 and got.n_visibility == 4
    assert got.iou == pytest.approx(1.0, rel=1e-6)
    assert got.location_score == 0.0
    assert got.balanced_acc == pytest.approx((1.0 + 0.5) / 2)  # invisible: 1 of 2 right


def test_evaluate_missing_prediction_names_it():
    gt, pred, _ = make_case()
    del pred["exo-ego"]["results"]["t1"]["masks"]["obj"]["cam02_aria01"]["20"]
    with pytest.raises(OmamaError, match=r"frame 20.*cam02_aria01|cam02_aria01.*20"):
        evaluate(pred, gt, "exo2ego")
    gt, pred, _ = make_case()
    del pred["exo-ego"]["results"]["t1"]["masks"]["obj"]["cam01_aria01"]
    with pytest.raises(OmamaError, match="cam01_aria01"):
        evaluate(pred, gt, "exo2ego")
    gt, pred, _ = make_case()
    with pytest.raises(OmamaError, match="ego-exo"):
        evaluate(pred, gt, "ego2exo")


def test_evaluate_wrong_mask_size_is_an_error():
    gt, pred, _ = make_case()
    entry = pred["exo-ego"]["results"]["t1"]["masks"]["obj"]["cam01_aria01"]["0"]
    entry["pred_mask"] = rle.encode(np.zeros((700, 700), np.uint8))
    with pytest.raises(OmamaError, match="480"):
        evaluate(pred, gt, "exo2ego")


def test_build_gt_json_structure():
    src = rle.encode(rect(20, 20, 0, 5, 0, 5))
    dst = rle.encode(rect(20, 20, 5, 9, 5, 9))
    gt = build_gt_json(
        [
            GTSample("t", "o", "cam01", "aria01", "3", src, dst),
            GTSample("t", "o", "cam02", "aria01", "3", src, dst),
            GTSample("t", "o", "cam02", "aria01", "7", src, None),
        ]
    )
    take = gt["annotations"]["t"]
    assert set(gt) == {"version", "challenge", "annotations"}
    assert take["masks"]["o"] == {
        "cam01": {"3": src},
        "cam02": {"3": src, "7": src},
        "aria01": {"3": dst},
    }
    assert take["annotated_frames"]["o"]["aria01"] == [3, 7]  # the invisible frame 7 too
    with pytest.raises(OmamaError):  # frame 3 cannot be visible and invisible in aria01
        build_gt_json(
            [
                GTSample("t", "o", "cam01", "aria01", "3", src, dst),
                GTSample("t", "o", "cam02", "aria01", "3", src, None),
            ]
        )
    with pytest.raises(OmamaError):  # mixed directions
        build_gt_json(
            [
                GTSample("t", "o", "cam01", "aria01", "3", src, dst),
                GTSample("t", "o", "aria01", "cam01", "3", src, dst),
            ]
        )


def test_evaluate_not_strict_accepts_an_ego2exo_subset():
    # ego frame 2 is paired with cam01 only; the official validator also wants a cam02
    # prediction for it (not scored). strict=False scores the same 3 samples without it.
    src = rle.encode(rect(960, 960, 0, 10, 0, 10))
    dst = rle.encode(blocks(rect(270, 480, 10, 20, 10, 20)))
    samples = [
        GTSample("t", "o", "aria01", "cam01", "1", src, dst),
        GTSample("t", "o", "aria01", "cam01", "2", src, None),
        GTSample("t", "o", "aria01", "cam02", "1", src, dst),
    ]
    gt = build_gt_json(samples)
    good = rle.encode(rect(270, 480, 10, 20, 10, 20))
    empty = rle.encode(np.zeros((270, 480), np.uint8))
    masks = {
        "aria01_cam01": {
            "1": {"pred_mask": good, "confidence": 0.9},
            "2": {"pred_mask": empty, "confidence": 0.2},
        },
        "aria01_cam02": {"1": {"pred_mask": empty, "confidence": 0.7}},
    }
    pred = {"ego-exo": {"results": {"t": {"masks": {"o": masks}, "subsample_idx": [1, 2]}}}}
    with pytest.raises(OmamaError, match="aria01_cam02"):
        evaluate(pred, gt, "ego2exo")
    got = evaluate(pred, gt, "ego2exo", strict=False)
    assert got.n == 2 and got.n_visibility == 3
    assert got.iou == pytest.approx(0.5, rel=1e-6)  # 1 and 0
    assert got.balanced_acc == 1.0
    # cam02 frame 1: empty prediction, centre (x=135, y=240) vs GT box centre (14, 14)
    want_loc = (0 + math.sqrt((135 - 14) ** 2 + (240 - 14) ** 2) / DIAG480) / 2
    assert got.location_score == pytest.approx(want_loc, rel=1e-12)
