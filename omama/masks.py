"""Numpy-only geometry of 0/1 masks that every stage shares: tight boxes and mask IoU.

Base level (no torch, no omama imports): the synthetic generator, precompute and the metrics
all use these one definitions.
"""

from __future__ import annotations

import numpy as np


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """[N, H, W] masks -> float32 [N, 4] (x_min, y_min, x_max - x_min, y_max - y_min).

    The width and height have no +1; an empty mask gives zeros.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {m.shape}")
    m = m != 0
    rows = m.any(axis=2)  # [N, H]
    cols = m.any(axis=1)  # [N, W]
    valid = rows.any(axis=1)
    H, W = m.shape[1], m.shape[2]
    y0 = rows.argmax(axis=1)
    y1 = H - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = W - 1 - cols[:, ::-1].argmax(axis=1)
    out = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)
    out[~valid] = 0
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
