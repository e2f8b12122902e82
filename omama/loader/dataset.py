"""Training samples straight from the cache: no JPEG, no mask decode, no backbone, no Qhull.

Each item is a pure function of (seed, epoch, index), so any worker count, a resumed run or
another rank draws the same candidates for the same sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from omama.cache.reader import Cache
from omama.loader.sampling import choose_negatives


def read_rows(ds, rows: np.ndarray) -> np.ndarray:
    """Read only the given rows (h5py wants them sorted and unique), in the given order."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    return ds[uniq][inverse]


class TrainSamples(Dataset):
    def __init__(self, cache: Cache, direction: str, split: str, n_masks: int, seed: int) -> None:
        self.cache = cache
        self.direction = direction
        self.samples = cache.samples(direction, split)
        self.n_masks = n_masks
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = index
        s = self.samples[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        cache = self.cache
        src_g = cache.image_group(s.src)
        dst_g = cache.image_group(s.dst)
        cand_g = cache.cand_group(self.direction, s.dst)
        anchor = int(cand_g["anchor"][s.dst_k]) if s.dst_k >= 0 else -1
        n_cands = cand_g["desc"].shape[0]
        adj_row = cand_g["adj"][anchor] if anchor >= 0 else None
        negatives = choose_negatives(n_cands, self.n_masks, anchor, adj_row, rng)
        if anchor >= 0:  # visible: the positive is the ground-truth mask's own descriptor
            positive = dst_g["obj_desc"][s.dst_k]
            neg_desc = read_rows(cand_g["desc"], negatives)
        else:  # invisible: a random candidate stands in, and the loss ignores the sample
            pos_idx = int(rng.integers(n_cands))
            both = read_rows(cand_g["desc"], np.append(negatives, pos_idx))
            neg_desc, positive = both[:-1], both[-1]
        slot = int(rng.integers(0, self.n_masks))
        cand_desc = np.insert(neg_desc, slot, positive, axis=0)
        return {
            "src_tokens": torch.from_numpy(src_g["tokens"][()]),
            "dst_tokens": torch.from_numpy(dst_g["tokens"][()]),
            "src_desc": torch.from_numpy(src_g["obj_desc"][s.src_k]),
            "cand_desc": torch.from_numpy(np.ascontiguousarray(cand_desc)),
            "pos_index": torch.tensor(slot, dtype=torch.long),
            "visible": torch.tensor(float(anchor >= 0)),
        }


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


def open_cache(path: str | Path) -> Cache:
    return Cache(path)
