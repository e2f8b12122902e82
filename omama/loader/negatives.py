"""The choice of N candidates for one training sample (docs/reference.md, Training sample),
as a pure function of an RNG."""

from __future__ import annotations

import numpy as np


def choose_negatives(
    n_cands: int,
    n_masks: int,
    anchor: int,
    adj_row: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of the N-1 negatives among the image's candidates.

    Visible object (anchor >= 0): the anchor's adjacency neighbours (itself excluded); more
    than N-1 of them -> N-1 drawn without replacement; fewer -> all, topped up at random from
    all candidates (with replacement only when there are too few candidates).
    Invisible object (anchor < 0): N-1 random candidates.
    """
    k = n_masks - 1
    if anchor >= 0:
        row = np.asarray(adj_row, dtype=bool).copy()
        row[anchor] = False
        neighbours = np.flatnonzero(row)
        if len(neighbours) > k:
            negatives = rng.choice(neighbours, k, replace=False)
        else:
            rest = k - len(neighbours)
            extra = rng.choice(n_cands, rest, replace=n_cands < rest)
            negatives = np.concatenate([neighbours, extra])
    else:
        negatives = rng.choice(n_cands, k, replace=n_cands < k)
    return negatives.astype(np.int64)
