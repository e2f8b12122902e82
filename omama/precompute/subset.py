"""A seeded fraction of a pair list (the reference trains on 20 %), stable under reordering.

Each pair gets a key sha256(seed, take, object, cameras, frame); the fraction with the smallest
keys is kept. The choice depends only on the pairs themselves, so a shuffled or re-exported
pair file gives the same subset, and a larger fraction with the same seed contains a smaller
one. Kept pairs stay in file order.
"""

from __future__ import annotations

import hashlib

from omama.dataset.layout import Pair
from omama.errors import OmamaError


def pair_key(pair: Pair, seed: int) -> bytes:
    text = "\x1f".join(
        (str(seed), pair.take, pair.obj, pair.ego_cam, pair.exo_cam, str(int(pair.frame)))
    )
    return hashlib.sha256(text.encode()).digest()


def subset_size(n: int, fraction: float) -> int:
    """round(fraction * n), at least one pair."""
    return max(1, min(n, int(fraction * n + 0.5)))


def select_fraction(pairs: list[Pair], fraction: float, seed: int) -> list[Pair]:
    """The `fraction` of `pairs` with the smallest seeded keys, in their original order."""
    if not 0.0 < fraction <= 1.0:
        raise OmamaError(f"--pairs-fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return list(pairs)
    ranked = sorted(pairs, key=lambda p: pair_key(p, seed))
    keep = set(ranked[: subset_size(len(pairs), fraction)])
    return [p for p in pairs if p in keep]


def subset_record(fraction: float, seed: int, n_all: int, n_kept: int) -> dict:
    """What the manifest records about a split built from a fraction of its pair file."""
    return {"pairs_fraction": fraction, "seed": seed, "pairs_in_file": n_all, "pairs": n_kept}
