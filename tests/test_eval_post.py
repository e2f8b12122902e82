"""Evaluation post-processing on runs (BENCHMARKS.md rows 9 and 9b) against the per-pair pixel
path it replaced (tests/oracles.py): the same RLE bytes, the same numbers, the same errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from oracles import (
    per_pair_evaluate,
    per_pair_gt_samples,
    per_pair_records,
    pixel_scores,
)

from omama import parallel, rle, rle_runs
from omama.cache.reader import Cache
from omama.cache.rle_texts import RleReads
from omama.errors import OmamaError
from omama.metrics.groundtruth import build_gt_json
from omama.metrics.official import evaluate
from omama.metrics.runs import run_scores
from omama.metrics.validate import eval_size
from omama.predict.challenge import challenge_json
from omama.predict.evaluate import gt_samples, measure
from omama.predict.scoring import Scored, prediction_records

# real sizes: annotation (GT) sizes and crop sizes, and small odd ones that enlarge
GT_SIZES = [(1408, 1408), (2160, 3840), (96, 64), (31, 17), (270, 480)]
CROP_SIZES = [(700, 700), (532, 952), (952, 532), (40, 30)]


def random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Noise, ellipses (some crossing the border), their complement, empty or full."""
    kind = rng.integers(5)
    if kind == 0:
        return (rng.random((h, w)) < rng.uniform(0.001, 0.5)).astype(np.uint8)
    m = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(0, 4)):
        centre = (int(rng.integers(-20, w + 20)), int(rng.integers(-20, h + 20)))
        axes = (int(rng.integers(1, w // 3 + 2)), int(rng.integers(1, h // 3 + 2)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    if kind == 2:
        m = 1 - m
    if kind == 3:
        m[:] = rng.integers(2)
    return m


def plain_runs(counts: bytes) -> list[int] | None:
    """pycocotools' counts loop, one character at a time."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return None
            c = counts[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return None if any(r < 0 for r in runs) else runs


def test_parse_counts_matches_the_character_loop(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        counts = rle.encode(random_mask(rng, h, w))["counts"].encode()
        got = rle_runs.parse_counts(counts)
        assert got.tolist() == plain_runs(counts) and got.sum() == h * w
        garbage = bytes(rng.integers(48, 112, int(rng.integers(1, 30))).astype(np.uint8))
        want = plain_runs(garbage)
        got = rle_runs.parse_counts(garbage)
        assert (got is None) == (want is None)
        if want is not None:
            assert got.tolist() == want
    assert rle_runs.parse_counts(b"").tolist() == []


@pytest.mark.parametrize(
    "bad",
    [
        {"size": [4, 4], "counts": "0"},
        {"size": [4, 4], "counts": "7"},
        {"size": [4, 4], "counts": "P"},
        {"size": [4], "counts": "8"},
        {"counts": "8"},
        {"size": [2, 2], "counts": [1, 3]},
    ],
)
def test_a_bad_rle_is_refused_with_decodes_message(bad):
    with pytest.raises(OmamaError) as want:
        rle.decode(bad, "here")
    with pytest.raises(OmamaError) as got:
        rle_runs.runs_of(bad, "here")
    assert str(got.value) == str(want.value)


def test_padded_counts_pycocotools_never_writes_still_parse():
    # 4x4 empty mask, its one run (16) written with two padding characters of zero bits
    counts = bytes([48 + 0x20 + 16, 48 + 0x20, 48])
    h, w, runs = rle_runs.runs_of({"size": [4, 4], "counts": counts.decode()})
    assert (h, w) == (4, 4) and runs.tolist() == [16]


def test_resize_rle_is_cv2_nearest_byte_for_byte(seed):
    rng = np.random.default_rng(seed)
    cases = [(s, eval_size(*s)) for s in GT_SIZES + CROP_SIZES]
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        cases.append(((h, w), (int(rng.integers(1, 130)), int(rng.integers(1, 130)))))
    for (h, w), (th, tw) in cases:
        for _ in range(2):
            m = random_mask(rng, h, w)
            want = rle.encode(cv2.resize(m, (tw, th), interpolation=cv2.INTER_NEAREST))
            assert rle_runs.resize_rle(rle.encode(m), th, tw) == want, ((h, w), (th, tw))
    m = random_mask(rng, 37, 23)  # same size: the canonical re-encoding
    assert rle_runs.resize_rle(rle.encode(m), 37, 23) == rle.encode(m)


def test_run_scores_equal_the_pixel_metrics(seed):
    rng = np.random.default_rng(seed)
    for i in range(40):
        gh, gw = GT_SIZES[i % len(GT_SIZES)]
        h, w = eval_size(gh, gw)
        gt = random_mask(rng, gh, gw)
        if i % 2:  # a prediction near the GT, to give partial overlaps
            pred = cv2.resize(gt, (w, h), interpolation=cv2.INTER_NEAREST)
            pred = np.roll(pred, tuple(int(v) for v in rng.integers(-8, 9, 2)), axis=(0, 1))
        else:
            pred = random_mask(rng, h, w)
        p, g = rle.encode(pred), rle.encode(gt)
        assert run_scores(p, g, "x") == pixel_scores(p, g)


@pytest.mark.parametrize("case", ["both empty", "pred empty", "gt empty", "full", "corners"])
def test_run_scores_edge_cases(case):
    h, w = 270, 480
    pred, gt = np.zeros((h, w), np.uint8), np.zeros((2160, 3840), np.uint8)
    if case in ("pred empty", "full"):
        gt[100:900, 200:1500] = 1
    if case in ("gt empty", "full"):
        pred[:] = 1
    if case == "corners":  # far apart, both touching the image border
        pred[-5:, -7:] = 1
        gt[:40, :33] = 1
    p, g = rle.encode(pred), rle.encode(gt)
    assert run_scores(p, g, "x") == pixel_scores(p, g)


def test_run_scores_refuses_a_prediction_of_another_size():
    p = rle.encode(np.zeros((480, 480), np.uint8))
    g = rle.encode(np.zeros((2160, 3840), np.uint8))
    with pytest.raises(OmamaError, match=r"mask is \(480, 480\).*needs \(270, 480\)"):
        run_scores(p, g, "take t")


def _chunked(context, items):
    if "boom" in items:
        raise OmamaError(f"boom in chunk starting {items[0]}")
    return [(context, x, len(items)) for x in items]


def test_ordered_map_keeps_order_and_raises_the_first_failing_chunk():
    items = [str(i) for i in range(23)]
    here = parallel.ordered_map(_chunked, "c", items, workers=0)
    assert [x for _, x, _ in here] == items and {n for _, _, n in here} == {23}
    forked = parallel.ordered_map(_chunked, "c", items, workers=3, chunk=4, min_items=1)
    assert [(c, x) for c, x, _ in forked] == [("c", x) for x in items]
    assert {n for _, _, n in forked} == {4, 3}  # really cut into chunks
    bad = items[:9] + ["boom"] + items[9:15] + ["boom"]
    with pytest.raises(OmamaError, match="chunk starting 8"):
        parallel.ordered_map(_chunked, "c", bad, workers=2, chunk=4, min_items=1)


def test_rle_reads_equal_the_cache_reads(cache_dir):
    cache = Cache(cache_dir)
    reads = RleReads(cache, "exo2ego")
    for s in cache.samples("exo2ego", "test"):
        assert reads.obj_rle(s.src, s.src_k) == cache.obj_rle(s.src, s.src_k)
        assert reads.orig_hw(s.dst) == cache.orig_hw(s.dst)
        for i in range(cache.cand_count("exo2ego", s.dst)):
            assert reads.cand_rle(s.dst, i) == cache.cand_rle("exo2ego", s.dst, i)


class _CountingCache:
    """Stands in for a Cache: candidate RLE texts named after their image, reads counted."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def cand_rle_texts(self, direction: str, key: str) -> list[str]:
        self.reads.append(key)
        return [json.dumps({"size": [1, 1], "counts": key})]


def test_rle_reads_keep_whole_takes_and_read_each_image_once_per_take():
    cache = _CountingCache()
    reads = RleReads(cache, "exo2ego")
    takes = [f"take{t}" for t in range(4)]
    for take in takes:  # 600 frames (more than any fixed image count), three objects
        keys = [f"{take}/aria01/{f}" for f in range(600)]
        for _ in range(3):
            for key in keys:
                assert reads.cand_rle(key, 0)["counts"] == key
        assert reads.takes_held[-1] == take and len(reads.takes_held) <= 2
    assert len(cache.reads) == 4 * 600 == len(set(cache.reads))  # each image read once


def _scored(cache: Cache, split: str, seed: int) -> tuple[list, list[Scored]]:
    rng = np.random.default_rng(seed)
    samples = cache.samples("exo2ego", split)
    scored = []
    for s in samples:
        n = cache.cand_count("exo2ego", s.dst)
        best = int(rng.integers(n))
        scored.append(Scored(s, best, float(rng.random()), (best,) * 5, n))
    return samples, scored


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_on_the_synthetic_cache_equals_the_per_pair_path(
    cache_dir, workers, seed, monkeypatch
):
    monkeypatch.setattr(parallel, "MIN_ITEMS", 1)  # fork the workers even for a few pairs
    monkeypatch.setattr(parallel, "CHUNK", 3)
    cache = Cache(cache_dir)
    for split in ("train", "test"):
        samples, scored = _scored(cache, split, seed)
        pred, gt, metrics = measure(cache, "exo2ego", samples, scored, workers=workers)
        want_pred = challenge_json("exo2ego", per_pair_records(cache, "exo2ego", scored))
        want_gt = build_gt_json(per_pair_gt_samples(cache, samples))
        assert json.dumps(pred) == json.dumps(want_pred)
        assert json.dumps(gt) == json.dumps(want_gt)
        want = per_pair_evaluate(want_pred, want_gt, "exo2ego", strict=False)
        assert metrics.as_dict() == want.as_dict() and metrics.n > 0
        crop = prediction_records(cache, "exo2ego", scored, "crop", workers)
        assert crop == per_pair_records(cache, "exo2ego", scored, "crop")
        assert gt_samples(cache, samples) == per_pair_gt_samples(cache, samples)


def test_evaluate_names_the_first_bad_prediction_with_workers(cache_dir, seed, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_ITEMS", 1)
    monkeypatch.setattr(parallel, "CHUNK", 2)
    cache = Cache(cache_dir)
    samples, scored = _scored(cache, "train", seed)
    pred, gt, _ = measure(cache, "exo2ego", samples, scored)
    frames = [
        (take, obj, pair, frame)
        for take, t in pred["exo-ego"]["results"].items()
        for obj, pairs in t["masks"].items()
        for pair, fr in pairs.items()
        for frame in fr
    ]
    for take, obj, pair, frame in frames[3:5]:  # two broken masks: the first is named
        entry = pred["exo-ego"]["results"][take]["masks"][obj][pair][frame]
        entry["pred_mask"] = {**entry["pred_mask"], "counts": entry["pred_mask"]["counts"][:-1]}
    errors = []
    for workers in (0, 2):
        with pytest.raises(OmamaError) as exc:
            evaluate(pred, gt, "exo2ego", strict=False, workers=workers)
        errors.append(str(exc.value))
    assert errors[0] == errors[1] and "RLE does not decode" in errors[0]
