"""Rows 9 and 9b: evaluation post-processing on the host, per CPU core: from the chosen candidate of
each pair to the four official metrics (choose the mask -> official size -> RLE -> challenge
JSON -> ground truth -> metrics), the run-level path against the per-pair pixel path it
replaced (tests/oracles.py), in the same process, interleaved.

The masks are at the real sizes: candidates at the crop size (ego 700x700, exo 532x952),
ground truth at the annotation size (ego 1408x1408, exo 2160x3840), official sizes 480x480
and 270x480; objects are ellipses covering 1-10% of the frame. The RLEs come from memory as
JSON text (as the cache stores them), so the figure is the computation, not HDF5 reads.
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
from oracles import per_pair_evaluate, per_pair_gt_samples, per_pair_records

from bench.common import Ctx, Row, median
from omama import rle
from omama.cache.records import Sample
from omama.metrics.groundtruth import build_gt_json
from omama.predict.challenge import challenge_json
from omama.predict.evaluate import measure
from omama.predict.scoring import Scored

TARGET = 2000.0  # pairs per CPU second
EGO, EXOS = "aria01", ("cam01", "cam02", "cam03", "cam04")
CROP = {"ego": (700, 700), "exo": (532, 952)}
ANNOTATED = {"ego": (1408, 1408), "exo": (2160, 3840)}
IMAGE = {"ego": (704, 704), "exo": (540, 960)}


class MemoryCache:
    """The reads of the evaluation (`omama.cache.reader.Cache`'s methods of these names),
    served from memory; RLEs kept as JSON text and parsed on each read, as the cache does."""

    def __init__(self) -> None:
        self.cands: dict[str, list[str]] = {}
        self.objs: dict[str, list[str]] = {}
        self.hw: dict[str, tuple[int, int]] = {}

    def cand_rle_texts(self, direction: str, key: str) -> list[str]:
        return self.cands[key]

    def obj_rle_texts(self, key: str) -> list[str]:
        return self.objs[key]

    def cand_rle(self, direction: str, key: str, i: int) -> dict:
        return json.loads(self.cands[key][i])

    def obj_rle(self, key: str, k: int) -> dict:
        return json.loads(self.objs[key][k])

    def orig_hw(self, key: str) -> tuple[int, int]:
        return self.hw[key]


def _ellipse(hw: tuple[int, int], centre, axes, angle) -> np.ndarray:
    m = np.zeros(hw, np.uint8)
    cv2.ellipse(m, centre, axes, angle, 0, 360, 1, -1)
    return m


def _object(rng) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Relative centre, relative axes and angle of an object covering 1-10% of the frame."""
    frac = rng.uniform(0.01, 0.1)
    ry = np.sqrt(frac / np.pi) * rng.uniform(0.7, 1.4)
    rx = frac / np.pi / ry
    return (rng.uniform(ry, 1 - ry), rng.uniform(rx, 1 - rx)), (ry, rx), rng.uniform(0, 180)


def _draw(obj, hw, jitter=0.0, rng=None) -> np.ndarray:
    (cy, cx), (ry, rx), ang = obj
    if jitter:
        cy, cx = cy + rng.normal(0, jitter), cx + rng.normal(0, jitter)
        ry, rx, ang = ry * rng.uniform(0.85, 1.15), rx * rng.uniform(0.85, 1.15), ang + 10
    h, w = hw
    centre = (int(cx * w), int(cy * h))
    axes = (max(1, int(rx * min(h, w))), max(1, int(ry * min(h, w))))
    return _ellipse(hw, centre, axes, ang)


def build(direction: str, n_frames: int, seed: int, n_objects: int = 3, n_cands: int = 8):
    """A stand-in cache, the samples and their scores for `direction`: every frame has one
    ego and four exo images, each object visible in a destination image 4 times in 5."""
    rng = np.random.default_rng(seed)
    cache, samples, scored = MemoryCache(), [], []
    variants = 4  # GT masks per (camera, object), reused over frames
    objs = {
        (cam, o): [_object(rng) for _ in range(variants)]
        for cam in (EGO, *EXOS)
        for o in range(n_objects)
    }
    gt_text = {}
    for (cam, o), objects in objs.items():
        role = "ego" if cam == EGO else "exo"
        for v, obj in enumerate(objects):
            gt_text[cam, o, v] = json.dumps(rle.encode(_draw(obj, ANNOTATED[role])))
    ego_src = direction == "ego2exo"
    for f in range(n_frames):
        frame, v = str(f * 30), f % variants
        for cam in (EGO, *EXOS):
            role = "ego" if cam == EGO else "exo"
            key = f"take/{cam}/{f * 30}"
            cache.objs[key] = [gt_text[cam, o, v] for o in range(n_objects)]
            cache.hw[key] = IMAGE[role]
            is_dst = (cam == EGO) != ego_src
            if is_dst:  # candidates at the crop size: the objects, jittered, and others
                cands = [_draw(objs[cam, o][v], CROP[role], 0.02, rng) for o in range(n_objects)]
                cands += [_draw(_object(rng), CROP[role]) for _ in range(n_cands - n_objects)]
                cache.cands[key] = [json.dumps(rle.encode(m)) for m in cands]
        seen = {(o, cam): rng.random() < 0.8 for o in range(n_objects) for cam in (EGO, *EXOS)}
        for o in range(n_objects):
            for exo in EXOS:
                src, dst = (EGO, exo) if ego_src else (exo, EGO)
                visible = seen[o, dst]
                s = Sample(
                    "take",
                    f"obj{o}",
                    src,
                    dst,
                    frame,
                    f"take/{src}/{f * 30}",
                    f"take/{dst}/{f * 30}",
                    o,
                    o if visible else -1,
                )
                best = o if rng.random() < 0.6 else int(rng.integers(n_cands))
                samples.append(s)
                scored.append(Scored(s, best, float(rng.random()), (best,) * 5, n_cands))
    return cache, samples, scored


def old_path(cache, direction, samples, scored):
    pred = challenge_json(direction, per_pair_records(cache, direction, scored))
    gt = build_gt_json(per_pair_gt_samples(cache, samples))
    return pred, gt, per_pair_evaluate(pred, gt, direction, strict=False)


def new_path(cache, direction, samples, scored):
    return measure(cache, direction, samples, scored)


def _timed(fn, *args) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, out


def run(ctx: Ctx) -> list[Row]:
    frames = 4 if ctx.plan.small else 34  # 12 pairs a frame
    reps = {"old": 1, "new": 2} if ctx.plan.small else {"old": 2, "new": 5}
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core: the per-core figure
    rows = []
    for direction in ("exo2ego", "ego2exo"):
        data = build(direction, frames, seed=11)
        n = len(data[1])
        times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        outs = {}
        new_path(data[0], direction, *data[1:])  # warm-up: cv2 index maps, imports
        for r in range(reps["new"]):  # interleaved, the cheap new path more often
            for name, fn in (("old", old_path), ("new", new_path)):
                if r >= reps[name]:
                    continue
                wall, cpu, outs[name] = _timed(fn, data[0], direction, *data[1:])
                times[name].append((wall, cpu))
        (p_old, g_old, m_old), (p_new, g_new, m_new) = outs["old"], outs["new"]
        same = json.dumps(p_old) == json.dumps(p_new) and g_old == g_new
        same = same and m_old.as_dict() == m_new.as_dict()
        cpu_old = median([c for _, c in times["old"]])
        cpu_new = median([c for _, c in times["new"]])
        wall_new = median([w for w, _ in times["new"]])
        per_core = n / cpu_new
        rows.append(
            Row(
                row="9" if direction == "exo2ego" else "9b",
                what=f"evaluation post-processing on the host, {direction}, {n} pairs at real "
                f"sizes (choose mask -> official size -> RLE -> GT -> 4 metrics), per core",
                project=f"{per_core:.0f} pairs/s per core (run-level path)",
                baseline=f"{n / cpu_old:.0f} pairs/s per core (per-pair pixel path)",
                ratio=cpu_old / cpu_new,
                target=f">= {TARGET:.0f} pairs/s per core; output identical to the pixel path",
                met=per_core >= TARGET and same,
                command=ctx.command("9"),
                note=f"{direction}: CPU seconds (all threads of the process, cv2 at 1 thread) "
                f"{cpu_new:.3f} vs {cpu_old:.3f} for {n} pairs; wall {wall_new:.3f} s; "
                f"prediction JSON, GT and metrics identical: {same}; RLEs served from memory "
                f"(HDF5 reads not included)",
                details={
                    "pairs": n,
                    "old_s": times["old"],
                    "new_s": times["new"],
                    "identical": same,
                    "pairs_per_cpu_s": per_core,
                },
            )
        )
    cv2.setNumThreads(threads)
    return rows
