"""COCO run-length encoding in the JSON form Ego-Exo4D uses (`counts` as an ASCII string)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from omama.errors import OmamaError


def encode(mask: np.ndarray) -> dict:
    """Encode an HxW 0/1 mask as `{"size": [H, W], "counts": str}`."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def decode(rle: dict, where: str = "RLE") -> np.ndarray:
    """Decode a JSON RLE to an HxW uint8 mask; `where` names the source in the error."""
    try:
        size = [int(s) for s in rle["size"]]
        counts = rle["counts"]
        counts = counts.encode() if isinstance(counts, str) else counts
        mask = mask_utils.decode({"size": size, "counts": counts})
    except Exception as exc:  # pycocotools raises bare errors or crashes on garbage
        raise OmamaError(f"{where}: RLE does not decode ({type(exc).__name__}: {exc})") from None
    if mask.shape != tuple(size):
        raise OmamaError(f"{where}: RLE decodes to {mask.shape}, expected {tuple(size)}")
    return mask
