"""A token store smaller than the split: image slots on the step's device, filled on demand.

With the block order (`omama.loader.order`) the samples of an epoch come block after block,
each block's images fitting half the budget. This store keeps, per role, as many image slots
as the two largest blocks have images of that role (and at least one batch), so about the
budget (the log gives its size). The loader sends each sample's image ids, which are stable
over the whole split (the same rows as a full `TokenStore`, so `TrainSamples.use_store` does
not change); `gather`, in the main process just before the step, reads any image of the
batch that is not resident into a free slot or, when none is free, into the slot used least
recently by earlier batches, then gathers the batch's tokens from the slots.

Loading only where the ids are turned into tokens is what keeps it correct whatever the
loader does ahead of the step: its workers run in other processes and prefetch batches, but
they only send ids, and a batch spanning two blocks simply finds both blocks' images. With
the block order the images evicted are those of blocks already finished: an image of the
block being trained on was used more recently than any of them, and the current block and
the next fit together, so each image is read once per visit of its block (`reads` counts
them). Any order is correct, only slower when it jumps between more images than the slots
hold. The tokens are the cache's fp16 tokens (`Cache.tokens`, as per batch): gathered
batches equal the batches read per batch.
"""

from __future__ import annotations

import numpy as np
import torch

from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.errors import OmamaError
from omama.loader.token_store import ROLES, key_rows, read_tokens, role_keys


class RollingTokenStore:
    """fp16 tokens [slots, T, C] per role on one device, filled on demand by image id."""

    def __init__(
        self, cache: Cache, keys: dict[str, list[str]], slots: dict[str, int], device: torch.device
    ) -> None:
        self.cache, self.keys = cache, keys
        self.rows = key_rows(keys)
        self.tokens: dict[str, torch.Tensor] = {}
        self.slot_of: dict[str, np.ndarray] = {}  # image id -> its slot, -1 if not resident
        self.held: dict[str, np.ndarray] = {}  # slot -> image id, -1 if empty
        self.last_use: dict[str, np.ndarray] = {}  # slot -> the gather that last used it
        for role in ROLES:
            t, c = cache.shape(cache.image(keys[role][0]), "tokens")
            self.tokens[role] = torch.empty((slots[role], t, c), dtype=torch.float16, device=device)
            self.slot_of[role] = np.full(len(keys[role]), -1, dtype=np.int64)
            self.held[role] = np.full(slots[role], -1, dtype=np.int64)
            self.last_use[role] = np.full(slots[role], -1, dtype=np.int64)
        self.clock = 0
        self.reads = 0  # images read from the cache so far

    @classmethod
    def for_blocks(
        cls,
        cache: Cache,
        samples: list[Sample],
        blocks: list[np.ndarray],
        device: torch.device,
        batch_size: int,
    ) -> RollingTokenStore:
        """Slots for the two largest blocks' images of each role (at least `batch_size`:
        one batch always fits, at most every image of the split)."""
        keys = role_keys(samples)
        slots = {}
        for role in ROLES:
            sizes = sorted(len(role_keys([samples[i] for i in b])[role]) for b in blocks)
            slots[role] = min(len(keys[role]), max(batch_size, sum(sizes[-2:])))
        return cls(cache, keys, slots, device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tokens.values())

    def gather(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace the batch's `src_row`/`dst_row` (image ids) by `src_tokens`/`dst_tokens`,
        reading the images that are not resident first."""
        self.clock += 1
        out = {k: v for k, v in batch.items() if k not in ("src_row", "dst_row")}
        for role in ROLES:
            slots = self._resident(role, batch[f"{role}_row"].cpu().numpy())
            index = torch.from_numpy(slots).to(self.tokens[role].device)
            out[f"{role}_tokens"] = self.tokens[role].index_select(0, index)
        return out

    def _resident(self, role: str, ids: np.ndarray) -> np.ndarray:
        """Each id's slot, after reading the missing ones into the least recently used slots
        that this batch does not need."""
        slot_of, held, last_use = self.slot_of[role], self.held[role], self.last_use[role]
        need = np.unique(ids)
        missing = need[slot_of[need] < 0]
        if missing.size:
            by_age = np.argsort(last_use, kind="stable")  # empty slots (-1) first
            free = by_age[~np.isin(held[by_age], need)][: missing.size]
            if free.size < missing.size:
                raise OmamaError(
                    f"token store: a batch needs {need.size} {role} images, "
                    f"the store holds {held.size}"
                )
            evicted = held[free]
            slot_of[evicted[evicted >= 0]] = -1
            self._read(role, missing, free)
            held[free] = missing
            slot_of[missing] = free
        last_use[slot_of[need]] = self.clock
        return slot_of[ids]

    def _read(self, role: str, ids: np.ndarray, slots: np.ndarray) -> None:
        """The images' tokens from the cache into the given slots."""
        tokens = self.tokens[role]
        host = read_tokens(self.cache, [self.keys[role][i] for i in ids])
        index = torch.from_numpy(slots).to(tokens.device)
        tokens.index_copy_(0, index, host.to(tokens.device))
        self.reads += int(ids.size)
