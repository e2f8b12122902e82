"""The order of training samples: a seeded shuffle per epoch, resumable, split over ranks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Seeded per-epoch shuffle yielding (epoch, index); can start mid-epoch for --resume and
    hand each of `num_replicas` ranks its own strided part."""

    def __init__(
        self,
        n: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        num_replicas: int = 1,
    ) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """`start` counts this rank's already-consumed samples (for a resumed epoch)."""
        self.epoch, self.start = epoch, start

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch, 7]).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine = self.order()[self.rank :: self.num_replicas]
        for i in mine[self.start :]:
            yield (self.epoch, int(i))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas)) - self.start
