"""The per-sample Ego-Exo4D correspondence metrics on pixel masks: the plain statement of
each, with the official evaluator's quirks (see `omama.metrics.official`, which scores a
whole file with the equal run-level forms of `omama.metrics.runs`)."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from omama import masks
from omama.constants import OFFICIAL_MAX_SIDE
from omama.errors import OmamaError
from omama.metrics.validate import eval_size

BOUND_TH = 0.008
# The official location error divides by the diagonal of a fixed 480x480 frame.
LOCATION_NORM = math.sqrt(OFFICIAL_MAX_SIDE**2 + OFFICIAL_MAX_SIDE**2)
# db_eval_iou adds this to the union before dividing.
IOU_EPS = 1e-7

# --------------------------------------------------------------------------------------------
# Sizes


def resize_for_eval(mask: np.ndarray) -> np.ndarray:
    """Resize a (GT) mask to the evaluation size: cv2 nearest, as the official tool does."""
    m = np.ascontiguousarray(mask)
    if m.dtype == bool:
        m = m.astype(np.uint8)
    h, w = m.shape[:2]
    new_h, new_w = eval_size(h, w)
    return cv2.resize(m, (new_w, new_h), interpolation=cv2.INTER_NEAREST)


# --------------------------------------------------------------------------------------------
# Per-sample metrics


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise OmamaError(f"prediction mask is {pred.shape[:2]}, GT mask is {gt.shape[:2]}")


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Jaccard index with the official epsilon: inter / (union + 1e-7); an empty union gives 1."""
    _check_same_shape(pred, gt)
    return masks.mask_iou(pred, gt, eps=IOU_EPS)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask (the DAVIS / Berkeley ``seg2bmap`` convention).

    A pixel is on the boundary when it differs from its right, lower or lower-right
    neighbour (pixels outside the image count as background). On the last row only the right
    neighbour is compared, on the last column only the lower one, and the bottom-right corner
    is never a boundary pixel.
    """
    m = np.asarray(mask).astype(bool)
    h, w = m.shape
    right = np.zeros_like(m)
    right[:, : w - 1] = m[:, 1:]
    down = np.zeros_like(m)
    down[: h - 1, :] = m[1:, :]
    diag = np.zeros_like(m)
    diag[: h - 1, : w - 1] = m[1:, 1:]
    bmap = (m != right) | (m != down) | (m != diag)
    bmap[h - 1, :] = m[h - 1, :] != right[h - 1, :]
    bmap[:, w - 1] = m[:, w - 1] != down[:, w - 1]
    bmap[h - 1, w - 1] = False
    return bmap


@functools.lru_cache(maxsize=16)
def _disk(radius: float) -> np.ndarray:
    """Structuring element: offsets (dy, dx) on the grid -r..r with dx^2 + dy^2 <= r^2."""
    offsets = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (dx * dx + dy * dy <= radius * radius).astype(np.uint8)


def boundary_radius(h: int, w: int, bound_th: float = BOUND_TH) -> float:
    """Dilation radius of the contour accuracy: ``bound_th`` pixels when >= 1, else
    ``ceil(bound_th * diagonal)`` of the h x w image."""
    return bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """DAVIS contour accuracy F between the boundaries of `pred` and `gt`.

    Tolerance: ``bound_th`` pixels when >= 1, else ``ceil(bound_th * image diagonal)``.
    Edge cases as DAVIS: both boundaries empty -> 1; exactly one empty -> 0.
    """
    _check_same_shape(pred, gt)
    h, w = np.asarray(pred).shape[:2]
    return boundary_f_at_radius(pred, gt, boundary_radius(h, w, bound_th))


def boundary_f_at_radius(pred: np.ndarray, gt: np.ndarray, radius: float) -> float:
    """`boundary_f_measure` with the dilation radius given (that of the whole image when
    `pred` and `gt` are a window of it that holds every boundary pixel of both)."""
    pred_b = boundary_map(pred)
    gt_b = boundary_map(gt)
    n_pred = int(np.count_nonzero(pred_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kernel = _disk(radius)
    pred_near = cv2.dilate(pred_b.astype(np.uint8), kernel) > 0
    gt_near = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    precision = np.count_nonzero(pred_b & gt_near) / float(n_pred)
    recall = np.count_nonzero(gt_b & pred_near) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def bbox_centre(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) integer centre of the mask's bounding box, as the official location score has it.

    Non-empty: ((x_min + x_max) // 2, (y_min + y_max) // 2). Empty: (H // 2, W // 2) with H the
    height and W the width (sic: the official code's padded-image trick swaps them).
    """
    m = np.asarray(mask).astype(bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return box_centre(None, *m.shape)
    cols = np.flatnonzero(m.any(axis=0))
    return box_centre((int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])), *m.shape)


def box_centre(box: tuple[int, int, int, int] | None, h: int, w: int) -> tuple[int, int]:
    """`bbox_centre` from the box (y_min, y_max, x_min, x_max) of an h x w mask, None: empty."""
    if box is None:
        return h // 2, w // 2
    y0, y1, x0, x1 = box
    return (x0 + x1) // 2, (y0 + y1) // 2


def centre_distance(p: tuple[int, int], g: tuple[int, int]) -> float:
    """The location error of two bbox centres: distance over sqrt(480^2 + 480^2)."""
    dx, dy = g[0] - p[0], g[1] - p[1]
    return float(math.sqrt(dx * dx + dy * dy) / LOCATION_NORM)


def location_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Distance of the bbox centres of pred and gt over sqrt(480^2 + 480^2); lower is better."""
    _check_same_shape(pred, gt)
    return centre_distance(bbox_centre(pred), bbox_centre(gt))
