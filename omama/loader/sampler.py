"""The order of training samples: a seeded shuffle per epoch (or the block order of
`omama.loader.order`), resumable, split over ranks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def block_order(blocks: list[np.ndarray], seed: int, epoch: int) -> np.ndarray:
    """One epoch's order over a partition of the indices: the blocks in a seeded order, each
    block's indices shuffled; a pure function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 11])
    parts = [rng.permutation(blocks[b]) for b in rng.permutation(len(blocks))]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class EpochSampler(Sampler):
    """Seeded per-epoch shuffle yielding (epoch, index); can start mid-epoch for --resume and
    hand each of `num_replicas` ranks its own strided part. With `blocks` (a partition of
    the indices), each epoch is `block_order`: the blocks shuffled, and within each block."""

    def __init__(
        self,
        n: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        num_replicas: int = 1,
        blocks: list[np.ndarray] | None = None,
    ) -> None:
        self.n, self.seed, self.shuffle, self.blocks = n, seed, shuffle, blocks
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start` counts this rank's already-consumed samples (for a resumed epoch)."""
        self.epoch, self.start = epoch, start

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        if self.blocks is not None:
            return block_order(self.blocks, self.seed, self.epoch)
        return np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)

    def mine(self) -> np.ndarray:
        """This rank's share of the epoch's order, from its first sample."""
        return self.order()[self.rank :: self.num_replicas]

    def batch(self, j: int, batch_size: int) -> list[int]:
        """The sample indices of this rank's `j`-th batch of the epoch."""
        return [int(i) for i in self.mine()[j * batch_size : (j + 1) * batch_size]]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.mine()[self.start :]:
            yield (self.epoch, int(i))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas)) - self.start
