"""8-bit token storage: int8 values with one fp16 scale per token (symmetric, max|x| / 127).

Halves the bytes of the largest thing in the cache (the patch tokens, 768-d for ViT-B). The scale is
rounded to fp16 before the division, so `dequantize` gives back exactly the values the
descriptors were pooled from: q * s is exact in float32 (8-bit times 11-bit mantissas) and
is rounded to fp16 once, the same way on every path (precompute, training, evaluation).
`store_tokens` is where precompute picks the stored form, and the tokens it pools from.
"""

from __future__ import annotations

from typing import NamedTuple

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


class StoredTokens(NamedTuple):
    """An image record's tokens as stored, and the fp16 tokens every reader gets back."""

    tokens: np.ndarray  # float16 [T, C], or int8 [T, C] with `token_scale`
    token_scale: np.ndarray | None  # float16 [T] for int8 storage, else None
    readback: torch.Tensor  # float16 [T, C] on the input's device: descriptors pool these


def store_batch(tokens: torch.Tensor, features: str) -> list[StoredTokens]:
    """fp16 `tokens` [B, T, C] of a batch of images in the storage `features` names, with one
    copy to the host for the whole batch: int8 is quantised where the tokens are (the
    device), and the readback dequantised there, with the bytes of `dequantize`'s (q * s in
    fp32, rounded to fp16 once). Each image's result equals `store_tokens` of its tokens."""
    if features == "fp16":
        host = tokens.cpu().numpy()
        return [StoredTokens(host[i], None, tokens[i]) for i in range(len(host))]
    if features != "int8":
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    x = tokens.detach().float()
    scale = (x.abs().amax(dim=2) / QMAX).to(torch.float16)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / scale.float()[..., None]).clamp_(-QMAX, QMAX).to(torch.int8)
    back = (q.float() * scale.float()[..., None]).to(torch.float16)
    q_host, s_host = q.cpu().numpy(), scale.cpu().numpy()
    return [StoredTokens(q_host[i], s_host[i], back[i]) for i in range(len(q_host))]


def store_tokens(tokens: torch.Tensor, features: str) -> StoredTokens:
    """fp16 `tokens` [T, C] in the storage `features` names ("fp16" or "int8")."""
    if features == "fp16":
        return StoredTokens(tokens.cpu().numpy(), None, tokens)
    if features != "int8":
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    q, scale = quantize(tokens)
    back = torch.from_numpy(dequantize(q, scale)).to(tokens.device)
    return StoredTokens(q, scale, back)
