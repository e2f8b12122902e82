"""Centroids and Delaunay adjacency vs hand-made point sets and a plain simplex-edge oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay

from omama.precompute.adjacency import candidate_adjacency, delaunay_adjacency, mask_centroids


@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)


def blob_masks(points_yx, h=64, w=64, empty_at=()):
    """3x3 blobs centred on integer points; all-zero masks inserted at the given final indices."""
    total = len(points_yx) + len(empty_at)
    masks = np.zeros((total, h, w), dtype=np.uint8)
    it = iter(points_yx)
    for i in range(total):
        if i in empty_at:
            continue
        y, x = next(it)
        masks[i, y - 1 : y + 2, x - 1 : x + 2] = 1
    return masks


# Square corners and centre: 0 TL, 1 TR, 2 BR, 3 BL, 4 centre. The centre breaks the square's
# co-circular tie, so the triangulation is unique: four triangles around the centre.
SQUARE = [(10, 10), (10, 50), (50, 50), (50, 10), (30, 30)]


def expected_square_order1():
    a = np.zeros((5, 5), dtype=bool)
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 0), (0, 4), (1, 4), (2, 4), (3, 4)]:
        a[i, j] = a[j, i] = True
    return a


def test_square_and_centre_order1_and_order2():
    masks = blob_masks(SQUARE)
    a1 = candidate_adjacency(masks, order=1)
    np.testing.assert_array_equal(a1, expected_square_order1())
    assert not a1[0, 2] and not a1[1, 3]  # opposite corners: not neighbours
    a2 = candidate_adjacency(masks, order=2)
    assert a2.dtype == bool
    assert a2[0, 2] and a2[1, 3]  # ... but two steps away through the centre
    assert np.all(np.diag(a2))  # the squared matrix puts each vertex on its own diagonal
    np.testing.assert_array_equal(a2, np.ones((5, 5), dtype=bool))


def test_empty_masks_keep_original_indices():
    empty_at = (0, 3, 7)
    masks = blob_masks(SQUARE, empty_at=empty_at)
    where = [i for i in range(len(masks)) if i not in empty_at]  # original index of each point
    a1 = candidate_adjacency(torch.from_numpy(masks), order=1)
    want = np.zeros((8, 8), dtype=bool)
    sq = expected_square_order1()
    for i in range(5):
        for j in range(5):
            want[where[i], where[j]] = sq[i, j]
    np.testing.assert_array_equal(a1, want)
    a2 = candidate_adjacency(masks, order=2)
    for e in empty_at:
        assert not a2[e].any() and not a2[:, e].any()


def test_mask_centroids_vs_loop(rng):
    masks = (rng.random((12, 30, 40)) < 0.1).astype(np.uint8)
    masks[4] = 0
    masks[9] = 0
    masks[6, 5, 7] = 1
    cent, valid = mask_centroids(masks)
    assert cent.dtype == np.float64 and valid.dtype == bool
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        assert valid[i] == (len(ys) > 0)
        if len(ys):
            np.testing.assert_allclose(cent[i], [ys.mean(), xs.mean()], rtol=0, atol=1e-12)
    c2, v2 = mask_centroids(torch.from_numpy(masks).bool())
    np.testing.assert_array_equal(c2, cent)
    np.testing.assert_array_equal(v2, valid)


def oracle_adjacency(points, valid, order):
    """Edges from every triangle's vertex pairs (independent of vertex_neighbor_vertices)."""
    n = len(points)
    idx = [i for i in range(n) if valid[i]]
    a = np.zeros((n, n), dtype=np.float64)
    tri = Delaunay(points[idx])
    for simplex in tri.simplices:
        for p in simplex:
            for q in simplex:
                if p != q:
                    a[idx[p], idx[q]] = 1
    if order == 1:
        return a > 0
    return (a + a @ a) > 0


@pytest.mark.parametrize("order", [1, 2])
def test_random_points_vs_simplex_oracle(rng, order):
    n = 40
    points = rng.random((n, 2)) * 500
    valid = rng.random(n) > 0.2
    got = delaunay_adjacency(points, valid, order=order)
    np.testing.assert_array_equal(got, oracle_adjacency(points, valid, order))
    np.testing.assert_array_equal(got, got.T)


def test_order3_is_three_steps():
    points = np.array([[0, 0], [0, 10], [0, 20], [0, 30], [1, 5], [1, 15], [1, 25]], float)
    valid = np.ones(7, dtype=bool)
    a1 = delaunay_adjacency(points, valid, order=1).astype(int)
    want = (a1 + a1 @ a1 + a1 @ a1 @ a1) > 0
    np.testing.assert_array_equal(delaunay_adjacency(points, valid, order=3), want)
    with pytest.raises(ValueError):
        delaunay_adjacency(points, valid, order=0)


def test_fewer_than_three_valid():
    masks = blob_masks([(10, 10), (40, 40)], empty_at=(1, 2))
    assert not candidate_adjacency(masks).any()
    assert candidate_adjacency(masks).shape == (4, 4)
    assert candidate_adjacency(np.zeros((0, 8, 8))).shape == (0, 0)
    assert not candidate_adjacency(np.zeros((3, 8, 8))).any()


def test_collinear_points_are_handled_deterministically():
    points = np.array([[0, 0], [10, 10], [20, 20], [30, 30], [50, 50], [0, 0]], float)
    valid = np.array([True, True, True, True, True, False])
    a = delaunay_adjacency(points, valid, order=1)
    b = delaunay_adjacency(points.copy(), valid.copy(), order=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, a.T)
    assert not a[5].any() and not a[:, 5].any()
    # consecutive points along the line are always neighbours in the joggled triangulation
    for i in range(4):
        assert a[i, i + 1]
    # exactly three collinear points: Qhull fails even joggled -> no adjacency (documented)
    three = np.array([[0, 0], [5, 5], [10, 10]], float)
    assert not delaunay_adjacency(three, np.ones(3, bool)).any()


def test_duplicate_centroids_do_not_raise():
    points = np.array([[0, 0], [0, 10], [10, 0], [10, 10], [10, 10]], float)
    a = delaunay_adjacency(points, np.ones(5, bool), order=1)
    np.testing.assert_array_equal(a, a.T)
    assert a[:4, :4].sum() > 0
    all_same = np.zeros((4, 2))
    c = delaunay_adjacency(all_same, np.ones(4, bool), order=2)
    np.testing.assert_array_equal(c, delaunay_adjacency(all_same, np.ones(4, bool), order=2))
