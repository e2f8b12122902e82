"""Imperfect candidate masks, as FastSAM proposes them, for one destination image.

Each visible object gets one imperfect copy (eroded, dilated or shifted; IoU about 0.6-0.9,
never the exact ground truth) among distractors: background regions cut from the label map,
random blobs, object parts, merges of two objects and the occluders themselves.
"""

from __future__ import annotations

import cv2
import numpy as np

from omama.masks import mask_iou


def _roi(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    h, w = mask.shape
    return (
        slice(max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)),
        slice(max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)),
    )


def _disk(k: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))


def _shifted(m: np.ndarray, dx: float, dy: float) -> np.ndarray:
    t = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    return cv2.warpAffine(m, t, (m.shape[1], m.shape[0]), flags=cv2.INTER_NEAREST)


def perturb_mask(
    gt: np.ndarray, rng: np.random.Generator, lo: float = 0.6, hi: float = 0.9
) -> np.ndarray:
    """An imperfect copy of `gt` (eroded, dilated or shifted) with IoU near U(lo, hi), != gt."""
    target = rng.uniform(lo, hi)
    area = int(gt.sum())
    margin = 4 + int(np.sqrt(area))
    sl = _roi(gt, margin)
    g = np.ascontiguousarray(gt[sl])
    kind = str(rng.choice(["erode", "dilate", "shift", "shift_dilate"]))
    direction = rng.uniform(0, 2 * np.pi)
    if kind == "erode":
        dist = cv2.distanceTransform(g, cv2.DIST_L2, 5)
    elif kind == "dilate":
        dist = cv2.distanceTransform(1 - g, cv2.DIST_L2, 5)
    best, best_err = None, 1e9
    for k in range(1, margin):
        if kind == "erode":
            m = (dist > k).astype(np.uint8)
        elif kind == "dilate":
            m = (dist <= k).astype(np.uint8)
        elif kind == "shift":
            m = _shifted(g, k * np.cos(direction), k * np.sin(direction))
        else:
            m = cv2.dilate(_shifted(g, k * np.cos(direction), k * np.sin(direction)), _disk(1))
        iou = mask_iou(m, g)
        if lo - 0.05 <= iou <= min(hi + 0.05, 0.97) and abs(iou - target) < best_err:
            best, best_err = m, abs(iou - target)
        if iou < target:
            break
    if best is None:  # thin or tiny masks: flip boundary pixels instead
        best = g.copy()
        inner = np.argwhere(g.astype(bool) & ~cv2.erode(g, _disk(1)).astype(bool))
        outer = np.argwhere(cv2.dilate(g, _disk(1)).astype(bool) & ~g.astype(bool))
        n_change = max(1, int(area * (1 - target) / 2))
        for idx in rng.permutation(len(inner))[: min(len(inner) - 1, n_change)]:
            best[tuple(inner[idx])] = 0
        for idx in rng.permutation(len(outer))[: min(len(outer), n_change)]:
            best[tuple(outer[idx])] = 1
    out = np.zeros_like(gt)
    out[sl] = best
    return out


def _part(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A piece of an object cut by a random line (20-45 % of its area)."""
    ys, xs = np.nonzero(gt)
    a = rng.uniform(0, 2 * np.pi)
    proj = xs * np.cos(a) + ys * np.sin(a)
    cut = np.quantile(proj, rng.uniform(0.55, 0.8))
    out = np.zeros_like(gt)
    keep = proj > cut
    out[ys[keep], xs[keep]] = 1
    return out


def _blob(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    m = np.zeros(hw, np.uint8)
    c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
    s = min(h, w)
    if rng.random() < 0.5:
        ax = (max(2, int(rng.uniform(0.03, 0.2) * s)), max(2, int(rng.uniform(0.03, 0.2) * s)))
        cv2.ellipse(m, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = int(rng.integers(3, 8))
        pts = np.array(c) + rng.normal(0, rng.uniform(0.03, 0.15) * s, size=(n, 2))
        cv2.fillPoly(m, [cv2.convexHull(pts.astype(np.int32))], 1)
    return m


def make_candidates(
    rng: np.random.Generator,
    gts: list[np.ndarray],
    objects_any: np.ndarray,
    labels: np.ndarray,
    occluders: list[np.ndarray],
    n_range: tuple[int, int],
) -> np.ndarray:
    """FastSAM-like proposals of one destination image at crop size, N x H x W uint8 0/1.

    `gts`: crop-size masks of the visible objects; `objects_any`: every object pixel (visible
    or not); `labels`: background region labels at crop size; `occluders`: hand / pillar masks.
    """
    hw = labels.shape
    min_px = max(6, int(0.0004 * hw[0] * hw[1]))
    n_target = int(rng.integers(n_range[0], n_range[1] + 1))
    out: list[np.ndarray] = []
    seen: set[bytes] = set()

    def add(m: np.ndarray) -> None:
        """Keep a proposal unless empty or a duplicate; never the exact ground truth."""
        m = m.astype(np.uint8)
        for g in gts:
            if np.array_equal(m, g):
                edge = np.argwhere(m.astype(bool) & ~cv2.erode(m, _disk(1)).astype(bool))
                m = m.copy()
                m[tuple(edge[int(rng.integers(len(edge)))])] = 0
        key = m.tobytes()
        if m.any() and key not in seen:
            seen.add(key)
            out.append(m)

    for g in gts:
        add(perturb_mask(g, rng))
    for g in gts:
        if rng.random() < 0.6 and g.sum() >= 4 * min_px:
            add(_part(g, rng))
    if len(gts) >= 2 and rng.random() < 0.7:
        i, j = rng.choice(len(gts), size=2, replace=False)
        add(cv2.dilate(gts[i] | gts[j], _disk(1)))
    for o in occluders:
        if o.sum() >= min_px:
            add(o)
    free = (objects_any == 0).astype(np.uint8)
    for o in occluders:
        free &= 1 - o
    # background regions: the label map's tiles, cut apart along their borders
    border = np.zeros(hw, bool)
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    border[1:, :] |= labels[1:, :] != labels[:-1, :]
    n_comp, comp, stats, _ = cv2.connectedComponentsWithStats(free & ~border, connectivity=4)
    areas = stats[1:, cv2.CC_STAT_AREA]
    regions = [1 + int(c) for c in np.flatnonzero((areas >= min_px) & (areas <= 0.35 * comp.size))]
    for idx in rng.permutation(len(regions)):
        if len(out) >= n_target - max(2, n_target // 5):
            break
        m = (comp == regions[idx]).astype(np.uint8)
        if rng.random() < 0.25 and m.sum() > 8 * min_px:
            m = _part(m, rng)
        elif rng.random() < 0.15 and gts:
            g = gts[int(rng.integers(len(gts)))]
            if m.sum() >= 0.5 * g.sum():  # a region merged with an object (IoU <= 2/3)
                m = m | g
        add(m)
    while len(out) < n_target:
        m = _blob(rng, hw)
        if rng.random() < 0.5:
            m &= free
        if m.sum() >= min_px:
            add(m)
    order = rng.permutation(len(out))
    return np.stack([out[i] for i in order])
