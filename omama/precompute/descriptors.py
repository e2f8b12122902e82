"""Per-mask 2C-d descriptors (mask part + context part; 1536-d for ViT-B) from a dense
backbone map.

Pure tensor functions, CPU or CUDA, with the exact semantics of the O-MaMa reference but no
per-mask Python loop: the mask part is one fp32 matmul of the flattened (nearest-resized) masks
with the flattened map, the context part reads box sums from a float64 summed-area table on
the CPU and sums each window directly in fp32 on CUDA (TF32 off on both paths).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from omama.backbones import DEFAULT_BACKBONE
from omama.masks import tight_boxes as np_tight_boxes

REDUCTION = 4  # the dense map is a quarter of the cropped image size
CONTEXT_PX = 100  # context margin, in crop pixels, on each side of the box
_MASK_CHUNK = 64  # masks resized and reduced per step (bounds memory for N=200 at 700x700)
_SAT_CHANNEL_CHUNK = 128  # channels per float64 summed-area table


def dense_map(
    tokens: torch.Tensor, grid: tuple[int, int], patch: int = DEFAULT_BACKBONE.patch
) -> torch.Tensor:
    """[T, C] patch tokens (row-major over grid) -> float32 [C, gh*P//4, gw*P//4] for the
    backbone's patch P (the crop size over 4).

    Bilinear, align_corners=False, like the reference (50x50 -> 175x175, 38x68 -> 133x238).
    """
    gh, gw = int(grid[0]), int(grid[1])
    if tokens.ndim != 2 or tokens.shape[0] != gh * gw:
        raise ValueError(f"tokens {tuple(tokens.shape)} do not fit a {gh}x{gw} grid")
    c = tokens.shape[1]
    fmap = tokens.float().reshape(gh, gw, c).permute(2, 0, 1).unsqueeze(0)
    size = (gh * patch // REDUCTION, gw * patch // REDUCTION)
    out = F.interpolate(fmap, size=size, mode="bilinear", align_corners=False)
    return out.squeeze(0).contiguous()


def _nearest_index(src: int, dst: int, device: torch.device) -> torch.Tensor:
    """Source indices torch's F.interpolate(mode="nearest") picks when resizing src -> dst.

    Obtained by running F.interpolate itself on an index ramp (exact in float32 for any
    realistic size), so the gather below is bit-for-bit the same resize.
    """
    ramp = torch.arange(src, dtype=torch.float32, device=device).view(1, 1, src, 1)
    idx = F.interpolate(ramp, size=(dst, 1), mode="nearest")
    return idx.view(dst).long()


def quarter_masks(masks: np.ndarray) -> np.ndarray:
    """[N, H, W] masks -> [N, H//4, W//4]: the nearest resize `mask_descriptors` applies,
    done where the masks are decoded (a loader worker), so only a sixteenth of the bytes
    travels to the main process. `mask_descriptors(dense, quarter_masks(m), boxes, (H, W))`
    equals `mask_descriptors(dense, m, boxes)` bit for bit: the same indices are gathered,
    and on the quarter-size masks the resize is the identity."""
    n, h, w = masks.shape
    iy = _as_slice(_nearest_index(h, h // REDUCTION, torch.device("cpu")).numpy())
    ix = _as_slice(_nearest_index(w, w // REDUCTION, torch.device("cpu")).numpy())
    return np.ascontiguousarray(masks[:, iy][:, :, ix])


def _as_slice(index: np.ndarray) -> np.ndarray | slice:
    """The same indices as a slice when they step evenly (a side divisible by 4: the
    strided view is copied once, ~3x faster than gathering), else as they are."""
    if len(index) > 1 and (np.diff(index) == index[1] - index[0]).all():
        return slice(int(index[0]), int(index[-1]) + 1, int(index[1] - index[0]))
    return index


def context_windows(
    boxes: torch.Tensor, crop_hw: tuple[int, int], context: int = CONTEXT_PX
) -> torch.Tensor:
    """[N, 4] xywh boxes (crop pixels) -> int64 [N, 4] windows (x1, y1, x2, y2) on the map.

    The reference's add_context_to_bbox: truncate to int, to corners, grow by `context`, clamp to
    the crop, floor-divide by 4, force at least one cell, clamp to the map. Always non-empty.
    """
    H, W = int(crop_hw[0]), int(crop_hw[1])
    b = torch.trunc(boxes.to(torch.float64)).long()
    x1, y1 = b[:, 0], b[:, 1]
    x2, y2 = x1 + b[:, 2], y1 + b[:, 3]
    x1 = (x1 - context).clamp(0, W)
    y1 = (y1 - context).clamp(0, H)
    x2 = (x2 + context).clamp(0, W)
    y2 = (y2 + context).clamp(0, H)
    x1, y1, x2, y2 = (v // REDUCTION for v in (x1, y1, x2, y2))  # all >= 0: floor
    x2 = torch.maximum(x1 + 1, x2)
    y2 = torch.maximum(y1 + 1, y2)
    max_x = W // REDUCTION - 1
    max_y = H // REDUCTION - 1
    x1 = x1.clamp(0, max_x)
    y1 = y1.clamp(0, max_y)
    x2 = x2.clamp(0, max_x + 1)
    y2 = y2.clamp(0, max_y + 1)
    return torch.stack([x1, y1, x2, y2], dim=1)


@contextlib.contextmanager
def _ieee_fp32(device: torch.device) -> Iterator[None]:
    """fp32 matrix products in full fp32 on CUDA (TF32 off) whatever the process set."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _mask_part(dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    C, h, w = dense.shape
    N, H, W = masks.shape
    dev = dense.device
    # fp32 sums (TF32 off on CUDA): within 1e-5 of the reference's fp32 sums
    flat = dense.reshape(C, h * w)
    # Resize on the masks' own device (often CPU), then move only the small result.
    iy = _nearest_index(H, h, masks.device)
    ix = _nearest_index(W, w, masks.device)
    out = torch.zeros(N, C, dtype=torch.float32, device=dev)
    for s in range(0, N, _MASK_CHUNK):
        m = masks[s : s + _MASK_CHUNK].index_select(1, iy).index_select(2, ix)
        m = (m != 0).to(dev).reshape(-1, h * w).float()
        counts = m.sum(dim=1, keepdim=True)
        with _ieee_fp32(dev):
            sums = m @ flat.T
        out[s : s + m.shape[0]] = torch.where(
            counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums)
        )
    return out


def _context_part_fp32(dense: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """The context part as direct fp32 window sums (no summed-area table, whose fp32
    differences of large prefix sums would cancel): each window's sum is a product of the map
    with the window's row and column indicators, two fp32 matrix products with TF32 off.
    What CUDA runs (fp64 is 1/64 rate on many GPUs): within 16 fp32 ulps of max(1, |value|)
    of the fp64 sums (measured at most 7; tests/test_descriptors.py)."""
    C, h, w = dense.shape
    N = win.shape[0]
    x1, y1, x2, y2 = (win[:, i].to(dense.device)[:, None] for i in range(4))
    cols = torch.arange(w, device=dense.device)[None]
    rows = torch.arange(h, device=dense.device)[None]
    in_x = ((cols >= x1) & (cols < x2)).float()  # [N, w]
    in_y = ((rows >= y1) & (rows < y2)).float()  # [N, h]
    area = in_x.sum(1) * in_y.sum(1)  # exact: integers below 2^24
    out = torch.empty(N, C, dtype=torch.float32, device=dense.device)
    with _ieee_fp32(dense.device):
        for s in range(0, C, _SAT_CHANNEL_CHUNK):
            chunk = dense[s : s + _SAT_CHANNEL_CHUNK]
            c = chunk.shape[0]
            by_col = (chunk.reshape(c * h, w) @ in_x.T).reshape(c, h, N)  # [c, h, N]
            total = torch.einsum("chn,nh->nc", by_col, in_y)
            out[:, s : s + c] = total / area[:, None]
    return out


def _context_part(dense: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    C, h, w = dense.shape
    N = win.shape[0]
    x1, y1, x2, y2 = (win[:, i].to(dense.device) for i in range(4))
    w1 = w + 1
    corners = torch.stack([y2 * w1 + x2, y1 * w1 + x2, y2 * w1 + x1, y1 * w1 + x1])  # [4, N]
    area = ((y2 - y1) * (x2 - x1)).to(torch.float64)
    out = torch.empty(N, C, dtype=torch.float32, device=dense.device)
    # One float64 buffer, reused: row 0 and column 0 stay zero, the rest is overwritten.
    buf = torch.zeros(
        min(C, _SAT_CHANNEL_CHUNK), h + 1, w + 1, dtype=torch.float64, device=dense.device
    )
    flat_corners = corners.reshape(-1)
    for s in range(0, C, _SAT_CHANNEL_CHUNK):
        chunk = dense[s : s + _SAT_CHANNEL_CHUNK]
        c = chunk.shape[0]
        sat = buf[:c]
        sat[:, 1:, 1:] = chunk  # cast to float64 while copying
        sat.cumsum_(2)
        sat.cumsum_(1)
        v = sat.reshape(c, -1)[:, flat_corners].reshape(c, 4, N)
        total = v[:, 0] - v[:, 1] - v[:, 2] + v[:, 3]  # [c, N]
        out[:, s : s + c] = (total / area).T.float()
    return out


def mask_descriptors(
    dense: torch.Tensor,
    masks: torch.Tensor,
    boxes: torch.Tensor,
    crop_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """[N, 2C] float32 = concat(mask part, context part) for each mask.

    dense: [C, h, w] map (see dense_map); masks: [N, H, W] bool/uint8 at crop size (nonzero =
    inside); boxes: [N, 4] float xywh in crop pixels. crop_hw defaults to the masks' (H, W)
    and is the H_max, W_max of the reference's context clamps.
    Mask part: the mask nearest-resized to (h, w), mean of the features under it (zeros when
    empty). Context part: mean of the map over context_windows(boxes).
    """
    if dense.ndim != 3:
        raise ValueError(f"dense must be [C, h, w], got {tuple(dense.shape)}")
    if masks.ndim != 3:
        raise ValueError(f"masks must be [N, H, W], got {tuple(masks.shape)}")
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"boxes {tuple(boxes.shape)} do not match {masks.shape[0]} masks")
    masks = torch.as_tensor(masks)
    dense = dense.float()
    C = dense.shape[0]
    N = masks.shape[0]
    if N == 0:
        return torch.zeros(0, 2 * C, dtype=torch.float32, device=dense.device)
    hw = (int(masks.shape[1]), int(masks.shape[2])) if crop_hw is None else crop_hw
    if (int(hw[0]) // REDUCTION, int(hw[1]) // REDUCTION) != tuple(dense.shape[1:]):
        raise ValueError(
            f"crop size {hw[0]}x{hw[1]} does not fit a {dense.shape[1]}x{dense.shape[2]} dense "
            f"map (expected a quarter of the crop)"
        )
    mask_part = _mask_part(dense, masks)
    win = context_windows(boxes, hw)
    # fp64 summed-area table on the CPU (cheap there; the cached bytes of every CPU run stay
    # as they were), direct fp32 sums on CUDA (fp64 runs at 1/64 rate on many GPUs)
    fp32 = dense.device.type == "cuda"
    ctx_part = _context_part_fp32(dense, win) if fp32 else _context_part(dense, win)
    return torch.cat([mask_part, ctx_part], dim=1)


def tight_box(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """(x_min, y_min, x_max - x_min, y_max - y_min) float32 of an [H, W] mask; zeros if empty."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be [H, W], got {m.shape}")
    return tight_boxes(m[None])[0]


def tight_boxes(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """Vectorised tight_box over [N, H, W] -> float32 [N, 4] (omama.masks.tight_boxes)."""
    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else masks
    return np_tight_boxes(m)


def box_iou(
    boxes: np.ndarray | torch.Tensor, box: np.ndarray | torch.Tensor
) -> np.ndarray | torch.Tensor:
    """IoU of [N, 4] xywh boxes with one xywh box (reference compute_IoU_bbox, float32).

    Differs only in that a zero union gives 0 instead of NaN. Returns numpy for numpy input.
    """
    as_numpy = not isinstance(boxes, torch.Tensor)
    b = torch.as_tensor(np.asarray(boxes) if as_numpy else boxes).float().reshape(-1, 4)
    g = torch.as_tensor(box).float().reshape(4).to(b.device)
    ix1 = torch.maximum(b[:, 0], g[0])
    iy1 = torch.maximum(b[:, 1], g[1])
    ix2 = torch.minimum(b[:, 0] + b[:, 2], g[0] + g[2])
    iy2 = torch.minimum(b[:, 1] + b[:, 3], g[1] + g[3])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    union = b[:, 2] * b[:, 3] + g[2] * g[3] - inter
    iou = torch.where(union != 0, inter / torch.where(union != 0, union, 1.0), 0.0)
    iou = iou.clamp(0, 1)
    return iou.cpu().numpy() if as_numpy else iou


def anchor_index(cand_boxes: np.ndarray | torch.Tensor, gt_box: np.ndarray | torch.Tensor) -> int:
    """Index of the candidate box with the highest box IoU with gt_box (first one on ties)."""
    iou = box_iou(cand_boxes, gt_box)
    iou = iou.cpu().numpy() if isinstance(iou, torch.Tensor) else iou
    if iou.size == 0:
        raise ValueError("anchor_index needs at least one candidate box")
    return int(np.argmax(iou))
