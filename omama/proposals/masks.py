"""The candidate masks of one image, from the segmenter's output to what is written: pure
tensor functions that run on the segmenter's device.

- `mask_size`: the size O-MaMa resizes the image to (each side cut to a multiple of 14 with a
  nearest resize: 704x704 -> 700x700, 540x960 -> 532x952), in the image's own orientation (a
  portrait camera's 960x540 -> 952x532; every loader stretches both alike to landscape).
- `resize_nearest`: the masks at that size, picking the rows and columns that
  `cv2.resize(..., INTER_NEAREST)` picks for the image itself (`omama.rle_runs.nearest_maps`),
  so a candidate covers the same pixels of the cropped image as of the original.
- `boxes_of`: x, y, w, h of each mask with w = max column - min column and h = max row - min
  row, as O-MaMa's `bbox_from_mask` computes them (no +1).
- `finish`: empty masks dropped (O-MaMa's adjacency skips them and misaligns its indices);
  none left: the whole image as the one candidate (O-MaMa's sampler fails on an empty file).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from omama.dataset.images import crop_size
from omama.rle_runs import nearest_maps


def mask_size(h: int, w: int) -> tuple[int, int]:
    """(height, width) of the written masks of an h x w image: O-MaMa's crop, own orientation."""
    short, long = crop_size(h, w)
    return (long, short) if h > w else (short, long)


@functools.lru_cache(maxsize=16)
def _maps(h: int, w: int, th: int, tw: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = nearest_maps(h, w, th, tw)
    return torch.from_numpy(ys.copy()), torch.from_numpy(xs.copy())


def resize_nearest(masks: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """[N, H, W] -> [N, th, tw] by cv2's nearest rule (an index gather on the masks' device)."""
    n, h, w = masks.shape
    th, tw = size_hw
    if (h, w) == (th, tw):
        return masks
    rows, cols = _maps(h, w, th, tw)
    return masks.index_select(1, rows.to(masks.device)).index_select(2, cols.to(masks.device))


def boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """float32 [N, 4] x_min, y_min, x_max - x_min, y_max - y_min of [N, H, W] masks (zeros for
    an empty mask), on the masks' device."""
    n, h, w = masks.shape
    nonzero = masks != 0
    rows, cols = nonzero.any(dim=2), nonzero.any(dim=1)  # [N, H], [N, W]

    def first_last(line: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(size, device=line.device).expand_as(line)
        first = torch.where(line, idx, size).amin(dim=1)
        last = torch.where(line, idx, -1).amax(dim=1)
        return first, last

    y0, y1 = first_last(rows, h)
    x0, x1 = first_last(cols, w)
    out = torch.stack([x0, y0, x1 - x0, y1 - y0], dim=1).to(torch.float32)
    return torch.where(rows.any(dim=1, keepdim=True), out, torch.zeros_like(out))


@dataclass
class Candidates:
    """What is written for one image: masks uint8 [N, H, W] (N >= 1, none empty), boxes
    float32 [N, 4], how many empty masks were dropped and whether the whole image stands in."""

    masks: np.ndarray
    boxes: np.ndarray
    dropped: int
    fallback: bool


def finish(masks: torch.Tensor | None, size_hw: tuple[int, int]) -> Candidates:
    """The segmenter's masks of one image ([N, H, W] at the image's size, any dtype, or None
    when it found nothing) -> the candidates written at `size_hw`."""
    th, tw = size_hw
    if masks is None or masks.shape[0] == 0:
        return _whole_image(th, tw, dropped=0)
    small = resize_nearest(masks != 0, (th, tw))
    keep = small.flatten(1).any(dim=1)
    kept = small[keep]
    dropped = int(masks.shape[0] - kept.shape[0])
    if kept.shape[0] == 0:
        return _whole_image(th, tw, dropped)
    boxes = boxes_of(kept)
    return Candidates(
        kept.to(torch.uint8).cpu().numpy(), boxes.cpu().numpy(), dropped, fallback=False
    )


def _whole_image(th: int, tw: int, dropped: int) -> Candidates:
    masks = np.ones((1, th, tw), np.uint8)
    boxes = np.array([[0, 0, tw - 1, th - 1]], np.float32)
    return Candidates(masks, boxes, dropped, fallback=True)
