"""Geometry of 0/1 masks that every stage shares: tight boxes, mask IoU, row/column counts.

Base level (numpy and OpenCV, no torch, no omama imports): the synthetic generator,
precompute and the metrics all use these one definitions.
"""

from __future__ import annotations

import cv2
import numpy as np


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """[N, H, W] masks -> float32 [N, 4] (x_min, y_min, x_max - x_min, y_max - y_min).

    The width and height have no +1; an empty mask gives zeros.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {m.shape}")
    m = m != 0
    out = count_boxes(m.any(axis=2), m.any(axis=1)).astype(np.float32)
    out[:, 2:] = np.maximum(out[:, 2:] - 1, 0)  # pixel counts -> extents; empty stays 0
    return out


def mask_iou(a: np.ndarray, b: np.ndarray, eps: float = 0.0) -> float:
    """Jaccard index inter / (union + eps) of two same-shape 0/1 masks; an empty union gives 1."""
    a = np.asarray(a).astype(bool)
    b = np.asarray(b).astype(bool)
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    inter = int(np.count_nonzero(a & b))
    return float(inter / (union + eps))


def row_col_counts(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero pixels per row (int64 [N, H]) and per column (int64 [N, W]) of [N, H, W] masks.

    The same integers as `(masks != 0).sum(axis=2)` and `.sum(axis=1)`, without the bool
    copy of the whole stack or numpy's slow uint8 -> int64 reduction: uint8 and bool masks
    are reduced by OpenCV one mask at a time, while it is in cache (clipped to 0/1 first
    when the stack holds other values); measured ~20x faster at 700x700 with 60-200 masks.
    Other dtypes take the numpy route.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {m.shape}")
    n, h, w = m.shape
    binary = m.dtype == np.bool_
    if not (binary or m.dtype == np.uint8) or h == 0 or w == 0:
        b = m != 0
        return b.sum(axis=2, dtype=np.int64), b.sum(axis=1, dtype=np.int64)
    clip = not binary and n > 0 and int(m.max()) > 1  # one fast pass; 0/1 masks need none
    m = m.view(np.uint8) if binary else m
    rows = np.empty((n, h), dtype=np.int64)
    cols = np.empty((n, w), dtype=np.int64)
    for i in range(n):
        one = np.ascontiguousarray(m[i])
        if clip:
            one = np.minimum(one, 1)  # nonzero -> 1
        rows[i] = cv2.reduce(one, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]
        cols[i] = cv2.reduce(one, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
    return rows, cols


def count_boxes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pixel boxes from `row_col_counts` (or any per-row and per-column occupancy): int64
    [N, 4] (x, y, w, h) as `cv2.boundingRect` gives them (w, h counting pixels, so +1 over
    `tight_boxes`); an empty mask gives zeros."""
    r, c = np.asarray(rows) > 0, np.asarray(cols) > 0
    h, w = r.shape[1], c.shape[1]
    y0, x0 = r.argmax(axis=1), c.argmax(axis=1)
    y1 = h - 1 - r[:, ::-1].argmax(axis=1)
    x1 = w - 1 - c[:, ::-1].argmax(axis=1)
    out = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1).astype(np.int64)
    out[~r.any(axis=1)] = 0
    return out
