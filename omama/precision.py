"""`--precision`: the number format the matcher runs in, on any device.

fp32 runs as written. bf16 runs the matcher under autocast to bfloat16 (matrix products in
bf16, reductions and the loss in fp32), faster on a recent GPU; the best scores then differ
from fp32 by up to a few 1e-3, enough to change the chosen candidate of 26-69 pairs in 1,000
on the demo set, whose candidates come in near-duplicates (BENCHMARKS.md, "Precision").
Evaluation defaults to fp32, so the same weights give the same predictions on the CPU and
the GPU; training defaults to bf16 on CUDA and fp32 elsewhere ("auto"), as before the flag
existed.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def resolve(precision: str, device: torch.device) -> str:
    """ "auto" -> bf16 on CUDA, fp32 elsewhere; fp32 and bf16 stay."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the matcher's forward runs in for `precision` on `device`."""
    if resolve(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
