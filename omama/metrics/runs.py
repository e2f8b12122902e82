"""The per-sample official metrics from RLEs, equal bit for bit to `omama.metrics.pixels`
on the decoded masks, without ever building a full-size mask (what `evaluate` runs)."""

from __future__ import annotations

import cv2
import numpy as np

from omama import rle_runs
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

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), inclusive


def run_scores(pred_rle: dict, gt_rle: dict, where: str) -> tuple[float, float, float]:
    """(IoU, contour accuracy, location error) of one visible sample from its RLEs: the
    prediction at the official size, the GT at its own size. Equal to `mask_iou`,
    `boundary_f_measure` and `location_error` on the decoded prediction and
    `resize_for_eval` of the decoded GT, without ever building a full-size mask:

    - the GT is nearest-resized as runs (`omama.rle_runs.resize_pieces`, cv2's sampling);
    - the centres come from the bounding boxes of the runs, the areas from their lengths;
    - each mask is painted only in its own window, its box grown by one pixel (clipped to
      the image). Its boundary map there is the whole image's: a boundary pixel is in the
      mask or just above or left of it, and a pixel of the window's last row or column that
      is not the image's is background with background neighbours, as in the whole image;
    - the intersection is counted on the overlap of the two boxes, and each boundary's
      pixels near the other boundary on the part of its box within the dilation's reach of
      the other's, with the whole image's radius; far apart masks need no dilation at all.
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
    if pbox is None and gbox is None:  # an empty union and no boundary
        return 1.0, 1.0, location
    pred, gt = _Painted(pp, pbox, h, w), _Painted(gp, gbox, h, w)
    inter = 0
    if pbox is not None and gbox is not None:
        overlap = _meet(pbox, gbox)
        if overlap is not None:
            inter = int(np.count_nonzero(pred.part(overlap) & gt.part(overlap)))
    union = pred.area + gt.area - inter
    iou = 1.0 if union == 0 else float(inter / (union + IOU_EPS))
    if pred.n_edge == 0 and gt.n_edge == 0:
        return iou, 1.0, location
    if pred.n_edge == 0 or gt.n_edge == 0:
        return iou, 0.0, location
    kernel = _disk(boundary_radius(h, w))
    precision = _hits(pred, gt, kernel, h, w) / float(pred.n_edge)
    recall = _hits(gt, pred, kernel, h, w) / float(gt.n_edge)
    if precision + recall == 0:
        return iou, 0.0, location
    return iou, float(2 * precision * recall / (precision + recall)), location


class _Painted:
    """One mask painted in its window, its area, boundary map and the box that holds it."""

    def __init__(self, pieces, box: Box | None, h: int, w: int) -> None:
        col, r0, r1 = pieces
        self.area = int((r1 - r0).sum())
        self.n_edge = 0
        if box is None:
            return
        y0, y1, x0, x1 = box
        self.win = (max(y0 - 1, 0), min(y1 + 2, h), max(x0 - 1, 0), min(x1 + 2, w))
        self.mask = rle_runs.paint(col, r0, r1, self.win)
        self.edge = boundary_map(self.mask)
        self.n_edge = int(np.count_nonzero(self.edge))
        self.edge_box = (max(y0 - 1, 0), y1, max(x0 - 1, 0), x1)

    def part(self, region: Box, edge: bool = False) -> np.ndarray:
        """The mask (or boundary) on `region`, zero outside the window."""
        src = self.edge if edge else self.mask
        ry0, ry1, rx0, rx1 = region
        out = np.zeros((ry1 - ry0 + 1, rx1 - rx0 + 1), np.uint8)
        wy0, wy1, wx0, wx1 = self.win
        oy0, oy1, ox0, ox1 = max(ry0, wy0), min(ry1 + 1, wy1), max(rx0, wx0), min(rx1 + 1, wx1)
        if oy0 < oy1 and ox0 < ox1:
            out[oy0 - ry0 : oy1 - ry0, ox0 - rx0 : ox1 - rx0] = src[
                oy0 - wy0 : oy1 - wy0, ox0 - wx0 : ox1 - wx0
            ]
        return out


def _meet(a: Box, b: Box) -> Box | None:
    y0, y1, x0, x1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return None if y0 > y1 or x0 > x1 else (y0, y1, x0, x1)


def _grow(box: Box, by: int, h: int, w: int) -> Box:
    return (
        max(box[0] - by, 0),
        min(box[1] + by, h - 1),
        max(box[2] - by, 0),
        min(box[3] + by, w - 1),
    )


def _hits(a: _Painted, b: _Painted, kernel: np.ndarray, h: int, w: int) -> int:
    """count_nonzero(edge_a & (cv2.dilate(edge_b, kernel) > 0)) over the whole image, counted
    on the part of a's boundary box within reach of b's (reach: the kernel's size, more than
    its radius whatever its anchor)."""
    reach = kernel.shape[0]
    region = _meet(a.edge_box, _grow(b.edge_box, reach, h, w))
    if region is None:
        return 0
    crop = _grow(region, reach, h, w)
    near = cv2.dilate(b.part(crop, edge=True), kernel)
    ry0, ry1, rx0, rx1 = region
    near = near[ry0 - crop[0] : ry1 - crop[0] + 1, rx0 - crop[2] : rx1 - crop[2] + 1] > 0
    return int(np.count_nonzero(a.part(region, edge=True).view(bool) & near))


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
