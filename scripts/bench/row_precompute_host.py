"""Row 10: precompute host work vs its floor (BENCHMARKS.md, "Precompute host work vs its floor").

The precompute's host side per image, everything but the backbone forward, against the part
of it no implementation can avoid: reading and decoding the JPEG, inflating the candidate npz
and decoding the annotation RLEs. Both run in this one process, one thread, on the same real-
size images (704x704 ego, 540x960 exo JPEGs; 60-200 candidates per destination image), and
are interleaved image by image over several rounds, so that a busy host slows both alike.

The stage's host work calls the precompute's own functions in the order `build` runs them:
the worker's `PrepareDataset` item (decode, crop, annotation masks, candidate masks and boxes,
centroid adjacency, candidate RLE strings), the pickling a DataLoader worker pays to hand the
item to the main process, then the main process's share: stored tokens, tight boxes, anchors,
the records and the HDF5 writes (the shard's fsync and hash spread over its images). The
backbone is replaced by random fp16 tokens of the right shape. Descriptor pooling (dense map
and mask descriptors) runs on the accelerator on a GPU node; it is timed alongside and shown
apart, not counted in the ratio. Times are CPU seconds of this thread (robust to other
tenants); wall seconds are kept in the details.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils

from bench.common import Ctx, Row, median
from omama import rle
from omama.backbones import DEFAULT_BACKBONE
from omama.cache.quant import store_tokens
from omama.cache.records import image_key
from omama.cache.writer import ShardWriter
from omama.dataset.candidates import candidate_paths, load_candidates
from omama.dataset.layout import Annotations, image_path
from omama.masks import count_boxes, row_col_counts
from omama.precompute import descriptors
from omama.precompute.build import PrepareDataset, candidate_record, image_record
from omama.precompute.jobs import Job
from omama.precompute.options import PrecomputeConfig
from omama.synth import SynthConfig, generate

PATCH, WIDTH = DEFAULT_BACKBONE.patch, DEFAULT_BACKBONE.width
log = logging.getLogger("bench")

TARGET = 1.5  # host work per image at most this many times its floor, per core
SEED = 11
N_CANDIDATES = "60-200"


@dataclass(frozen=True)
class Image:
    """One image of the row's dataset, as a precompute job with its candidate folder."""

    job: Job
    masks_dir: Path


def ensure_inputs(ctx: Ctx) -> tuple[Path, list[Image]]:
    """Real-size synthetic images (3 takes, every image a destination of one direction),
    generated once into the bench's scratch folder and reused while the sizes match."""
    small = ctx.plan.small
    frames = 1 if small else 2
    root = ctx.out / "data-host"
    want = {"seed": SEED, "small": small, "frames": frames, "n_candidates": N_CANDIDATES}
    marker = ctx.out / "data-host.json"
    if not (marker.exists() and json.loads(marker.read_text()) == want):
        t0 = time.perf_counter()
        shutil.rmtree(root, ignore_errors=True)
        cfg = SynthConfig(
            seed=SEED,
            small=small,
            takes=3,
            frames=frames,
            portrait=False,
            n_candidates=None if small else N_CANDIDATES,
        )
        generate(cfg, root)
        marker.write_text(json.dumps(want))
        log.info("row 10: real-size dataset in %.1f s", time.perf_counter() - t0)
    ann = Annotations(root)
    images = []
    for masks_dir in sorted(root.glob("Masks_*_*")):
        for npz in sorted(masks_dir.glob("*/*/*_masks.npz")):
            take, cam, frame = npz.parent.parent.name, npz.parent.name, npz.name.split("_")[0]
            key = image_key(take, cam, frame)
            objects = tuple(ann.objects_at(take, cam, frame))
            images.append(Image(Job(key, take, cam, frame, objects, True, True), masks_dir))
    return root, images


def floor_work(root: Path, ann: Annotations, im: Image) -> int:
    """What cannot be avoided: the JPEG read and decoded, the candidate npz inflated, the
    annotation RLEs decoded. Returns a byte count so that nothing is optimised away."""
    job = im.job
    data = image_path(root, job.take, job.cam, job.frame).read_bytes()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    total = bgr.nbytes
    masks_path, _ = candidate_paths(im.masks_dir, job.take, job.cam, job.frame)
    with np.load(masks_path) as z:
        total += z["arr_0"].nbytes
    for obj in job.objects:
        r = ann.rle(job.take, obj, job.cam, job.frame)
        total += mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}).nbytes
    return total


def rle_plain(masks: np.ndarray, counts: tuple[np.ndarray, np.ndarray]) -> int:
    """The candidates' RLE strings as `prepare` made them before: `rle.encode` per mask."""
    return sum(len(rle.encode(m)["counts"]) for m in masks)


def rle_boxed(masks: np.ndarray, counts: tuple[np.ndarray, np.ndarray]) -> int:
    """As `prepare` makes them now: each mask's box from the row/column counts its centroid
    already took, then `rle.encode_boxed`."""
    boxes = count_boxes(*counts)
    return sum(len(rle.encode_boxed(m, b)["counts"]) for m, b in zip(masks, boxes, strict=True))


class HostStage:
    """The precompute's host work per image, in the functions and order `build` uses."""

    def __init__(self, root: Path, ann: Annotations, images: list[Image], scratch: Path) -> None:
        self.root, self.ann, self.scratch = root, ann, scratch
        self.sets = {
            im.masks_dir: PrepareDataset(
                [im.job], root=root, masks_dir=im.masks_dir, ann=ann, patch=PATCH
            )
            for im in images
        }
        self.features = PrecomputeConfig().features
        self.gen = torch.Generator().manual_seed(0)
        shutil.rmtree(scratch, ignore_errors=True)
        self.writer = ShardWriter(scratch, "host", lambda *a: None, max_records=1 << 30)
        self.pool_apart = False  # time the records' pooling on its own (last round)
        self.device_cpu = self.device_wall = 0.0  # dense map and pooling: not the host's
        self.tokens: dict[tuple[int, int], torch.Tensor] = {}  # stand-in for the backbone
        self.n_cands: dict[str, int] = {}
        self.item_bytes: dict[str, int] = {}  # pickled size of each worker item
        self.sizes: set[str] = set()  # JPEG sizes seen

    def prepare(self, im: Image) -> dict:
        """The DataLoader worker's item."""
        ds = self.sets[im.masks_dir]
        ds.jobs = [im.job]
        item = ds[0]
        if "error" in item:
            raise RuntimeError(item["error"])
        return item

    def transfer(self, item: dict) -> dict:
        """What a worker pays to hand the item to the main process (pickled through a pipe;
        the pipe's copies come on top)."""
        blob = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        self.item_bytes[item["job"].key] = len(blob)
        return pickle.loads(blob)

    def _device(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run device work (on a GPU node), its time kept apart from the host's."""
        c0, t0 = time.thread_time(), time.perf_counter()
        out = fn()
        self.device_cpu += time.thread_time() - c0
        self.device_wall += time.perf_counter() - t0
        return out

    def main_side(self, item: dict) -> None:
        """The main process's share after the backbone: records and HDF5 writes. The dense
        map and the pooling are timed apart (`device_cpu`); the records are built with a
        stand-in for the pooling, which runs on its own in the rounds with `pool_apart`."""
        h, w = item["hw"]
        grid = (h // PATCH, w // PATCH)
        toks = self.tokens.get(grid)
        if toks is None:
            toks = torch.randn(grid[0] * grid[1], WIDTH, generator=self.gen).half()
            self.tokens[grid] = toks
        stored = store_tokens(toks, self.features)
        dense = self._device(lambda: descriptors.dense_map(stored.readback, grid))
        obj_boxes = item["obj_boxes"]
        if self.pool_apart:
            for masks, boxes in (
                (item["obj_small"], obj_boxes),
                (item["cand_small"], item["cand_boxes"]),
            ):
                self._device(
                    lambda m=masks, b=boxes: descriptors.mask_descriptors(
                        dense, torch.from_numpy(m), torch.as_tensor(b), (h, w)
                    )
                )
        with mock.patch.object(descriptors, "mask_descriptors", _no_pooling):
            img = image_record(item, stored, dense, obj_boxes, PATCH)
            cand = candidate_record(item, dense, obj_boxes)
        key = item["job"].key
        self.n_cands[key] = len(item["cand_small"])
        self.sizes.add("x".join(map(str, item["orig_hw"])))
        self.writer.add_image(key, img)
        self.writer.add_candidates("exo2ego", key, cand)

    def close(self) -> None:
        """Publish the shard: fsync, rename, sha256 (spread over the round's images)."""
        self.writer.close_shard()
        for f in (self.scratch / "shards").glob("*.h5"):
            f.unlink()


def _no_pooling(
    dense: torch.Tensor, masks: torch.Tensor, boxes: object, crop_hw: object = None
) -> torch.Tensor:
    """Zeros of the descriptors' shape: the records' pooling, timed apart (device work)."""
    return torch.zeros(masks.shape[0], 2 * dense.shape[0])


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) of one call."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    return time.thread_time() - c0, time.perf_counter() - t0


def run(ctx: Ctx) -> list[Row]:
    root, images = ensure_inputs(ctx)
    ann = Annotations(root)
    for im in images:  # the annotation files are parsed once per run, not per image
        ann.masks(im.job.take)
    rounds = 2 if ctx.plan.small else 5
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # per image and core: a DataLoader worker runs one thread
    cv2.setNumThreads(1)
    stage = HostStage(root, ann, images, ctx.out / "host-cache")
    parts = ("floor", "prepare", "transfer", "main", "close")
    cpu: dict[str, list[float]] = {k: [] for k in parts}
    wall: dict[str, list[float]] = {k: [] for k in parts}
    rle_cpu: dict[str, list[float]] = {}
    try:
        for r in range(rounds + 1):  # round 0 warms caches, imports and allocators
            sums = dict.fromkeys(parts, 0.0)
            rle_sums = {"rle_plain": 0.0, "rle_boxed": 0.0}  # inside prepare: not added again
            walls = dict.fromkeys(parts, 0.0)
            stage.device_cpu = stage.device_wall = 0.0
            stage.pool_apart = r == rounds
            for im in images:
                box: dict = {}
                for k, fn in (
                    ("floor", lambda im=im: floor_work(root, ann, im)),
                    ("prepare", lambda im=im, b=box: b.update(item=stage.prepare(im))),
                    ("transfer", lambda b=box: b.update(item=stage.transfer(b["item"]))),
                    ("main", lambda b=box: stage.main_side(b["item"])),
                ):
                    c, w = _timed(fn)
                    sums[k] += c
                    walls[k] += w
                job, item = im.job, box["item"]
                masks, _ = load_candidates(
                    im.masks_dir, job.take, job.cam, job.frame, item["hw"], item["orig_hw"]
                )
                counts = row_col_counts(masks)
                for k, fn in (("rle_plain", rle_plain), ("rle_boxed", rle_boxed)):
                    rle_sums[k] += _timed(lambda m=masks, f=fn, c=counts: f(m, c))[0]
            sums["close"], walls["close"] = _timed(stage.close)
            sums["main"] -= stage.device_cpu
            walls["main"] -= stage.device_wall
            if r == 0:
                continue
            for k in rle_sums:
                rle_cpu.setdefault(k, []).append(rle_sums[k] / len(images))
            for k in parts:
                cpu[k].append(sums[k] / len(images))
                wall[k].append(walls[k] / len(images))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
        stage.writer.abort()
    pool = stage.device_cpu / len(images)  # the last round: dense map and pooling
    med = {k: median(v) for k, v in cpu.items()} | {"pool": pool}
    rle_ms = {k: round(median(v) * 1e3, 2) for k, v in rle_cpu.items()}
    host = med["prepare"] + med["transfer"] + med["main"] + med["close"]
    ratio = host / med["floor"]
    n_cands = [int(stage.n_cands[im.job.key]) for im in images]
    ms = {k: round(v * 1e3, 2) for k, v in med.items()}
    split = ", ".join(f"{k} {ms[k]:.1f}" for k in ("prepare", "transfer", "main", "close"))
    return [
        Row(
            row="10",
            what=f"precompute host work vs its floor, per image and core ({len(images)} images "
            f"{' / '.join(sorted(stage.sizes))}, {min(n_cands)}-{max(n_cands)} candidates; "
            "no backbone)",
            project=f"{host * 1e3:.1f} ms/image (CPU, one thread)",
            baseline=f"{med['floor'] * 1e3:.1f} ms/image (JPEG decode + npz inflate + RLE "
            "decode alone)",
            ratio=ratio,
            target=f"<= {TARGET}",
            met=ratio <= TARGET,
            command=ctx.command("10"),
            note=f"medians over {rounds} interleaved rounds of CPU ms per image: {split} "
            f"(prepare = the worker's item; transfer = pickling it for the pipe; main = "
            f"records and HDF5 writes; close = fsync + sha256 of the shard); descriptor "
            f"pooling (dense map and mask descriptors), device work on a GPU node and not "
            f"counted, {ms['pool']:.1f} ms on this CPU; the candidates' RLE strings (in "
            f"prepare) {rle_ms['rle_boxed']:.1f} ms from the masks' boxes (rle.encode_boxed) "
            f"against {rle_ms['rle_plain']:.1f} ms with the plain rle.encode",
            details={
                "cpu_ms_per_image": ms,
                "wall_ms_per_image": {k: round(median(v) * 1e3, 2) for k, v in wall.items()},
                "images": len(images),
                "candidates": n_cands,
                "rounds": rounds,
                "item_mb_per_image": round(sum(stage.item_bytes.values()) / len(images) / 1e6, 1),
                "ratio_with_pooling_on_cpu": (host + med["pool"]) / med["floor"],
                "candidate_rle_cpu_ms_per_image": rle_ms,
            },
        )
    ]
