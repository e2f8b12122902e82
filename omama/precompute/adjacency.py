"""Candidate-mask adjacency from a Delaunay triangulation of mask centroids.

Used to draw "hard" negatives next to the anchor candidate during training (docs/reference.md,
Training sample).

Difference from the O-MaMa reference (get_adj_matrix): the reference drops empty candidate masks
from the centroid list and then writes the triangulation's vertex numbers straight into the
N x N matrix, so every candidate after an empty one is shifted onto the wrong index. Here the
triangulation runs over the valid centroids only and its vertices are mapped back to the
ORIGINAL candidate indices; rows and columns of empty masks are all False.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy.spatial import Delaunay, QhullError

from omama.masks import row_col_counts

log = logging.getLogger(__name__)


def mask_centroids(
    masks: np.ndarray | torch.Tensor, counts: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (mean y, mean x of the mask pixels) of [N, H, W] masks, without a pixel loop.

    Returns (centroids float64 [N, 2] as (y, x), valid bool [N]); an empty mask is not valid
    and gets centroid (0, 0). `counts`: the masks' `row_col_counts`, when already taken.
    """
    m = (masks != 0).cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {m.shape}")
    n, h, w = m.shape
    rows, cols = row_col_counts(m) if counts is None else counts  # [N, H], [N, W] pixels
    area = rows.sum(axis=1)
    valid = area > 0
    ys = rows @ np.arange(h, dtype=np.int64)
    xs = cols @ np.arange(w, dtype=np.int64)
    cent = np.zeros((n, 2), dtype=np.float64)
    denom = np.maximum(area, 1).astype(np.float64)
    cent[:, 0] = np.where(valid, ys / denom, 0.0)
    cent[:, 1] = np.where(valid, xs / denom, 0.0)
    return cent, valid


def _triangulate(points: np.ndarray) -> Delaunay | None:
    """Delaunay of 2-D points; degenerate sets are retried once with Qhull's joggle ("QJ").

    Qhull's joggle uses a fixed seed, so the retry is deterministic. If the joggled input still
    fails (e.g. exactly three collinear points, which leave too few lifted points) return None:
    the caller then reports no adjacency at all.
    """
    try:
        return Delaunay(points)
    except QhullError:
        pass
    try:
        return Delaunay(points, qhull_options="QJ")
    except QhullError:
        log.debug("Delaunay failed even with joggle for %d points; no adjacency", len(points))
        return None


def delaunay_adjacency(centroids: np.ndarray, valid: np.ndarray, order: int = 2) -> np.ndarray:
    """bool [N, N] adjacency of candidates from the Delaunay triangulation of valid centroids.

    order 1: A[i, j] for triangulation neighbours. order k: (A + A^2 + ... + A^k) > 0, so for
    order >= 2 the diagonal is True for every valid vertex with a neighbour (as in the
    reference's squared matrix). Fewer than 3 valid centroids: all False.
    Degenerate sets: duplicated centroids are left out of the triangulation by Qhull (the
    duplicate has no neighbours); sets Qhull rejects (all collinear, all coincident) are retried
    with the "QJ" joggle option, deterministically; if that fails too the result is all False.
    Indices refer to the ORIGINAL candidates (see the module docstring).
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    cent = np.asarray(centroids, dtype=np.float64).reshape(-1, 2)
    ok = np.asarray(valid, dtype=bool).reshape(-1)
    if ok.shape[0] != cent.shape[0]:
        raise ValueError(f"{cent.shape[0]} centroids but {ok.shape[0]} valid flags")
    n = cent.shape[0]
    adj = np.zeros((n, n), dtype=bool)
    idx = np.flatnonzero(ok)
    if idx.size < 3:
        return adj
    tri = _triangulate(cent[idx])
    if tri is None:
        return adj
    indptr, neigh = tri.vertex_neighbor_vertices
    k = idx.size
    counts = np.diff(indptr[: k + 1])
    src = np.repeat(np.arange(k), counts)
    dst = np.asarray(neigh[: indptr[k]], dtype=np.int64)
    keep = dst < k  # guard against any auxiliary Qhull vertex
    a = np.zeros((k, k), dtype=bool)
    a[src[keep], dst[keep]] = True
    a |= a.T  # the triangulation graph is undirected
    reach = a.copy()
    power = a.copy()
    ai = a.astype(np.int64)
    for _ in range(order - 1):
        power = (power.astype(np.int64) @ ai) > 0
        reach |= power
    adj[np.ix_(idx, idx)] = reach
    return adj


def candidate_adjacency(
    masks: np.ndarray | torch.Tensor,
    order: int = 2,
    counts: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """mask_centroids + delaunay_adjacency: bool [N, N] adjacency of [N, H, W] candidate masks
    (`counts`: their `row_col_counts`, when already taken)."""
    cent, valid = mask_centroids(masks, counts)
    return delaunay_adjacency(cent, valid, order=order)
