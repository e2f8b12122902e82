"""The per-sample official metrics from RLEs, equal bit for bit to `omama.metrics.pixels`
on the decoded masks, without ever building a full-size mask (what `evaluate` runs)."""

from __future__ import annotations

import cv2
import numpy as np

from omama import masks, rle_runs
from omama.constants import OFFICIAL_MAX_SIDE
from omama.errors import OmamaError
from omama.metrics.pixels import (
    IOU_EPS,
    _disk,
    boundary_map,
    boundary_radius,
    box_centre,
    centre_distance,
)
from omama.metrics.validate import eval_size


def run_scores(pred_rle: dict, gt_rle: dict, where: str) -> tuple[float, float, float]:
    """(IoU, contour accuracy, location error) of one visible sample from its RLEs: the
    prediction at the official size, the GT at its own size. Equal to `mask_iou`,
    `boundary_f_measure` and `location_error` on the decoded prediction and
    `resize_for_eval` of the decoded GT, without ever building a full-size mask:

    - the GT is nearest-resized as runs (`omama.rle_runs.resize_intervals`, cv2's sampling);
    - the centres come from the bounding boxes of the runs;
    - IoU and contour accuracy are computed on the window of the union of both boxes grown
      by one pixel (clipped to the image): every boundary pixel of either mask lies inside
      it (a boundary pixel is in a mask or just above or left of one), a pixel of the
      window's last row or column that is not the image's is background with background
      neighbours as in the whole image, and the dilation radius is the whole image's.
    """
    ph, pw, pruns = rle_runs.runs_of(pred_rle, f"predictions: {where}")
    gh, gw, gruns = rle_runs.runs_of(gt_rle, f"GT: {where}")
    h, w = eval_size(gh, gw)
    if (ph, pw) != (h, w):
        raise OmamaError(
            f"predictions: {where}: mask is {(ph, pw)}, the official evaluator needs {(h, w)} "
            f"(GT resized to longest side {OFFICIAL_MAX_SIDE})"
        )
    pp = rle_runs.column_pieces(*rle_runs.intervals(pruns), h)
    gp = rle_runs.column_pieces(*rle_runs.intervals(gruns), gh)
    gp = rle_runs.resize_pieces(*gp, gh, gw, h, w)
    pbox, gbox = rle_runs.box(*pp), rle_runs.box(*gp)
    location = centre_distance(box_centre(pbox, h, w), box_centre(gbox, h, w))
    boxes = [b for b in (pbox, gbox) if b is not None]
    if not boxes:  # both empty: an empty union and no boundary
        return 1.0, 1.0, location
    window = (
        max(min(b[0] for b in boxes) - 1, 0),
        min(max(b[1] for b in boxes) + 2, h),
        max(min(b[2] for b in boxes) - 1, 0),
        min(max(b[3] for b in boxes) + 2, w),
    )
    pred = rle_runs.paint(*pp, window)
    gt = rle_runs.paint(*gp, window)
    iou = masks.mask_iou(pred, gt, eps=IOU_EPS)
    y0, _, x0, _ = window
    # each mask's boundary lies in its box grown by one pixel up and left (window coordinates)
    near = [
        None if b is None else (b[0] - 1 - y0, b[1] - y0, b[2] - 1 - x0, b[3] - x0)
        for b in (pbox, gbox)
    ]
    shape = _boundary_f_near(pred, gt, near[0], near[1], boundary_radius(h, w))
    return iou, shape, location


def _boundary_f_near(pred: np.ndarray, gt: np.ndarray, pbox, gbox, radius: float) -> float:
    """`boundary_f_at_radius`, each dilation done only where it is counted: the pixels of one
    boundary near the other are looked for in the box of the first that lies within the
    kernel's reach of the box of the second (boxes (y0, y1, x0, x1) inclusive that hold each
    boundary; none: no boundary). Far apart masks need no dilation at all."""
    pred_b = boundary_map(pred)
    gt_b = boundary_map(gt)
    n_pred = int(np.count_nonzero(pred_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kernel = _disk(radius)
    precision = _hits(pred_b, pbox, gt_b, gbox, kernel) / float(n_pred)
    recall = _hits(gt_b, gbox, pred_b, pbox, kernel) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _hits(a: np.ndarray, abox, b: np.ndarray, bbox, kernel: np.ndarray) -> int:
    """count_nonzero(a & (cv2.dilate(b, kernel) > 0)), computed on the part of a's box within
    reach of b's box (reach: the kernel's size, more than its radius whatever its anchor)."""
    reach = kernel.shape[0]
    h, w = a.shape
    y0, y1 = max(abox[0], bbox[0] - reach, 0), min(abox[1], bbox[1] + reach, h - 1)
    x0, x1 = max(abox[2], bbox[2] - reach, 0), min(abox[3], bbox[3] + reach, w - 1)
    if y0 > y1 or x0 > x1:
        return 0
    cy0, cy1 = max(y0 - reach, 0), min(y1 + reach, h - 1)
    cx0, cx1 = max(x0 - reach, 0), min(x1 + reach, w - 1)
    crop = np.ascontiguousarray(b[cy0 : cy1 + 1, cx0 : cx1 + 1]).astype(np.uint8)
    near = cv2.dilate(crop, kernel)[y0 - cy0 : y1 - cy0 + 1, x0 - cx0 : x1 - cx0 + 1] > 0
    return int(np.count_nonzero(a[y0 : y1 + 1, x0 : x1 + 1] & near))


def scores_chunk(_context: None, items: list[tuple[dict, dict | None, str]]) -> list:
    """`run_scores` of each visible item; an invisible one's prediction is only checked."""
    out = []
    for pred_rle, gt_rle, where in items:
        if gt_rle is None:
            rle_runs.runs_of(pred_rle, f"predictions: {where}")
            out.append(None)
        else:
            out.append(run_scores(pred_rle, gt_rle, where))
    return out
