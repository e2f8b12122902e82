"""Plain reference forms, written as directly as the method reads: the tests compare the
project against them, and `make bench` times the project against the same functions (it puts
this folder on sys.path), so that each is defined once.

Nothing here is tuned: each function is the obvious transcription of the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def loop_descriptors(dense: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Section 5, one mask at a time: nearest-resize the mask to the dense map, average the
    features under it; grow the box by 100 px, clamp, divide by 4, average the window."""
    c, h, w = dense.shape
    n, big_h, big_w = masks.shape
    out = torch.zeros(n, 2 * c, device=dense.device)
    for i in range(n):
        m = F.interpolate(masks[i][None, None].float(), size=(h, w), mode="nearest")[0, 0]
        m = (m != 0).float()
        if m.sum() > 0:
            out[i, :c] = (dense * m).sum(dim=(1, 2)) / m.sum()
        x, y, bw, bh = (int(v) for v in boxes[i].tolist())  # int() truncates toward zero
        x1, y1, x2, y2 = x, y, x + bw, y + bh
        x1 = min(max(x1 - 100, 0), big_w)
        y1 = min(max(y1 - 100, 0), big_h)
        x2 = min(max(x2 + 100, 0), big_w)
        y2 = min(max(y2 + 100, 0), big_h)
        x1, y1, x2, y2 = (math.floor(v / 4) for v in (x1, y1, x2, y2))
        x2 = max(x1 + 1, x2)
        y2 = max(y1 + 1, y2)
        max_x, max_y = big_w // 4 - 1, big_h // 4 - 1
        x1 = min(max(x1, 0), max_x)
        y1 = min(max(y1, 0), max_y)
        x2 = min(max(x2, 0), max_x + 1)
        y2 = min(max(y2, 0), max_y + 1)
        out[i, c:] = dense[:, y1:y2, x1:x2].mean(dim=(1, 2))
    return out
