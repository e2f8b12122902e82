"""COCO RLEs worked on as runs, never decoded to a full mask: parse, nearest resize, encode.

A COCO RLE lists the lengths of alternating background / foreground runs of the mask read in
column-major order (down each column, columns left to right), the first run background
(possibly 0 long). Here a mask is held as its foreground intervals ``[start, end)`` in that
flat order: for a 2160x3840 ground-truth mask of an object covering a few percent of the
frame that is ~1,000 intervals instead of 8.3 M pixels, so resizing it to the official
270x480 costs microseconds, not the ~10 ms of decoding, transposing and resizing the pixels.

Every result is equal to the pixel path it replaces (tests check it):

- `omama.rle.parse_counts` reads the compressed counts string exactly as pycocotools'
  ``rleFrString`` does;
- `resize_intervals` is ``cv2.resize(mask, (tw, th), interpolation=cv2.INTER_NEAREST)``: a
  nearest resize picks one source row per target row and one source column per target
  column, and `nearest_maps` asks cv2 itself which ones (resizing index images of the same
  size and dtype), so no rounding rule of cv2's is re-derived here;
- `intervals_to_rle` writes the runs ``pycocotools.mask.encode`` writes for the same mask
  (no zero-length run but a leading one), so the counts strings are byte for byte the same.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from omama import rle
from omama.errors import OmamaError
from omama.rle import parse_counts

_EMPTY = np.zeros(0, np.int64)


def runs_of(rle_dict: dict, where: str = "RLE") -> tuple[int, int, np.ndarray]:
    """(H, W, run lengths) of a JSON RLE, refused as `omama.rle.decode` refuses it (same
    messages: a bad RLE goes through `decode`, which names the problem)."""
    try:
        h, w = (int(s) for s in rle_dict["size"])
        counts = rle_dict["counts"]
        counts = counts.encode() if isinstance(counts, str) else counts
    except Exception:
        counts = None
    runs = parse_counts(counts) if isinstance(counts, bytes) else None
    if runs is not None and h >= 0 and w >= 0 and int(runs.sum()) == h * w:
        return h, w, runs
    mask = rle.decode(rle_dict, where)  # raises the one message; else an odd, valid string
    h, w = mask.shape
    canonical = parse_counts(rle.encode(mask)["counts"].encode())
    if canonical is None:  # pycocotools' own encoding always parses
        raise OmamaError(f"{where}: RLE counts could not be read as runs")
    return h, w, canonical


def intervals(runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground intervals [start, end) in column-major flat order, empty ones dropped."""
    bounds = np.cumsum(runs)
    n_fg = len(runs) // 2
    starts, ends = bounds[0 : 2 * n_fg : 2], bounds[1 : 2 * n_fg + 1 : 2]
    keep = ends > starts
    return merge(starts[keep], ends[keep])


@functools.lru_cache(maxsize=32)
def nearest_maps(h: int, w: int, th: int, tw: int) -> tuple[np.ndarray, np.ndarray]:
    """(source row of each target row, source column of each target column) of
    ``cv2.resize(uint8 HxW mask, (tw, th), interpolation=cv2.INTER_NEAREST)``, read off cv2
    by resizing images whose pixels hold their own row (column) index, byte by byte."""

    def through_cv2(index: np.ndarray, axis: int) -> np.ndarray:
        out = np.zeros(th if axis == 0 else tw, np.int64)
        for shift in (0, 8, 16) if max(h, w) > 0xFFFF else (0, 8):
            byte = ((index >> shift) & 0xFF).astype(np.uint8)
            img = np.ascontiguousarray(np.broadcast_to(byte, (h, w)))
            small = cv2.resize(img, (tw, th), interpolation=cv2.INTER_NEAREST)
            line = small[:, 0] if axis == 0 else small[0, :]
            out |= line.astype(np.int64) << shift
        return out

    ys = through_cv2(np.arange(h)[:, None], 0)
    xs = through_cv2(np.arange(w)[None, :], 1)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


@functools.lru_cache(maxsize=32)
def _lookups(h: int, w: int, th: int, tw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every source row r (0..h): the first target row i with ys[i] >= r; for every
    source column c: the first target column j with xs[j] >= c and the first with
    xs[j] > c (target columns [lo, hi) take source column c)."""
    ys, xs = nearest_maps(h, w, th, tw)
    row_lo = np.searchsorted(ys, np.arange(h + 1))
    col_lo = np.searchsorted(xs, np.arange(w))
    col_hi = np.searchsorted(xs, np.arange(w), side="right")
    return row_lo, col_lo, col_hi


def column_pieces(
    starts: np.ndarray, ends: np.ndarray, h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intervals cut at column boundaries: (column, first row, row past the last), in order."""
    first, last = starts // h, (ends - 1) // h
    n = last - first + 1
    if not (n > 1).any():
        col = first
        return col, starts - col * h, ends - col * h
    idx = np.repeat(np.arange(len(starts)), n)
    col = first[idx] + (np.arange(len(idx)) - np.repeat(np.cumsum(n) - n, n))
    r0 = np.maximum(starts[idx] - col * h, 0)
    r1 = np.minimum(ends[idx] - col * h, h)
    return col, r0, r1


def merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted disjoint intervals with touching neighbours joined."""
    if len(starts) < 2:
        return starts, ends
    gap = starts[1:] != ends[:-1]
    if gap.all():
        return starts, ends
    first = np.ones(len(starts), bool)
    first[1:] = gap
    last = np.ones(len(starts), bool)
    last[:-1] = gap
    return starts[first], ends[last]


def resize_pieces(
    col: np.ndarray, r0: np.ndarray, r1: np.ndarray, h: int, w: int, th: int, tw: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column pieces (see `column_pieces`) of an HxW mask nearest-resized (as cv2) to
    th x tw, sorted by column then row; pieces of one column may touch."""
    row_lo, col_lo, col_hi = _lookups(h, w, th, tw)
    i0, i1 = row_lo[r0], row_lo[r1]  # target rows i with r0 <= ys[i] < r1
    j0, j1 = col_lo[col], col_hi[col]
    keep = (i1 > i0) & (j1 > j0)
    i0, i1, j0, n = i0[keep], i1[keep], j0[keep], (j1 - j0)[keep]
    if len(n) and n.max() > 1:  # enlarging: a source column lands on several target columns
        idx = np.repeat(np.arange(len(n)), n)
        j = j0[idx] + (np.arange(len(idx)) - np.repeat(np.cumsum(n) - n, n))
        order = np.lexsort((i0[idx], j))
        return j[order], i0[idx][order], i1[idx][order]
    return j0, i0, i1


def pieces_to_intervals(
    col: np.ndarray, r0: np.ndarray, r1: np.ndarray, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted column pieces back to flat intervals, touching ones joined."""
    return merge(col * h + r0, col * h + r1)


def resize_intervals(
    starts: np.ndarray, ends: np.ndarray, h: int, w: int, th: int, tw: int
) -> tuple[np.ndarray, np.ndarray]:
    """The foreground intervals of the HxW mask nearest-resized (as cv2) to th x tw."""
    if len(starts) == 0:
        return _EMPTY, _EMPTY
    pieces = resize_pieces(*column_pieces(starts, ends, h), h, w, th, tw)
    return pieces_to_intervals(*pieces, th)


def intervals_to_runs(starts: np.ndarray, ends: np.ndarray, n_pixels: int) -> np.ndarray:
    """COCO run lengths of sorted, disjoint, non-touching foreground intervals."""
    if len(starts) == 0:
        return np.array([n_pixels], np.int64)
    bounds = np.empty(2 * len(starts) + 1, np.int64)
    bounds[0] = 0
    bounds[1::2] = starts
    bounds[2::2] = ends
    if ends[-1] < n_pixels:
        bounds = np.append(bounds, n_pixels)
    return np.diff(bounds)


def runs_to_rle(runs: np.ndarray, h: int, w: int) -> dict:
    """``{"size": [h, w], "counts": str}`` of the run lengths, compressed by pycocotools."""
    coded = mask_utils.frPyObjects({"size": [h, w], "counts": runs.tolist()}, h, w)
    return {"size": [h, w], "counts": coded["counts"].decode()}


def paint(
    col: np.ndarray, r0: np.ndarray, r1: np.ndarray, window: tuple[int, int, int, int]
) -> np.ndarray:
    """The mask of the column pieces inside `window` = (y0, y1, x0, x1), uint8
    [y1 - y0, x1 - x0]; every piece must lie inside the window."""
    y0, y1, x0, x1 = window
    wh, ww = y1 - y0, x1 - x0
    base = (col - x0) * wh - y0
    diff = np.zeros(wh * ww + 1, np.int8)
    diff[base + r0] += 1
    diff[base + r1] -= 1
    return np.cumsum(diff[:-1], dtype=np.int8).view(np.uint8).reshape(ww, wh).T


def box(col: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y_min, y_max, x_min, x_max), inclusive, of sorted column pieces; None when empty."""
    if len(col) == 0:
        return None
    return int(r0.min()), int(r1.max()) - 1, int(col[0]), int(col[-1])


def resize_rle(rle_dict: dict, th: int, tw: int, where: str = "RLE") -> dict:
    """``omama.rle.encode(cv2.resize(omama.rle.decode(rle_dict, where), (tw, th),
    interpolation=cv2.INTER_NEAREST))``, from the runs alone."""
    h, w, runs = runs_of(rle_dict, where)
    starts, ends = resize_intervals(*intervals(runs), h, w, th, tw)
    return runs_to_rle(intervals_to_runs(starts, ends, th * tw), th, tw)
