"""The host side's faster mask paths (BENCHMARKS.md, "Precompute host work vs its floor") give
exactly what the plain numpy code they replace gave: row/column counts and centroids of candidate
masks, and the COCO RLE strings of the candidate and prediction masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from omama import rle
from omama.dataset.candidates import _as_binary_uint8
from omama.dataset.images import resize_mask
from omama.errors import OmamaError
from omama.masks import count_boxes, row_col_counts
from omama.precompute.adjacency import candidate_adjacency, mask_centroids


def plain_counts(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The former path: a bool copy of the stack, numpy sums."""
    m = np.asarray(masks) != 0
    return m.sum(axis=2, dtype=np.int64), m.sum(axis=1, dtype=np.int64)


def plain_centroids(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean y and mean x of the nonzero pixels, one mask at a time; (0, 0) when empty."""
    cent = np.zeros((len(masks), 2))
    valid = np.zeros(len(masks), dtype=bool)
    for i, m in enumerate(np.asarray(masks)):
        ys, xs = np.nonzero(m)
        if len(ys):
            valid[i] = True
            cent[i] = (ys.sum() / len(ys), xs.sum() / len(xs))
    return cent, valid


def plain_encode(mask: np.ndarray) -> dict:
    """The former rle.encode: uint8 copy, numpy Fortran copy, pycocotools."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode()}


def random_masks(n: int, h: int, w: int, dtype: type = np.uint8) -> np.ndarray:
    """Blobs of random rectangles, some empty, one full; values 0/1."""
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        if i % 7 == 3:
            continue  # empty
        if i % 11 == 5:
            masks[i] = 1
            continue
        for _ in range(np.random.randint(1, 4)):
            y0, x0 = np.random.randint(0, h), np.random.randint(0, w)
            y1, x1 = y0 + np.random.randint(1, h + 1), x0 + np.random.randint(1, w + 1)
            masks[i, y0:y1, x0:x1] = 1
    return masks.astype(dtype)


@pytest.mark.parametrize("hw", [(700, 700), (532, 952), (1, 9), (9, 1), (13, 17)])
def test_row_col_counts_match_numpy(hw):
    masks = random_masks(23, *hw)
    mixed = masks * np.random.randint(0, 256, size=masks.shape).astype(np.uint8)
    for m in (masks, masks.astype(bool), mixed, masks[:, ::-1, ::2], masks.astype(np.int32)):
        got_rows, got_cols = row_col_counts(m)
        want_rows, want_cols = plain_counts(m)
        assert got_rows.dtype == np.int64 and got_cols.dtype == np.int64
        np.testing.assert_array_equal(got_rows, want_rows)
        np.testing.assert_array_equal(got_cols, want_cols)


def test_row_col_counts_empty_stacks():
    for shape in [(0, 5, 7), (3, 0, 7), (3, 5, 0)]:
        rows, cols = row_col_counts(np.zeros(shape, dtype=np.uint8))
        assert rows.shape == (shape[0], shape[1]) and cols.shape == (shape[0], shape[2])
        assert not rows.any() and not cols.any()
    with pytest.raises(ValueError):
        row_col_counts(np.zeros((4, 4), dtype=np.uint8))


def test_centroids_and_adjacency_unchanged():
    masks = random_masks(60, 200, 350)
    want_cent, want_valid = plain_centroids(masks)
    for m in (masks, masks.astype(bool), torch.from_numpy(masks), masks * 3):
        cent, valid = mask_centroids(m)
        np.testing.assert_array_equal(valid, want_valid)
        np.testing.assert_allclose(cent, want_cent, rtol=0, atol=1e-9)
    # byte-identical to the former numpy path (same integer sums, same division)
    rows, cols = plain_counts(masks)
    counts = rows.sum(axis=1)
    denom = np.maximum(counts, 1).astype(np.float64)
    cent, _ = mask_centroids(masks)
    np.testing.assert_array_equal(
        cent[:, 0], np.where(counts > 0, rows @ np.arange(200) / denom, 0)
    )
    np.testing.assert_array_equal(
        cent[:, 1], np.where(counts > 0, cols @ np.arange(350) / denom, 0)
    )
    adj = candidate_adjacency(masks)
    assert adj.shape == (60, 60) and adj.any()


@pytest.mark.parametrize("hw", [(700, 700), (532, 952), (1, 1), (1, 9), (9, 1), (13, 17)])
def test_rle_encode_matches_former_path(hw):
    masks = random_masks(9, *hw)
    for m in list(masks) + [masks[0].astype(bool), masks[1][::-1], masks[2].astype(np.float32)]:
        got = rle.encode(m)
        assert got == plain_encode(m)
        np.testing.assert_array_equal(rle.decode(got), np.asarray(m).astype(np.uint8))


def small_blobs(n: int, h: int, w: int) -> np.ndarray:
    """Masks whose box is a small part of the image (the boxed path): blobs, strips as tall
    or as wide as the image, single pixels, corners, empty."""
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        kind = i % 6
        y, x = np.random.randint(0, h), np.random.randint(0, w)
        if kind == 0:  # a blob with holes
            blob = np.random.rand(min(h - y, 25), min(w - x, 25)) < 0.6
            masks[i, y : y + blob.shape[0], x : x + blob.shape[1]] = blob
        elif kind == 1:  # a column strip as tall as the image: runs go on across columns
            masks[i, :, x : x + 3] = 1
        elif kind == 2:  # a row strip as wide as the image
            masks[i, y : y + 2, :] = 1
        elif kind == 3:  # one pixel
            masks[i, y, x] = 1
        elif kind == 4:  # the last pixels of the image, then the first
            masks[i, -3:, -2:] = 1
            masks[i, :2, :1] = 1
    return masks


@pytest.mark.parametrize("hw", [(700, 700), (532, 952), (1, 1), (1, 9), (9, 1), (40, 3)])
def test_rle_encode_boxed_matches_encode(hw):
    masks = np.concatenate([small_blobs(24, *hw), random_masks(6, *hw)])
    for m in list(masks) + [masks[0].astype(bool), masks[1][::-1]]:
        assert rle.encode_boxed(m) == rle.encode(m)


def test_count_boxes_are_bounding_rects_and_feed_the_same_rles():
    masks = np.concatenate([small_blobs(24, 300, 200), random_masks(6, 300, 200)])
    counts = row_col_counts(masks)
    boxes = count_boxes(*counts)
    for m, box in zip(masks, boxes, strict=True):
        assert tuple(box) == cv2.boundingRect(m)
        assert rle.encode_boxed(m, box) == rle.encode(m)
    cent, valid = mask_centroids(masks)
    cent2, valid2 = mask_centroids(masks, counts)
    np.testing.assert_array_equal(cent, cent2)
    np.testing.assert_array_equal(valid, valid2)


def test_rle_encode_empty_mask():
    assert rle.encode(np.zeros((0, 5), dtype=np.uint8)) == plain_encode(
        np.zeros((0, 5), dtype=np.uint8)
    )


@pytest.mark.parametrize(
    "src,dst",
    [
        ((1408, 1408), (700, 700)),
        ((2160, 3840), (532, 952)),
        ((3840, 2160), (532, 952)),
        ((704, 704), (700, 700)),
        ((37, 53), (101, 29)),
        ((5, 7), (5, 6)),
    ],
)
def test_resize_mask_column_major_is_the_same_resize(src, dst):
    """An RLE decodes column-major; its resize (via the transpose) equals OpenCV's resize of
    the same mask laid out row-major."""
    for _ in range(3):
        m = random_masks(1, *src)[0] * np.random.randint(0, 2, size=src).astype(np.uint8)
        decoded = rle.decode(plain_encode(m))
        assert decoded.flags.f_contiguous and not decoded.flags.c_contiguous
        want = cv2.resize(np.ascontiguousarray(m), dst[::-1], interpolation=cv2.INTER_NEAREST)
        got = resize_mask(decoded, dst)
        assert got.flags.c_contiguous and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(resize_mask(m, dst), want)


def test_binary_check_of_candidate_masks():
    """Unsigned masks are checked with one pass (no minimum); the verdicts are unchanged."""
    where = Path("m.npz")
    masks = random_masks(5, 13, 17)
    for dtype in (np.uint8, np.uint16, np.int8, np.int64, np.float32, bool):
        got = _as_binary_uint8(masks.astype(dtype), where)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, masks)
    for bad in (masks.astype(np.uint16) * 2, masks.astype(np.int8) - 1, masks * 255):
        with pytest.raises(OmamaError, match="other than 0 and 1"):
            _as_binary_uint8(bad, where)
