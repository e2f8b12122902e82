"""Training batches straight from the cache: no JPEG, no mask decode, no backbone, no Qhull.

Each sample is a pure function of (seed, epoch, index), so any worker count, a resumed run or
another rank draws the same candidates for the same sample.

The DataLoader fetches a whole batch through `__getitems__`, which allocates the batch's
arrays once (in shared memory inside a worker, so handing the batch to the main process
copies nothing) and reads every sample's fields straight into them through the cache reader:
the two token blocks, the anchor, one adjacency row and the descriptor rows it draws. Every
read of the batch is announced to the kernel before the first one is waited for, so cold
reads from disk are in flight together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from omama.cache.reader import Cache, Record
from omama.cache.records import Sample
from omama.cache.sample_rows import check_object_rows
from omama.loader.batches import already_batched, batch_tensor
from omama.loader.negatives import choose_negatives


@dataclass
class _Draw:
    """One sample on its way through TrainSamples.__getitems__."""

    sample: Sample
    rng: np.random.Generator
    src: Record
    dst: Record
    cand: Record
    anchor: int = -1
    rows: np.ndarray | None = None  # descriptor rows to read: negatives (+ stand-in positive)


class TrainSamples(Dataset):
    """Section 7's training samples, read from the cache a batch at a time.

    Use with `collate_fn=already_batched`; `data[(epoch, i)]` gives one sample unbatched.
    """

    collate = staticmethod(already_batched)

    def __init__(self, cache: Cache, direction: str, split: str, n_masks: int, seed: int) -> None:
        self.cache = cache
        self.direction = direction
        self.samples = cache.samples(direction, split)
        self.n_masks = n_masks
        self.seed = seed
        self.store_rows: dict[str, dict[str, int]] | None = None

    def use_store(self, rows: dict[str, dict[str, int]]) -> None:
        """Send each image's row in a `TokenStore` (`src_row`, `dst_row`) instead of its
        tokens; the step gathers them (`TokenStore.gather`, or `RollingTokenStore.gather`,
        whose rows are the same image ids)."""
        self.store_rows = rows

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        draws = self._draw(indices)
        return self._read(draws)

    def _draw(self, indices: Sequence[tuple[int, int]]) -> list[_Draw]:
        """Each sample's candidate rows, reading only the anchor and one adjacency row."""
        io = self.cache
        draws = []
        for epoch, i in indices:  # reads that depend on nothing: announced first
            s = self.samples[i]
            d = _Draw(
                s,
                np.random.default_rng([self.seed, epoch, i]),
                io.image(s.src),
                io.image(s.dst),
                io.cands(self.direction, s.dst),
            )
            check_object_rows(io, self.direction, s, d.src, d.dst)
            for rec in (d.src, d.dst) if self.store_rows is None else ():
                io.hint(rec, "tokens")
                io.hint(rec, "token_scale")
            io.hint(d.src, "obj_desc", [s.src_k])
            if s.dst_k >= 0:
                io.hint(d.dst, "obj_desc", [s.dst_k])
                io.hint(d.cand, "anchor", [s.dst_k])
            draws.append(d)
        for d in draws:
            if d.sample.dst_k >= 0:
                d.anchor = int(io.rows(d.cand, "anchor", [d.sample.dst_k])[0])
                io.hint(d.cand, "adj", [d.anchor])
        for d in draws:
            n_cands = io.shape(d.cand, "desc")[0]
            adj_row = io.rows(d.cand, "adj", [d.anchor])[0] if d.anchor >= 0 else None
            d.rows = choose_negatives(n_cands, self.n_masks, d.anchor, adj_row, d.rng)
            if d.anchor < 0:  # invisible: a random candidate stands in for the positive
                d.rows = np.append(d.rows, int(d.rng.integers(n_cands)))
            io.hint(d.cand, "desc", d.rows)
        return draws

    def _read(self, draws: list[_Draw]) -> dict[str, torch.Tensor]:
        """The batch's arrays, allocated once and read into."""
        io, b = self.cache, len(draws)
        src_shape = io.shape(draws[0].src, "tokens")
        dst_shape = io.shape(draws[0].dst, "tokens")
        desc_dim = 2 * src_shape[1]  # the backbone's token width, twice
        rows = self.store_rows
        if rows is None:
            tokens = {
                "src_tokens": batch_tensor((b, *src_shape), torch.float16),
                "dst_tokens": batch_tensor((b, *dst_shape), torch.float16),
            }
        else:
            tokens = {
                "src_row": torch.tensor([rows["src"][d.sample.src] for d in draws]),
                "dst_row": torch.tensor([rows["dst"][d.sample.dst] for d in draws]),
            }
        batch = {
            **tokens,
            "src_desc": batch_tensor((b, desc_dim), torch.float32),
            "cand_desc": batch_tensor((b, self.n_masks, desc_dim), torch.float32),
            "pos_index": batch_tensor((b,), torch.long),
            "visible": batch_tensor((b,), torch.float32),
        }
        arrays = {k: v.numpy() for k, v in batch.items()}
        for j, d in enumerate(draws):
            s = d.sample
            if rows is None:
                io.tokens(d.src, out=arrays["src_tokens"][j])
                io.tokens(d.dst, out=arrays["dst_tokens"][j])
            arrays["src_desc"][j] = io.rows(d.src, "obj_desc", [s.src_k])[0]
            desc = io.rows(d.cand, "desc", d.rows)
            if d.anchor >= 0:  # visible: the positive is the ground-truth mask's own descriptor
                neg_desc, positive = desc, io.rows(d.dst, "obj_desc", [s.dst_k])[0]
            else:  # invisible: the loss ignores the sample
                neg_desc, positive = desc[:-1], desc[-1]
            slot = int(d.rng.integers(0, self.n_masks))
            arrays["cand_desc"][j] = np.insert(neg_desc, slot, positive, axis=0)
            arrays["pos_index"][j] = slot
            arrays["visible"][j] = float(d.anchor >= 0)
        return batch
