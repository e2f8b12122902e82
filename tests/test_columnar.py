"""Whole-split work on the samples' columns gives what one `Sample` per row gave.

The oracles below are the per-object code these functions replaced (a `Sample` per row, sets
and dicts of keys), written plainly; each is compared with the columnar path on the session
cache and on in-memory tables of N and 4N rows, also through a shuffled view of the rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.cache.samples import SampleTable
from omama.cache.verify import sample_problems
from omama.loader.order import take_blocks
from omama.loader.rolling_store import RollingTokenStore
from omama.loader.token_store import TokenStore, role_keys

CPU = torch.device("cpu")


# --- the per-object oracles ---------------------------------------------------------------
def old_role_keys(samples: list[Sample]) -> dict[str, list[str]]:
    return {"src": sorted({s.src for s in samples}), "dst": sorted({s.dst for s in samples})}


def old_bytes_needed(cache, samples: list[Sample]) -> int:
    total = 0
    for keys in old_role_keys(samples).values():
        if keys:
            t, c = cache.shape(cache.image(keys[0]), "tokens")
            total += len(keys) * t * c * 2
    return total


def old_take_blocks(cache, samples: list[Sample], budget: int) -> list[list[int]]:
    by_take: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_take.setdefault(s.take, []).append(i)
    blocks: list[list[int]] = []
    used = budget + 1
    for take in sorted(by_take):
        rows = by_take[take]
        need = old_bytes_needed(cache, [samples[i] for i in rows])
        if used + need > budget:
            blocks.append([])
            used = 0
        blocks[-1] += rows
        used += need
    return blocks


def old_block_images(samples: list[Sample], blocks) -> list[dict[str, list[int]]]:
    keys = old_role_keys(samples)
    rows = {r: {k: i for i, k in enumerate(keys[r])} for r in keys}
    out = []
    for b in blocks:
        k = old_role_keys([samples[i] for i in b])
        out.append({r: [rows[r][x] for x in k[r]] for r in keys})
    return out


def old_sample_problems(path, samples, images, cands, n_objects, skipped, direction):
    problems = []
    for i, s in enumerate(samples):
        if s.src in skipped or s.dst in skipped:
            continue
        if s.src not in images:
            problems.append(f"{path}: sample {i} names source image {s.src}, not cached")
        elif s.dst not in images or s.dst not in cands:
            problems.append(
                f"{path}: sample {i} names destination {s.dst}, not cached for {direction}"
            )
        elif not 0 <= s.src_k < n_objects.get(s.src, s.src_k + 1) or not (
            -1 <= s.dst_k < n_objects.get(s.dst, s.dst_k + 1)
        ):
            problems.append(
                f"{path}: sample {i} names object rows {s.src_k}/{s.dst_k} that the "
                f"images {s.src} / {s.dst} do not have"
            )
    return problems


# --- tables -------------------------------------------------------------------------------
class FakeCache:
    """Token shapes by image key (two grids, so a take's first key matters)."""

    def image(self, key: str) -> str:
        return key

    def shape(self, rec: str, field: str) -> tuple[int, int]:
        assert field == "tokens"
        return (4 if rec.endswith("0") else 9, 3)


def synthetic(n: int, seed: int) -> SampleTable:
    """n pairs over n // 20 takes, 5 cameras and 10 frames each, in a shuffled order."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        take = f"take{int(rng.integers(max(1, n // 20))):05d}"
        cams = rng.choice(5, 2, replace=False)
        frame = str(int(rng.integers(10)))
        src, dst = (f"{take}/cam{c}/{frame}" for c in cams)
        obj = int(rng.integers(4))
        out.append(
            Sample(
                take, f"obj{obj}", f"cam{cams[0]}", f"cam{cams[1]}", frame, src, dst,
                int(rng.integers(-1, 4)), int(rng.integers(-2, 4)),
            )
        )  # fmt: skip
    return SampleTable.from_samples(out)


def tables(cache_dir):
    """(cache, table) pairs: the session cache's train split, N and 4N synthetic rows, and a
    shuffled view of half of each."""
    real = Cache(cache_dir)
    out = [(real, real.samples("exo2ego", "train"))]
    out += [(FakeCache(), synthetic(n, seed)) for seed, n in enumerate((600, 2400))]
    rng = np.random.default_rng(7)
    views = [(c, t.take_rows(rng.permutation(len(t))[: len(t) // 2])) for c, t in out]
    return out + views


# --- the comparisons ----------------------------------------------------------------------
def test_token_store_images_and_bytes_are_those_of_the_objects(cache_dir):
    for cache, table in tables(cache_dir):
        objects = list(table)
        assert role_keys(table) == old_role_keys(objects)
        assert TokenStore.bytes_needed(cache, table) == old_bytes_needed(cache, objects)
        if isinstance(cache, Cache):
            store = TokenStore.load(cache, table, CPU)
            assert store.rows == {
                r: {k: i for i, k in enumerate(v)} for r, v in old_role_keys(objects).items()
            }


def test_take_blocks_and_block_images_are_those_of_the_objects(cache_dir):
    for cache, table in tables(cache_dir):
        objects = list(table)
        whole = old_bytes_needed(cache, objects)
        for share in (0.05, 0.2, 0.5, 2.0):
            budget = int(whole * share)
            blocks = take_blocks(cache, table, budget)
            assert [b.tolist() for b in blocks] == old_take_blocks(cache, objects, budget)
            assert all(b.dtype == np.int64 for b in blocks)
            store = RollingTokenStore.for_blocks(cache, table, blocks, CPU, 2)
            assert store.keys == old_role_keys(objects)
            got = [{r: v.tolist() for r, v in b.items()} for b in store.block_images]
            assert got == old_block_images(objects, blocks)


@pytest.mark.parametrize("n", [600, 2400])
def test_verify_findings_are_those_of_the_objects(n, cache_dir):
    table = synthetic(n, n)
    objects = list(table)
    keys = sorted({s.src for s in objects} | {s.dst for s in objects})
    rng = np.random.default_rng(n)
    images = {k for k in keys if rng.random() > 0.05}
    cands = {k for k in keys if rng.random() > 0.05}
    skipped = {k for k in keys if rng.random() < 0.02}
    n_objects = {k: int(rng.integers(-1, 4)) for k in keys if rng.random() > 0.1}
    for view in (table, table.take_rows(rng.permutation(n)[: n // 3])):
        args = ("x.npz", images, cands, n_objects, skipped, "exo2ego")
        got = sample_problems(args[0], view, *args[1:])
        assert got == old_sample_problems(args[0], list(view), *args[1:])
        assert len(got) > 10  # each kind of finding occurs
        kinds = {p.split(" names ")[1].split()[0] for p in got}
        assert kinds == {"source", "destination", "object"}


def test_verify_findings_on_the_session_cache(cache_dir):
    cache = Cache(cache_dir)
    table = cache.samples("exo2ego", "train")
    images = dict(cache.manifest.images)
    cands = dict(cache.manifest.candidates["exo2ego"])
    n_objects = {k: 2 for k in images}
    args = ("x.npz", images, cands, n_objects, set(), "exo2ego")
    assert sample_problems(args[0], table, *args[1:]) == old_sample_problems(
        args[0], list(table), *args[1:]
    )
    del images[table[0].src], cands[table[1].dst]
    args = ("x.npz", images, cands, {}, {table[2].src}, "exo2ego")
    got = sample_problems(args[0], table, *args[1:])
    assert got and got == old_sample_problems(args[0], list(table), *args[1:])
