"""Tokens resident where the step runs: each image's patch tokens read once, kept by image.

One image serves many training samples (every annotated object, every exo camera), and its
tokens are most of a sample's bytes. When the split's tokens fit the budget (`--token-store-gb`,
default half of the free memory of the step's device), they are read once into one tensor per
role (source images, destination images: each role has one patch grid) on that device; the
loader then sends each sample's row numbers and its drawn descriptor rows only, and the step
gathers the tokens on the device. The gathered tokens are the cache's fp16 tokens (8-bit
caches are dequantized once, as `Cache.tokens` does per read), so batches and losses are
the same as reading them per batch. When they do not fit, `--order auto` trains in blocks
of takes with a store of two blocks (`omama.loader.order`, `rolling_store`) and
`--order shuffle` reads them per batch as before; the log says which.
"""

from __future__ import annotations

import logging
import os

import torch

from omama.cache.reader import Cache
from omama.cache.records import Sample

log = logging.getLogger(__name__)

ROLES = ("src", "dst")
GB = 1024**3


def free_bytes(device: torch.device) -> int:
    """Free memory of the device (CUDA), or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fp:
            for line in fp:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def budget_bytes(gb: float, device: torch.device) -> int:
    """`--token-store-gb`: a negative value means half the free memory; 0 turns it off."""
    return free_bytes(device) // 2 if gb < 0 else int(gb * GB)


def role_keys(samples: list[Sample]) -> dict[str, list[str]]:
    """The unique source and destination images of the samples, sorted."""
    return {"src": sorted({s.src for s in samples}), "dst": sorted({s.dst for s in samples})}


def key_rows(keys: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Each image's row (its id) per role: what the loader sends instead of its tokens."""
    return {role: {k: i for i, k in enumerate(keys[role])} for role in ROLES}


def read_tokens(cache: Cache, keys: list[str]) -> torch.Tensor:
    """The images' fp16 tokens [len(keys), T, C] in host memory (as `Cache.tokens` reads
    them per batch), the cold reads announced together first."""
    records = [cache.image(k) for k in keys]
    for rec in records:
        cache.hint(rec, "tokens")
        cache.hint(rec, "token_scale")
    t, c = cache.shape(records[0], "tokens")
    host = torch.empty((len(keys), t, c), dtype=torch.float16)
    arrays = host.numpy()
    for i, rec in enumerate(records):
        cache.tokens(rec, out=arrays[i])
    return host


class TokenStore:
    """fp16 tokens [n_images, T, C] per role on one device, and each image's row."""

    def __init__(self, tokens: dict[str, torch.Tensor], keys: dict[str, list[str]]) -> None:
        self.tokens = tokens
        self.rows = key_rows(keys)

    @staticmethod
    def bytes_needed(cache: Cache, samples: list[Sample]) -> int:
        total = 0
        for keys in role_keys(samples).values():
            if keys:
                t, c = cache.shape(cache.image(keys[0]), "tokens")
                total += len(keys) * t * c * 2
        return total

    @classmethod
    def load(cls, cache: Cache, samples: list[Sample], device: torch.device) -> TokenStore:
        """Read every image's tokens once into per-role tensors on `device`."""
        keys = role_keys(samples)
        return cls({role: read_tokens(cache, keys[role]).to(device) for role in ROLES}, keys)

    @classmethod
    def maybe(
        cls, cache: Cache, samples: list[Sample], device: torch.device, gb: float
    ) -> TokenStore | None:
        """The store when the samples' tokens fit `gb` (see budget_bytes), else None."""
        if gb == 0 or not samples:
            return None
        need, budget = cls.bytes_needed(cache, samples), budget_bytes(gb, device)
        if need > budget:
            log.info(
                "token store: %.2f GB of tokens > budget %.2f GB: tokens read per batch",
                need / GB,
                budget / GB,
            )
            return None
        store = cls.load(cache, samples, device)
        log.info("token store: %.2f GB of tokens resident on %s", need / GB, device)
        return store

    def gather(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace the batch's `src_row`/`dst_row` by `src_tokens`/`dst_tokens`."""
        out = {k: v for k, v in batch.items() if k not in ("src_row", "dst_row")}
        for role in ROLES:
            rows = batch[f"{role}_row"].to(self.tokens[role].device)
            out[f"{role}_tokens"] = self.tokens[role].index_select(0, rows)
        return out
