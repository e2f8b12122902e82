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

The store fills through a few hundred MB of pinned host buffers, not a host copy of the
split (under torchrun every rank of a node would hold one), and a budget that the device's
free memory (or the host's, for the staging) cannot hold stops in one line. The row numbers
go to the device from pinned memory without blocking: the step never waits for the GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.cache.samples import SampleTable, as_table
from omama.errors import OmamaError

log = logging.getLogger(__name__)

ROLES = ("src", "dst")
GB = 1024**3
STAGE_BYTES = 256 * 2**20  # host staging per chunk while a store fills (two chunks in flight)


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


def role_ids(samples: SampleTable) -> dict[str, np.ndarray]:
    """The unique source and destination image ids of a table, ascending: the table's key
    list is sorted, so these are the images in key order (numpy over the id columns, no
    `Sample` per row)."""
    return {role: np.unique(samples.column(role)) for role in ROLES}


def id_keys(samples: SampleTable, ids: np.ndarray) -> list[str]:
    """The image keys of these ids of the table."""
    return [k.decode() for k in samples.tables["images"][ids].tolist()]


def role_keys(samples: SampleTable | Sequence[Sample]) -> dict[str, list[str]]:
    """The unique source and destination images of the samples, sorted."""
    table = as_table(samples)
    return {role: id_keys(table, ids) for role, ids in role_ids(table).items()}


def key_rows(keys: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Each image's row (its id) per role: what the loader sends instead of its tokens."""
    return {role: {k: i for i, k in enumerate(keys[role])} for role in ROLES}


def read_tokens(cache: Cache, keys: list[str], out: torch.Tensor | None = None) -> torch.Tensor:
    """The images' fp16 tokens [len(keys), T, C] in host memory (as `Cache.tokens` reads
    them per batch), the cold reads announced together first; into `out` when given (a host
    tensor, pinned or not, of that shape)."""
    records = [cache.image(k) for k in keys]
    for rec in records:
        cache.hint(rec, "tokens")
        cache.hint(rec, "token_scale")
    if out is None:
        t, c = cache.shape(records[0], "tokens")
        out = torch.empty((len(keys), t, c), dtype=torch.float16)
    arrays = out.numpy()
    for i, rec in enumerate(records):
        cache.tokens(rec, out=arrays[i])
    return out


def host_buffer(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """An fp16 host tensor to stage tokens for `device`: pinned for CUDA, so that the copy
    to the device can be asynchronous."""
    return torch.empty(shape, dtype=torch.float16, pin_memory=device.type == "cuda")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (row numbers, slots) on `device` without making the host wait: to CUDA
    from pinned memory (the loader pins its batches; anything else is pinned here) with
    non_blocking=True, queued behind the device's work; nothing is ever read back."""
    if device.type != "cuda" or t.device.type == "cuda":
        return t.to(device)
    if not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def stage_rows(t: int, c: int) -> int:
    """Images per staging chunk: STAGE_BYTES of fp16 tokens [T, C] each (at least one)."""
    return max(1, STAGE_BYTES // (t * c * 2))


def stage_into(cache: Cache, keys: list[str], out: torch.Tensor, rows: int | None = None) -> None:
    """The images' tokens into `out` [len(keys), T, C] on any device, `rows` images at a time
    through two pinned host buffers (a chunk is read from the cache while the one before it
    is copied), so the host holds a few hundred MB whatever the split's size."""
    n, t, c = out.shape
    rows = min(n, rows or stage_rows(t, c)) if n else 0
    if out.device.type == "cpu":  # the store is host memory: read in place
        for s in range(0, n, max(rows, 1)):
            read_tokens(cache, keys[s : s + rows], out[s : s + rows])
        return
    bufs = [host_buffer((rows, t, c), out.device) for _ in range(2)]
    done: list[torch.cuda.Event | None] = [None, None]
    for i, s in enumerate(range(0, n, rows)):
        buf, k = bufs[i % 2], len(keys[s : s + rows])
        if done[i % 2] is not None:
            done[i % 2].synchronize()  # its previous copy has left the buffer
        read_tokens(cache, keys[s : s + k], buf[:k])
        out[s : s + k].copy_(buf[:k], non_blocking=True)
        done[i % 2] = torch.cuda.Event()
        done[i % 2].record()
    for ev in done:
        if ev is not None:
            ev.synchronize()


def check_room(need: int, gb: float, device: torch.device, staging: int = 0) -> None:
    """Refuse, in one line naming --token-store-gb, a store of `need` bytes that `device`'s
    free memory cannot hold, or whose `staging` bytes of pinned host buffers the host cannot
    (never a CUDA out-of-memory traceback half way through loading)."""
    free = free_bytes(device)
    if need > free:
        raise OmamaError(
            f"--token-store-gb {gb:g}: the token store needs {need / GB:.2f} GB on {device}, "
            f"which has {free / GB:.2f} GB free; lower it (0 reads tokens per batch)"
        )
    if device.type == "cuda" and staging:
        host = free_bytes(torch.device("cpu"))
        if staging > host:
            raise OmamaError(
                f"--token-store-gb {gb:g}: staging the store needs {staging / GB:.2f} GB of "
                f"host memory, {host / GB:.2f} GB is available; lower it (0: per batch)"
            )


class TokenStore:
    """fp16 tokens [n_images, T, C] per role on one device, and each image's row."""

    def __init__(self, tokens: dict[str, torch.Tensor], keys: dict[str, list[str]]) -> None:
        self.tokens = tokens
        self.rows = key_rows(keys)

    @staticmethod
    def bytes_needed(cache: Cache, samples: SampleTable | Sequence[Sample]) -> int:
        """Both roles' tokens of the samples' unique images (each role sized by its first
        image in key order)."""
        table, total = as_table(samples), 0
        for ids in role_ids(table).values():
            if ids.size:
                t, c = cache.shape(cache.image(table.string("images", int(ids[0]))), "tokens")
                total += int(ids.size) * t * c * 2
        return total

    @classmethod
    def load(
        cls, cache: Cache, samples: SampleTable | Sequence[Sample], device: torch.device
    ) -> TokenStore:
        """Read every image's tokens once into per-role tensors on `device`, staged in
        chunks (`stage_into`)."""
        keys = role_keys(samples)
        tokens = {}
        for role in ROLES:
            t, c = cache.shape(cache.image(keys[role][0]), "tokens")
            tokens[role] = torch.empty((len(keys[role]), t, c), dtype=torch.float16, device=device)
            stage_into(cache, keys[role], tokens[role])
        return cls(tokens, keys)

    @classmethod
    def maybe(
        cls,
        cache: Cache,
        samples: SampleTable | Sequence[Sample],
        device: torch.device,
        gb: float,
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
        check_room(need, gb, device, 2 * min(need, STAGE_BYTES))
        store = cls.load(cache, samples, device)
        log.info("token store: %.2f GB of tokens resident on %s", need / GB, device)
        return store

    def gather(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace the batch's `src_row`/`dst_row` by `src_tokens`/`dst_tokens`."""
        out = {k: v for k, v in batch.items() if k not in ("src_row", "dst_row")}
        for role in ROLES:
            rows = to_device(batch[f"{role}_row"], self.tokens[role].device)
            out[f"{role}_tokens"] = self.tokens[role].index_select(0, rows)
        return out
