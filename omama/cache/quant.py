"""8-bit token storage: int8 values with one fp16 scale per token (symmetric, max|x| / 127).

Halves the bytes of the largest thing in the cache (the 768-d patch tokens). The scale is
rounded to fp16 before the division, so `dequantize` gives back exactly the values the
descriptors were pooled from: q * s is exact in float32 (8-bit times 11-bit mantissas) and
is rounded to fp16 once, the same way on every path (precompute, training, evaluation).
"""

from __future__ import annotations

import numpy as np
import torch

FEATURES = ("fp16", "int8")
QMAX = 127


def quantize(tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """[T, C] tokens (any float dtype, any device) -> (int8 [T, C], float16 scale [T])."""
    x = tokens.detach().float()
    scale = (x.abs().amax(dim=1) / QMAX).to(torch.float16)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero token
    q = torch.round(x / scale.float()[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q.cpu().numpy(), scale.cpu().numpy()


def dequantize(q: np.ndarray, scale: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(int8 [T, C], float16 [T]) -> float16 [T, C]; written into `out` when given."""
    values = q.astype(np.float32) * scale.astype(np.float32)[:, None]
    if out is None:
        return values.astype(np.float16)
    out[...] = values
    return out


def roundtrip(tokens: torch.Tensor) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray]]:
    """The stored form of `tokens` and the fp16 tokens it reads back as (on their device)."""
    q, scale = quantize(tokens)
    back = torch.from_numpy(dequantize(q, scale)).to(tokens.device)
    return back, (q, scale)
