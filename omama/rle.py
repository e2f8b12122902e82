"""COCO run-length encoding in the JSON form Ego-Exo4D uses (`counts` as an ASCII string)."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from omama.errors import OmamaError


def encode(mask: np.ndarray) -> dict:
    """Encode an HxW 0/1 mask as `{"size": [H, W], "counts": str}`.

    COCO runs go down the columns, so pycocotools wants the mask in column-major order: an
    OpenCV transpose of the row-major mask is exactly that (one blocked copy, about twice as
    fast as numpy's strided `asfortranarray`, and no extra uint8 copy of a uint8 mask).
    """
    m = np.asarray(mask).astype(np.uint8, copy=False)
    if m.ndim == 2 and m.size:
        fortran = cv2.transpose(np.ascontiguousarray(m)).T
    else:
        fortran = np.asfortranarray(m)
    rle = mask_utils.encode(fortran)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def run_total(counts: bytes) -> int | None:
    """Pixels covered by a compressed COCO counts string, or None when it is cut short.

    pycocotools does not check this: counts covering fewer pixels than H*W decode to a mask
    whose tail is uninitialised memory (values up to 255), a silently wrong result.
    """
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = counts[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return sum(runs) if all(r >= 0 for r in runs) else None


def decode(rle: dict, where: str = "RLE") -> np.ndarray:
    """Decode a JSON RLE to an HxW uint8 mask; `where` names the source in the error."""
    try:
        size = [int(s) for s in rle["size"]]
        counts = rle["counts"]
        counts = counts.encode() if isinstance(counts, str) else counts
        total = run_total(counts) if isinstance(counts, bytes) else None
        if isinstance(counts, bytes) and total is None:
            raise ValueError("counts are cut short or hold a negative run")
        if isinstance(counts, bytes) and total != size[0] * size[1]:
            raise ValueError(f"its runs cover {total} pixels, not {size[0]}x{size[1]}")
        mask = mask_utils.decode({"size": size, "counts": counts})
    except Exception as exc:  # pycocotools raises bare errors or crashes on garbage
        raise OmamaError(f"{where}: RLE does not decode ({type(exc).__name__}: {exc})") from None
    if mask.shape != tuple(size):
        raise OmamaError(f"{where}: RLE decodes to {mask.shape}, expected {tuple(size)}")
    return mask
