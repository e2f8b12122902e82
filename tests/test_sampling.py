"""Training-sample negatives (docs/reference.md, Training sample) against their plain reading,
and their properties at random draws."""

import numpy as np
import pytest

from omama.loader.negatives import choose_negatives
from omama.loader.sampler import EpochSampler


def reference_negatives(adj, anchor, n_cands, n_masks, rng):
    """docs/reference.md, Training sample, as written: neighbours of the anchor, topped up from
    all candidates."""
    adj = adj.copy()
    adj[anchor, anchor] = 0
    neighbours = np.where(adj[anchor] == 1)[0]
    k = n_masks - 1
    if len(neighbours) > k:
        return rng.choice(neighbours, k, replace=False)
    rest = k - len(neighbours)
    extra = rng.choice(n_cands, rest, replace=n_cands < rest)
    return np.concatenate([neighbours, extra])


@pytest.mark.parametrize("n_cands,n_masks", [(50, 8), (10, 32), (5, 4), (3, 32)])
def test_matches_reference_reading(n_cands, n_masks, seed):
    adj = (np.random.default_rng(seed).random((n_cands, n_cands)) < 0.3).astype(int)
    adj = np.maximum(adj, adj.T)
    for anchor in range(n_cands):
        got = choose_negatives(n_cands, n_masks, anchor, adj[anchor], np.random.default_rng(anchor))
        want = reference_negatives(adj, anchor, n_cands, n_masks, np.random.default_rng(anchor))
        np.testing.assert_array_equal(got, want)


def test_visible_properties(seed):
    rng = np.random.default_rng(seed)
    n, n_masks = 40, 8
    row = np.zeros(n, bool)
    row[[3, 4, 5, 9, 11, 12, 20, 30, 31, 33]] = True
    row[4] = True  # anchor itself is a neighbour of itself in order-2 adjacency
    neg = choose_negatives(n, n_masks, 4, row, rng)
    assert len(neg) == n_masks - 1
    assert len(set(neg.tolist())) == n_masks - 1  # without replacement
    assert 4 not in neg and row[neg].all()
    few = np.zeros(n, bool)
    few[[1, 2]] = True
    neg = choose_negatives(n, n_masks, 0, few, rng)
    assert neg[:2].tolist() == [1, 2] and len(neg) == n_masks - 1


def test_invisible_and_tiny_candidate_sets(seed):
    rng = np.random.default_rng(seed)
    neg = choose_negatives(3, 32, -1, None, rng)
    assert len(neg) == 31 and set(neg.tolist()) <= {0, 1, 2}
    neg = choose_negatives(100, 32, -1, None, rng)
    assert len(set(neg.tolist())) == 31


def test_epoch_sampler_resume_and_ranks():
    s = EpochSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:]
    assert sorted(i for _, i in full) == list(range(10))
    parts = []
    for rank in range(3):
        r = EpochSampler(10, seed=3, rank=rank, num_replicas=3)
        r.set_epoch(2)
        parts += list(r)
    assert sorted(parts) == sorted(full)
    s.set_epoch(3)
    assert [i for _, i in s] != [i for _, i in full]
