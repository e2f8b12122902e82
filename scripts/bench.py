"""`make bench`: each stage of omama timed against the plain thing it must beat.

Rows (issue "Speed to the floor"):
  1  descriptor pooling, all candidates of one image, vs a per-mask Python loop (section 5)
  2  matcher forward+backward per training sample (fp32) vs the standard attention order that
     projects keys and values for every image token; 2e: scoring 200 candidates (eval)
  3  training step fed by the cache loader vs the same step on batches already in memory
  4  cache reads: bytes per sample; loader read throughput vs a raw sequential read
  5  precompute images/s (decode .. HDF5 writes) vs the backbone forward alone
  6  evaluation pairs/s end to end, and per-pair latency
  7  memory: peak of training at batch 24 with the default workers; cache bytes per image

Data: the synthetic generator at real sizes (ego 704x704 -> 700x700, 50x50 patches; exo
540x960 -> 532x952, 38x68), a seeded random-init ViT-B/14 backbone, and a cache made by the
real precompute. Times are medians of repeats after a warm-up, project and baseline
interleaved where both are cheap, so that a busy host slows both alike.

    python scripts/bench.py [--device cpu|cuda] [--rows 1,2,...] [--out DIR] [--md FILE]
                            [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # runs from a fresh clone without install
os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: no progress bars here
# Before torch starts its OpenMP threads: idle threads sleep instead of spinning. On a host
# shared with other jobs a spinning thread burns the time slice its descheduled peer needs;
# measured here, that alone made the fast attention order 8x slower under load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import bench_baselines as base  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from omama.cache.manifest import load_samples, save_samples  # noqa: E402
from omama.cache.reader import Cache  # noqa: E402
from omama.config import default_workers  # noqa: E402
from omama.dataset.synth import SynthConfig, generate  # noqa: E402
from omama.loader import dataset as loader_dataset  # noqa: E402
from omama.loader.dataset import EpochSampler, TrainSamples  # noqa: E402
from omama.matcher.attention import choose_order  # noqa: E402
from omama.matcher.checkpoint import save_matcher_state  # noqa: E402
from omama.matcher.model import OMaMaMatcher, matching_loss, predict  # noqa: E402
from omama.precompute import backbone  # noqa: E402
from omama.precompute.descriptors import dense_map, mask_descriptors, tight_boxes  # noqa: E402
from omama.precompute.pipeline import PrecomputeConfig, run_precompute  # noqa: E402
from omama.predict.evaluate import EvalConfig, build_matcher, run_eval  # noqa: E402
from omama.predict.scoring import EvalSamples, collate_padded, score_samples  # noqa: E402

log = logging.getLogger("bench")

DIRECTION = "exo2ego"  # source exo (38x68), destination ego (50x50): T = 2500, Tq = 2584
TRAIN_SPLIT = "train"  # precomputed (row 5) and evaluated (row 6)
LOOP_SPLIT = "val"  # the bench writes the train pairs, repeated, under this split's name
ALL_ROWS = (1, 2, 3, 4, 5, 6, 7)
MARKER = "<!-- analysis: written by hand, kept when bench.py rewrites this file -->"
END_MARKER = "<!-- /analysis -->"


# ------------------------------------------------------------------------------ plan and rows
@dataclass(frozen=True)
class Plan:
    """Sizes and repeat counts: real sizes everywhere except --quick; more work on a GPU."""

    small: bool = False
    n_takes: int = 3
    n_frames: int = 2
    desc_cands: int = 120
    desc_reps: int = 5
    loop_reps: int = 2
    mm_batch: int = 4
    mm_eval_batch: int = 4
    mm_reps: int = 5
    step_batch: int = 12
    step_warm: int = 1
    step_count: int = 5
    read_reps: int = 3
    read_batches: int = 3
    precompute_warmup: bool = False
    eval_latency_pairs: int = 8
    mem_batch: int = 24
    mem_steps: int = 8

    @staticmethod
    def for_run(device: str, quick: bool) -> Plan:
        if quick:
            return Plan(
                small=True,
                n_frames=1,
                desc_cands=40,
                desc_reps=2,
                loop_reps=1,
                mm_batch=2,
                mm_eval_batch=2,
                mm_reps=2,
                step_batch=4,
                step_count=2,
                read_reps=1,
                read_batches=1,
                eval_latency_pairs=3,
                mem_batch=8,
                mem_steps=2,
            )
        if device == "cuda":
            return Plan(
                n_takes=6,
                n_frames=4,
                desc_cands=200,
                desc_reps=20,
                loop_reps=3,
                mm_batch=24,
                mm_eval_batch=16,
                mm_reps=20,
                step_batch=24,
                step_warm=5,
                step_count=40,
                read_reps=3,
                read_batches=6,
                precompute_warmup=True,
                eval_latency_pairs=20,
                mem_steps=20,
            )
        return Plan()


@dataclass
class Row:
    row: str
    what: str
    project: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    command: str
    machine: str = ""
    note: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class Ctx:
    device: torch.device
    plan: Plan
    out: Path
    machine: str
    rows_arg: str
    data: Path = Path()
    weights: Path = Path()
    cache: Path = Path()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def command(self, row: str) -> str:
        quick = " --quick" if self.plan.small else ""
        return f"python scripts/bench.py --device {self.device.type} --rows {row}{quick}"


# --------------------------------------------------------------------------------- helpers
def machine_name(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = f"{cpu}, {os.cpu_count()} cores"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (host: {cpu})"
    return cpu


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def interleaved(
    fns: dict[str, Callable[[], None]],
    reps: dict[str, int],
    sync,
    warm: dict[str, Callable[[], None]] | None = None,
) -> dict:
    """Median seconds of each fn: one warm-up each (`warm` may name a cheaper call for it),
    then rounds that call each in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for k, fn in fns.items():
        (warm or {}).get(k, fn)()
        sync()
    for r in range(max(reps.values())):
        for k, fn in fns.items():
            if r >= reps[k]:
                continue
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in times.items()} | {"_all": times}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------- a shared host
def _ticks_busy_total() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole host since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / hz, sum(fields) / hz


def _tree_pids(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        q = stack.pop()
        pids.append(q)
        try:
            for task in os.listdir(f"/proc/{q}/task"):
                children = Path(f"/proc/{q}/task/{task}/children").read_text().split()
                stack += [int(c) for c in children]
        except OSError:
            continue
    return pids


def _own_seconds() -> float:
    """CPU seconds of this process and its live descendants (workers, subprocesses)."""
    return time.process_time() + cpu_seconds(_tree_pids(os.getpid())[1:])


class OtherLoad:
    """Average number of cores other processes kept busy between start() and stop()."""

    def __init__(self) -> None:
        self.ok = Path("/proc/stat").exists()
        self.start()

    def start(self) -> None:
        if self.ok:
            self._busy, _ = _ticks_busy_total()
            self._own, self._t = _own_seconds(), time.perf_counter()

    def stop(self) -> float | None:
        if not self.ok:
            return None
        busy, _ = _ticks_busy_total()
        own, dt = _own_seconds() - self._own, time.perf_counter() - self._t
        return max(0.0, (busy - self._busy - own) / max(dt, 1e-9))


def wait_until_quiet(budget: list[float], limit: float = 0.5) -> float | None:
    """Wait (from a shared budget of seconds) until other processes use under `limit` cores
    over one second; returns what they used in the last second looked at."""
    probe = OtherLoad()
    if not probe.ok:
        return None
    while True:
        probe.start()
        time.sleep(1.0)
        budget[0] -= 1.0
        others = probe.stop()
        if others is None or others < limit or budget[0] <= 0:
            return others
        log.info("host busy (other processes use %.1f cores): waiting", others)


# ------------------------------------------------------------------------------------ setup
def ensure_data(ctx: Ctx) -> None:
    """Synthetic dataset and random-init backbone, reused while the plan's sizes match."""
    p = ctx.plan
    ctx.data = ctx.out / "data"
    ctx.weights = ctx.out / "backbone-random-init-seed0.pth"
    want = {"small": p.small, "n_takes": p.n_takes, "n_frames": p.n_frames, "seed": 7}
    marker = ctx.out / "data.json"
    if not (marker.exists() and json.loads(marker.read_text()) == want):
        t0 = time.perf_counter()
        shutil.rmtree(ctx.data, ignore_errors=True)
        shutil.rmtree(ctx.out / "cache", ignore_errors=True)
        generate(
            SynthConfig(seed=7, small=p.small, n_takes=p.n_takes, n_frames=p.n_frames), ctx.data
        )
        marker.write_text(json.dumps(want))
        log.info("synthetic dataset in %.1f s", time.perf_counter() - t0)
    if not ctx.weights.exists():
        backbone.save_random_init(ctx.weights, seed=0)


def precompute_cfg(ctx: Ctx, split: str) -> PrecomputeConfig:
    return PrecomputeConfig(
        root=ctx.data,
        cache=ctx.cache,
        weights=ctx.weights,
        direction=DIRECTION,
        split=split,
        device=ctx.device.type,
    )


def ensure_cache(ctx: Ctx, fresh: bool) -> dict:
    """The train split's cache; `fresh` rebuilds it (row 5 times that build)."""
    ctx.cache = ctx.out / "cache"
    info: dict = {}
    marker = ctx.cache / "bench-ready.json"
    if fresh or not marker.exists():
        shutil.rmtree(ctx.cache, ignore_errors=True)
        if ctx.plan.precompute_warmup:  # first CUDA use, kernels, allocator: not timed
            run_precompute(precompute_cfg(ctx, "test"))
        t0, c0 = time.perf_counter(), cpu_with_children()
        report = run_precompute(precompute_cfg(ctx, TRAIN_SPLIT))
        info = {
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": cpu_with_children() - c0,
            "images": report.images_computed,
        }
        marker.write_text(json.dumps(info))
    return info


def cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have exited (workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def tile_loop_split(ctx: Ctx, n_needed: int) -> int:
    """Write the train pairs, repeated to at least n_needed, as the loop split's sample list
    (a repeated pair draws other negatives: the sample's RNG is seeded by its index)."""
    samples = load_samples(ctx.cache, DIRECTION, TRAIN_SPLIT)
    k = max(1, math.ceil(n_needed / len(samples)))
    save_samples(ctx.cache, DIRECTION, LOOP_SPLIT, samples * k)
    return len(samples) * k


# -------------------------------------------------------------------------------- row 1
def random_candidates(gen: np.random.Generator, n: int, h: int, w: int):
    """Candidate-like masks (ellipses and rectangles of many sizes, a few empty) and their
    tight boxes, as FastSAM would hand them over at the crop size."""
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        cy, cx = gen.uniform(0, h), gen.uniform(0, w)
        ry, rx = gen.uniform(3, h / 3), gen.uniform(3, w / 3)
        if i % 10 == 9:
            continue  # empty
        if i % 2:
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            masks[i, int(max(cy - ry, 0)) : int(cy + ry), int(max(cx - rx, 0)) : int(cx + rx)] = 1
    return torch.from_numpy(masks), torch.from_numpy(tight_boxes(masks))


def row_descriptors(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    grid = (16, 16) if p.small else (50, 50)
    h, w = grid[0] * 14, grid[1] * 14
    gen = np.random.default_rng(1)
    tokens = torch.from_numpy(gen.standard_normal((grid[0] * grid[1], 768), dtype=np.float32))
    dense = dense_map(tokens.to(dev), grid)
    masks, boxes = random_candidates(gen, p.desc_cands, h, w)
    masks, boxes = masks.to(dev), boxes.to(dev)
    got = mask_descriptors(dense, masks, boxes)
    want = base.loop_descriptors(dense, masks, boxes)
    err = float((got - want).abs().max())
    t = interleaved(
        {
            "project": lambda: mask_descriptors(dense, masks, boxes),
            "loop": lambda: base.loop_descriptors(dense, masks, boxes),
        },
        {"project": p.desc_reps, "loop": p.loop_reps},
        ctx.sync,
        warm={"loop": lambda: base.loop_descriptors(dense, masks[:4], boxes[:4])},
    )
    ratio = t["loop"] / t["project"]
    target = 20.0
    return [
        Row(
            row="1",
            what=f"descriptor pooling, {p.desc_cands} candidates of one {h}x{w} image "
            f"({grid[0]}x{grid[1]} patches), {dev.type}",
            project=fmt_ms(t["project"]),
            baseline=f"{fmt_ms(t['loop'])} (per-mask loop)",
            ratio=ratio,
            target=f">= {target:.0f}x on CPU, max |diff| <= 1e-5",
            met=(ratio >= target or dev.type != "cpu") and err <= 1e-5,
            command=ctx.command("1"),
            note=f"max |project - loop| = {err:.1e}; dense map built once outside both timings",
            details={"seconds": t["_all"], "max_abs_diff": err, "n": p.desc_cands},
        )
    ]


# -------------------------------------------------------------------------------- row 2
def matcher_inputs(gen: torch.Generator, b: int, n: int, small: bool, dev: torch.device):
    t_dst, t_src = (256, 300) if small else (2500, 2584)
    return (
        torch.randn(b, 1536, generator=gen).to(dev),
        torch.randn(b, n, 1536, generator=gen).to(dev),
        torch.randn(b, t_src, 768, generator=gen).half().to(dev),  # fp16 as stored
        torch.randn(b, t_dst, 768, generator=gen).half().to(dev),
    )


def row_matcher(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    grids = ((16, 16), (15, 20)) if p.small else ((50, 50), (38, 68))
    torch.manual_seed(0)
    model = OMaMaMatcher(*grids).to(dev)
    gen = torch.Generator().manual_seed(2)
    b, n = p.mm_batch, 32
    x = matcher_inputs(gen, b, n, p.small, dev)
    pos = torch.randint(0, n, (b,), generator=gen).to(dev)
    vis = torch.ones(b, device=dev)

    def step(order: str | None):
        model.zero_grad(set_to_none=True)
        sims = model(*x, attn_order=order)
        matching_loss(sims, pos, vis).backward()
        return sims

    def grads() -> dict[str, torch.Tensor]:
        return {
            k: v.grad.detach().clone() for k, v in model.named_parameters() if v.grad is not None
        }

    model.train()
    sims_p, grads_p = step(None).detach(), grads()
    sims_s, grads_s = step("standard").detach(), grads()
    out_err = rel_err(sims_p, sims_s)
    flat_p = torch.cat([grads_p[k].flatten() for k in sorted(grads_s)])
    flat_s = torch.cat([grads_s[k].flatten() for k in sorted(grads_s)])
    grad_err = rel_err(flat_p, flat_s)
    floor = 1e-6 * float(flat_s.norm())  # key.bias: exactly zero in exact arithmetic
    worst = max(
        (float((grads_p[k] - g).norm() / max(float(g.norm()), floor)), k)
        for k, g in grads_s.items()
    )
    order = choose_order("auto", n, x[2].shape[1], 768, 4)
    t = interleaved(
        {"project": lambda: step(None), "standard": lambda: step("standard")},
        {"project": p.mm_reps, "standard": p.mm_reps},
        ctx.sync,
    )
    ratio = t["standard"] / t["project"]
    ok = out_err <= 1e-4 and grad_err <= 1e-4
    one = {}
    if dev.type == "cpu" and torch.get_num_threads() > 1:  # the same without thread contention
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = interleaved(
                {"project": lambda: step(None), "standard": lambda: step("standard")},
                {"project": max(2, p.mm_reps // 2), "standard": max(2, p.mm_reps // 2)},
                ctx.sync,
            )
        finally:
            torch.set_num_threads(threads)
    one_text = (
        f"; with 1 thread: {fmt_ms(one['project'] / b)} vs {fmt_ms(one['standard'] / b)} "
        f"({one['standard'] / one['project']:.2f}x)"
        if one
        else ""
    )
    rows = [
        Row(
            row="2",
            what=f"matcher forward+backward per training sample, N={n}, fp32, batch {b}, "
            f"{dev.type}",
            project=f"{fmt_ms(t['project'] / b)} (auto -> {order})",
            baseline=f"{fmt_ms(t['standard'] / b)} (standard: K,V of every token)",
            ratio=ratio,
            target=">= 4x at N=32, outputs and gradients within 1e-4 relative",
            met=ratio >= 4 and ok,
            command=ctx.command("2"),
            note=f"relative error: scores {out_err:.1e}, all gradients {grad_err:.1e}, worst "
            f"parameter {worst[1]} {worst[0]:.1e}{one_text}",
            details={
                "seconds": t["_all"],
                "batch": b,
                "score_rel_err": out_err,
                "grad_rel_err": grad_err,
                "worst_param": list(worst),
                "one_thread_seconds": one.get("_all"),
            },
        )
    ]
    # scoring at evaluation: 200 candidates, no gradient
    b_eval, n_eval = p.mm_eval_batch, 200
    xe = matcher_inputs(gen, b_eval, n_eval, p.small, dev)
    model.eval()
    with torch.inference_mode():
        err_eval = rel_err(model(*xe), model(*xe, attn_order="standard"))
        t = interleaved(
            {"project": lambda: model(*xe), "standard": lambda: model(*xe, attn_order="standard")},
            {"project": p.mm_reps, "standard": p.mm_reps},
            ctx.sync,
        )
    order = choose_order("auto", n_eval, xe[2].shape[1], 768, 4)
    ratio = t["standard"] / t["project"]
    rows.append(
        Row(
            row="2e",
            what=f"matcher scoring per pair, N={n_eval} candidates (eval), fp32, batch {b_eval}, "
            f"{dev.type}",
            project=f"{fmt_ms(t['project'] / b_eval)} (auto -> {order})",
            baseline=f"{fmt_ms(t['standard'] / b_eval)} (standard)",
            ratio=ratio,
            target=">= 1x (never slower at 200 candidates)",
            met=ratio >= 1 and err_eval <= 1e-4,
            command=ctx.command("2"),
            note=f"scores relative error {err_eval:.1e}",
            details={"seconds": t["_all"], "batch": b_eval, "score_rel_err": err_eval},
        )
    )
    return rows


# -------------------------------------------------------------------------------- row 3
def trainer_step(model: OMaMaMatcher, device: torch.device, total: int) -> Callable[[dict], None]:
    """The step of omama/train/loop.py: bf16 autocast on CUDA, AdamW, per-step cosine, no
    host sync (the loss is summed on the device)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=8e-5, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total, eta_min=1e-6)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    running = torch.zeros((), device=device)

    def step(batch: dict) -> None:
        b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with amp:
            sims = model(b["src_desc"], b["cand_desc"], b["src_tokens"], b["dst_tokens"])
        loss = matching_loss(sims.float(), b["pos_index"], b["visible"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running.add_(loss.detach())

    return step


def train_loader(data: TrainSamples, batch: int, workers: int, device: torch.device):
    """DataLoader settings of omama/train/loop.py."""
    sampler = EpochSampler(len(data), seed=42)
    return DataLoader(
        data,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers else None,
        pin_memory=device.type == "cuda",
    )


def row_train_step(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    cache = Cache(ctx.cache)
    data = TrainSamples(cache, DIRECTION, LOOP_SPLIT, n_masks=32, seed=42)
    torch.manual_seed(0)
    model = build_matcher(cache, data.samples, None).to(dev).train()
    b, warm, count = p.step_batch, p.step_warm, p.step_count
    step = trainer_step(model, dev, total=10 * (warm + count))
    workers = default_workers()

    # baseline batches: the same samples, read once and kept in memory (on the device)
    it = iter(train_loader(data, b, 0, dev))
    batches = [{k: v.to(dev) for k, v in next(it).items()} for _ in range(min(count, 4))]

    def in_memory(n_steps: int) -> tuple[float, float]:
        for i in range(warm):
            step(batches[i % len(batches)])
        ctx.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n_steps):
            step(batches[i % len(batches)])
        ctx.sync()
        return (time.perf_counter() - t0) / n_steps, (time.process_time() - c0) / n_steps

    def from_cache() -> tuple[float, float]:
        loader_it = iter(train_loader(data, b, workers, dev))
        pids = [w.pid for w in getattr(loader_it, "_workers", [])]
        for _ in range(warm):
            step(next(loader_it))
        ctx.sync()
        t0, c0, w0 = time.perf_counter(), time.process_time(), cpu_seconds(pids)
        for _ in range(count):
            step(next(loader_it))
        ctx.sync()
        cpu = time.process_time() - c0 + cpu_seconds(pids) - w0
        return (time.perf_counter() - t0) / count, cpu / count

    mem_a, cpu_a = in_memory(max(2, count // 2))
    loaded, cpu_loaded = from_cache()
    mem_b, cpu_b = in_memory(max(2, count // 2))
    mem = (mem_a + mem_b) / 2
    ratio = mem / loaded
    cpu_ratio = (cpu_a + cpu_b) / 2 / cpu_loaded
    cpu_text = (
        f"; CPU seconds per step (main + workers, robust to other tenants of a shared host): "
        f"{cpu_loaded:.2f} from the cache vs {(cpu_a + cpu_b) / 2:.2f} in memory "
        f"({cpu_ratio:.2f})"
        if dev.type == "cpu"
        else ""
    )
    return [
        Row(
            row="3",
            what=f"training step from the cache, loader included ({workers} workers, "
            f"prefetch 2), batch {b}, N=32, {dev.type}",
            project=f"{b / loaded:.1f} samples/s",
            baseline=f"{b / mem:.1f} samples/s (batches in memory)",
            ratio=ratio,
            target=">= 0.85 with the default workers",
            met=ratio >= 0.85,
            command=ctx.command("3"),
            note=f"{count} timed steps after {warm} warm-up; in-memory step timed before and "
            f"after ({fmt_ms(mem_a)}, {fmt_ms(mem_b)} per step){cpu_text}",
            details={
                "step_s_loader": loaded,
                "step_s_memory": [mem_a, mem_b],
                "cpu_s_loader": cpu_loaded,
                "cpu_s_memory": [cpu_a, cpu_b],
                "batch": b,
                "workers": workers,
            },
        )
    ]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of other processes (DataLoader workers), from /proc."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


# -------------------------------------------------------------------------------- row 4
def proc_rchar() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def distinct_image_batches(data: TrainSamples, order: list, p: Plan) -> list[list]:
    """Up to p.read_batches batches of up to p.step_batch indices, in the given order, none
    holding an image twice (indices that would repeat one wait for a later batch)."""
    batches: list[list] = []
    pending = list(order)
    while pending and len(batches) < p.read_batches:
        batch, seen, rest = [], set(), []
        for ix in pending:
            s = data.samples[ix[1]]
            if len(batch) < p.step_batch and not {s.src, s.dst} & seen:
                batch.append(ix)
                seen |= {s.src, s.dst}
            else:
                rest.append(ix)
        batches.append(batch)
        pending = rest
    return batches


def used_bytes(item: dict, n_cands: int, visible: bool) -> int:
    """What the step consumes, plus the adjacency row and anchor that chose the negatives."""
    tensors = ("src_tokens", "dst_tokens", "src_desc", "cand_desc")
    return sum(item[k].numel() * item[k].element_size() for k in tensors) + (
        n_cands + 4 if visible else 0
    )


def row_reads(ctx: Ctx) -> list[Row]:
    p = ctx.plan
    cache = Cache(ctx.cache)
    data = TrainSamples(cache, DIRECTION, TRAIN_SPLIT, n_masks=32, seed=42)
    shards = sorted(
        {cache.manifest.images[s.src] for s in data.samples}
        | {cache.manifest.images[s.dst] for s in data.samples}
    )
    files = [ctx.cache / "shards" / name for name in shards]

    # bytes: every positional read the loader issues is counted, and the process's rchar
    counted = [0]
    real_read_at = loader_dataset.read_at

    def counting_read_at(fd, out, offset):
        counted[0] += out.nbytes
        real_read_at(fd, out, offset)

    for i in range(len(data)):  # warm the record memo (one h5py lookup per record)
        data[(0, i)]
    loader_dataset.read_at = counting_read_at
    try:
        read, used, rchar = 0, 0, 0
        for i in range(len(data)):
            s = data.samples[i]
            r0 = proc_rchar()
            counted[0] = 0
            item = data[(1, i)]
            rchar += (proc_rchar() or 0) - (r0 or 0)
            read += counted[0]
            n_cands = data.reader.shape(data.reader.cands(DIRECTION, s.dst), "desc")[0]
            used += used_bytes(item, n_cands, s.dst_k >= 0)
    finally:
        loader_dataset.read_at = real_read_at
    n = len(data)

    # throughput: batches as the DataLoader fetches them (TrainSamples.__getitems__), in the
    # trainer's order, each holding no image twice (the bench cache holds few images; in real
    # training a repeat within a batch is rare); cold: the page cache dropped before every
    # batch and before every raw pass
    loop = TrainSamples(cache, DIRECTION, LOOP_SPLIT, n_masks=32, seed=42)
    batches = distinct_image_batches(loop, list(EpochSampler(len(loop), seed=42)), p)
    delivered, extents = [], []
    for batch in batches:
        seen: set[tuple[str, int, int]] = set()

        def noting_read_at(fd, out, offset, seen=seen):
            seen.add((os.readlink(f"/proc/self/fd/{fd}"), offset, out.nbytes))
            real_read_at(fd, out, offset)

        loader_dataset.read_at = noting_read_at
        try:
            items = loop.__getitems__(batch)
        finally:
            loader_dataset.read_at = real_read_at
        delivered.append(sum(v.numel() * v.element_size() for it in items for v in it.values()))
        extents.append(sorted(seen))
        del items

    def loader_pass(cold: bool) -> float:
        total = 0.0
        for batch in batches:
            if cold:
                base.drop_from_page_cache(files)
            t0 = time.perf_counter()
            loop.__getitems__(batch)
            total += time.perf_counter() - t0
        return sum(delivered) / total

    def raw_pass(cold: bool) -> float:
        if cold:
            base.drop_from_page_cache(files)
        t0 = time.perf_counter()
        nbytes = base.sequential_read(files)
        return nbytes / (time.perf_counter() - t0)

    def same_ranges_pass() -> float:
        """Plain read() calls of exactly the byte ranges the loader reads, in file order."""
        total, nbytes = 0.0, 0
        for ranges in extents:
            base.drop_from_page_cache(files)
            t0 = time.perf_counter()
            nbytes += base.read_ranges(ranges)
            total += time.perf_counter() - t0
        return nbytes / total

    can_drop = base.drop_from_page_cache(files)
    rates: dict[str, list[float]] = defaultdict(list)
    for _ in range(p.read_reps):
        for cold in (True, False) if can_drop else (False,):
            tag = "cold" if cold else "warm"
            rates[f"loader_{tag}"].append(loader_pass(cold))
            rates[f"raw_{tag}"].append(raw_pass(cold))
        if can_drop:
            rates["ranges_cold"].append(same_ranges_pass())
    med = {k: median(v) for k, v in rates.items()}
    tag = "cold" if can_drop else "warm"
    ratio = med[f"loader_{tag}"] / med[f"raw_{tag}"]
    unused = max(0, read - used)
    warm_ratio = med["loader_warm"] / med["raw_warm"]
    ranges_text = (
        f"; cold plain read() of exactly the loader's byte ranges: "
        f"{med['ranges_cold'] / 1e9:.2f} GB/s (loader / that = "
        f"{med['loader_cold'] / med['ranges_cold']:.2f})"
        if "ranges_cold" in med
        else ""
    )
    return [
        Row(
            row="4",
            what=f"cache reads: bytes per training sample; loader read throughput (whole "
            f"batches, page cache dropped: {tag}) vs a raw sequential read of the same shard "
            f"files",
            project=f"{read / n / 1e6:.2f} MB/sample read, {med[f'loader_{tag}'] / 1e9:.2f} GB/s",
            baseline=f"{used / n / 1e6:.2f} MB/sample used; raw read "
            f"{med[f'raw_{tag}'] / 1e9:.2f} GB/s",
            ratio=ratio,
            target=">= 0.7 of the raw read; no byte read that the step does not use",
            met=ratio >= 0.7 and unused == 0,
            command=ctx.command("4"),
            note=f"unused bytes read: {unused}; syscall rchar {rchar / n / 1e6:.2f} MB/sample; "
            f"warm (page cache full): loader {med['loader_warm'] / 1e9:.2f} GB/s vs raw "
            f"{med['raw_warm'] / 1e9:.2f} GB/s ({warm_ratio:.2f}); "
            f"{len(batches)} batches of {', '.join(str(len(x)) for x in batches)} samples "
            f"with no image twice, {sum(delivered) / 1e6:.0f} MB{ranges_text}",
            details={
                "bytes_read": read,
                "bytes_used": used,
                "rchar": rchar,
                "samples": n,
                "rates_Bps": dict(rates),
                "cold": can_drop,
                "batch_bytes": delivered,
                "batch_sizes": [len(x) for x in batches],
            },
        )
    ]


# -------------------------------------------------------------------------------- row 5
def row_precompute(ctx: Ctx, build: dict) -> list[Row]:
    dev = ctx.device
    cache = Cache(ctx.cache)
    keys = sorted(
        {k for s in load_samples(ctx.cache, DIRECTION, TRAIN_SPLIT) for k in (s.src, s.dst)}
    )
    images = [cache.image_group(k)["image"][()] for k in keys]  # exactly what the backbone saw
    cache.close()
    batch_size = PrecomputeConfig().batch_size
    by_size: dict[tuple, list[np.ndarray]] = defaultdict(list)
    for im in images:
        by_size[im.shape].append(im)
    batches = [
        torch.from_numpy(np.stack(group[i : i + batch_size]))
        for group in by_size.values()
        for i in range(0, len(group), batch_size)
    ]
    model = backbone.load_backbone(ctx.weights, dev)
    if dev.type == "cuda":
        backbone.patch_tokens(model, batches[0])
    else:  # a small forward: first-call costs without paying a full 700x700 forward
        backbone.patch_tokens(model, torch.zeros(1, 224, 224, 3, dtype=torch.uint8))
    ctx.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for x in batches:
        backbone.patch_tokens(model, x)
    ctx.sync()
    fwd, fwd_cpu = time.perf_counter() - t0, time.process_time() - c0
    del model
    n = len(images)
    pre_rate, fwd_rate = build["images"] / build["seconds"], n / fwd
    ratio = pre_rate / fwd_rate
    gpu = dev.type == "cuda"
    return [
        Row(
            row="5",
            what=f"precompute, whole stage ({build['images']} images: decode, crop, backbone, "
            f"pooling, adjacency, HDF5), {dev.type}" + (" FP16" if gpu else " fp32"),
            project=f"{pre_rate:.3f} images/s ({build['seconds']:.1f} s)",
            baseline=f"{fwd_rate:.3f} images/s (backbone forward alone, {fwd:.1f} s)",
            ratio=ratio,
            target=">= 0.9 on a GPU in FP16; CPU figure reported",
            met=(ratio >= 0.9) if gpu else None,
            command=ctx.command("5"),
            note=f"one timed run of each ({len(batches)} backbone batches); "
            f"the stage includes loading the backbone and hashing its weights file"
            + (
                f"; CPU seconds (all processes, robust to other tenants): "
                f"{build['cpu_seconds']:.1f} vs {fwd_cpu:.1f} "
                f"({fwd_cpu / build['cpu_seconds']:.2f})"
                if not gpu and build.get("cpu_seconds")
                else ""
            ),
            details={
                "precompute_s": build["seconds"],
                "precompute_cpu_s": build.get("cpu_seconds"),
                "forward_s": fwd,
                "forward_cpu_s": fwd_cpu,
                "images": n,
            },
        )
    ]


# -------------------------------------------------------------------------------- row 6
def row_eval(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    cache = Cache(ctx.cache)
    samples = cache.samples(DIRECTION, TRAIN_SPLIT)
    torch.manual_seed(0)
    model = build_matcher(cache, samples, None).to(dev)
    ckpt = ctx.out / "eval" / "matcher.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_matcher_state(model, ckpt)
    cfg = EvalConfig(
        cache=ctx.cache,
        direction=DIRECTION,
        split=TRAIN_SPLIT,
        checkpoint=ckpt,
        out=ctx.out / "eval" / "pred.json",
        device=dev.type,
    )
    ends = []
    with contextlib.redirect_stderr(io.StringIO()):  # run_eval draws a progress bar
        for _ in range(3):  # the first is a warm-up
            t0 = time.perf_counter()
            run_eval(cfg)
            ends.append(time.perf_counter() - t0)
    ends = ends[1:]
    end = median(ends)
    n = len(samples)

    # the whole command, interpreter start and imports included
    argv = [
        sys.executable,
        "-m",
        "omama.cli.eval",
        "--cache",
        str(ctx.cache),
        "--direction",
        DIRECTION,
        "--split",
        TRAIN_SPLIT,
        "--checkpoint",
        str(ckpt),
        "--out",
        str(ctx.out / "eval" / "pred_cli.json"),
        "--device",
        dev.type,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, capture_output=True)
    cli = time.perf_counter() - t0

    # latency: one pair alone, read from the cache and scored (batch 1)
    lat = []
    for s in samples[: p.eval_latency_pairs + 1]:
        t0 = time.perf_counter()
        score_samples(cache, model, DIRECTION, [s], dev, batch_size=1, progress=False)
        ctx.sync()
        lat.append(time.perf_counter() - t0)
    latency = median(lat[1:])

    # the scoring forward alone, batches already in memory
    items = [EvalSamples(cache, DIRECTION, samples)[i] for i in range(n)]
    batches = [collate_padded(items[i : i + cfg.batch_size]) for i in range(0, n, cfg.batch_size)]
    batches = [{k: v.to(dev) for k, v in b.items()} for b in batches]
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    model.eval()

    def forward_all() -> None:
        with torch.inference_mode(), amp:
            for b in batches:
                sims = model(b["src_desc"], b["cand_desc"], b["src_tokens"], b["dst_tokens"])
                predict(sims.float(), b["valid"])

    fwd = interleaved({"f": forward_all}, {"f": 3}, ctx.sync)["f"]
    n_cands = [int(b["valid"].sum(1).float().mean()) for b in batches]
    return [
        Row(
            row="6",
            what=f"evaluation end to end (run_eval: scores, challenge JSON, GT, official "
            f"metrics), {n} pairs, ~{int(np.mean(n_cands))} candidates each, {dev.type}",
            project=f"{n / end:.1f} pairs/s; {fmt_ms(latency)} per pair alone",
            baseline=f"{n / fwd:.1f} pairs/s (scoring forward alone, in memory)",
            ratio=(n / end) / (n / fwd),
            target="report",
            met=None,
            command=ctx.command("6"),
            note=f"omama-eval as a command, interpreter start included: {cli:.1f} s "
            f"({n / cli:.1f} pairs/s); latency = cache read + forward + top-5, batch 1",
            details={
                "end_to_end_s": ends,
                "cli_s": cli,
                "latency_s": lat,
                "forward_s": fwd,
                "pairs": n,
            },
        )
    ]


# -------------------------------------------------------------------------------- row 7
def tree_pss(pid: int) -> tuple[int, int]:
    """(PSS of the process and its descendants, RSS of the process) in bytes; PSS counts
    shared pages (libraries, shared-memory batches) once across the tree."""
    pids = _tree_pids(pid)
    total, main_rss = 0, 0
    for q in pids:
        try:
            text = Path(f"/proc/{q}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        total += int(m.group(1)) * 1024 if m else 0
        if q == pid:
            r = re.search(r"^Rss:\s+(\d+) kB", text, re.M)
            main_rss = int(r.group(1)) * 1024 if r else 0
    return total, main_rss


def row_memory(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    run = ctx.out / "mem_run"
    shutil.rmtree(run, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "omama.cli.train",
        "--cache",
        str(ctx.cache),
        "--direction",
        DIRECTION,
        "--train-split",
        LOOP_SPLIT,
        "--val-split",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        str(p.mem_batch),
        "--out",
        str(run),
        "--device",
        dev.type,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    n_samples = p.mem_batch * p.mem_steps
    samples = load_samples(ctx.cache, DIRECTION, TRAIN_SPLIT)
    save_samples(ctx.cache, DIRECTION, LOOP_SPLIT, (samples * n_samples)[:n_samples])
    series: list[tuple[float, int, int]] = []
    marks: dict[str, float] = {}  # the trainer writes init.pt before its steps, last.pt after
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.perf_counter()

    def poll() -> None:
        while proc.poll() is None:
            pss, rss = tree_pss(proc.pid)
            now = time.perf_counter() - t0
            if pss:
                series.append((now, pss, rss))
            for name in ("init.pt", "last.pt"):
                if name not in marks and (run / name).exists():
                    marks[name] = now
            time.sleep(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"training run failed: {err.decode()[-2000:]}")
    peak_pss = max(s[1] for s in series)
    peak_rss = max(s[2] for s in series)
    # during the steps only (between init.pt and last.pt): the highest PSS of the last third
    # minus the highest of the middle third (the first third fills the prefetch queue)
    a, b = marks.get("init.pt", 0.0), marks.get("last.pt", series[-1][0])
    steps = [e for e in series if a <= e[0] <= b] or series
    third = max(1, len(steps) // 3)
    growth = max(e[1] for e in steps[-third:]) - max(
        e[1] for e in (steps[third : 2 * third] or steps[-third:])
    )

    # cache bytes per image, and where they go
    cache = Cache(ctx.cache)
    names = sorted(set(cache.manifest.shards))
    total = sum((ctx.cache / "shards" / s).stat().st_size for s in names)
    n_img = len(cache.manifest.images)
    parts: dict[str, int] = defaultdict(int)
    for key in cache.manifest.images:
        g = cache.image_group(key)
        for name in ("tokens", "image"):
            parts[name] += g[name].id.get_storage_size()
    for key in cache.manifest.candidates.get(DIRECTION, {}):
        g = cache.cand_group(DIRECTION, key)
        for name in ("desc", "rle", "adj"):
            parts[f"cand {name}"] += g[name].id.get_storage_size()
    cache.close()
    split = ", ".join(f"{k} {v / n_img / 1e6:.2f}" for k, v in parts.items())
    return [
        Row(
            row="7",
            what=f"memory: training at batch {p.mem_batch}, default workers "
            f"({default_workers()}), {dev.type}; cache size per image",
            project=f"peak {peak_pss / 2**30:.2f} GiB (PSS, all processes); main RSS "
            f"{peak_rss / 2**30:.2f} GiB",
            baseline=f"{total / n_img / 1e6:.2f} MB per image ({n_img} images)",
            ratio=None,
            target="report",
            met=None,
            command=ctx.command("7"),
            note=f"{p.mem_steps} steps; PSS during the steps, highest of the last third minus "
            f"highest of the middle third: {growth / 2**20:+.0f} MiB ({len(steps)} samples "
            f"over {b - a:.1f} s); MB per image: {split}",
            details={
                "peak_pss": peak_pss,
                "peak_rss": peak_rss,
                "series": series[::5],
                "cache_bytes": total,
                "images": n_img,
                "parts": dict(parts),
            },
        )
    ]


# -------------------------------------------------------------------------------- report
def ratio_text(r: Row) -> str:
    return "—" if r.ratio is None else f"{r.ratio:.2f}"


def met_text(r: Row) -> str:
    return {True: "yes", False: "**no**", None: "—"}[r.met]


def write_markdown(path: Path, rows: list[Row], meta: dict) -> None:
    keep = ""
    if path.exists():
        old = path.read_text()
        if MARKER in old and END_MARKER in old:
            keep = old[old.index(MARKER) : old.index(END_MARKER) + len(END_MARKER)]
    if not keep:
        keep = f"{MARKER}\n\n## Notes\n\n(measured gaps and their reasons)\n\n{END_MARKER}"
    lines = [
        "# Benchmarks",
        "",
        f"Latest `{meta['command']}` ({meta['date']}, {meta['seconds']:.0f} s): "
        f"**{meta['machine']}**, torch {meta['torch']}, device `{meta['device']}`, "
        f"{meta['threads']} threads, OMP_WAIT_POLICY={meta['omp_wait_policy']}, "
        f"load average before/after {meta['load_before']} / {meta['load_after']}.",
        "Data: the synthetic generator at real sizes (ego 700x700, 50x50 patches; exo 532x952, "
        "38x68; 60-120 candidates per image), a seeded random-init DINOv2 ViT-B/14 reg4, and "
        "a cache made by `run_precompute`. Medians of repeats after a warm-up; project and "
        "baseline interleaved where both are cheap. Raw numbers: "
        f"`{meta['json']}`.",
        "",
        "| # | what | project | baseline | ratio | target | met | machine | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r.row,
            r.what,
            r.project,
            r.baseline,
            ratio_text(r),
            r.target,
            met_text(r),
            r.machine,
            f"`{r.command}`",
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", "Measured details:", ""]
    lines += [f"- **{r.row}**: {r.note}" for r in rows if r.note]
    lines += ["", keep, ""]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    ap.add_argument("--rows", default=",".join(map(str, ALL_ROWS)), help="e.g. 1,2,5")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out", help="scratch folder")
    ap.add_argument("--md", type=Path, default=ROOT / "BENCHMARKS.md", help="table to write")
    ap.add_argument("--json", type=Path, default=None, help="default OUT/bench.json")
    ap.add_argument("--quick", action="store_true", help="small images, few repeats (smoke)")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds in all to wait, before rows, for other processes to go quiet",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("omama").setLevel(logging.WARNING)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda but no CUDA device here", file=sys.stderr)
        return 2
    rows_wanted = sorted({int(v) for v in args.rows.split(",") if v.strip()})
    if not set(rows_wanted) <= set(ALL_ROWS):
        print(f"bench: --rows must be among {ALL_ROWS}", file=sys.stderr)
        return 2
    plan = Plan.for_run(device.type, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.json or args.out / "bench.json"
    ctx = Ctx(device, plan, args.out, machine_name(device), args.rows)
    t_start, load_before = time.perf_counter(), load_average()
    log.info("machine: %s; rows %s; plan %s", ctx.machine, rows_wanted, plan)

    rows: list[Row] = []
    quiet_budget = [args.quiet_wait]
    if set(rows_wanted) & {3, 4, 5, 6, 7}:
        ensure_data(ctx)
        wait_until_quiet(quiet_budget)
        build_load = OtherLoad()
        build = ensure_cache(ctx, fresh=5 in rows_wanted)
        build["others"] = build_load.stop()
        need = (plan.step_warm + plan.step_count + 4) * plan.step_batch
        tile_loop_split(ctx, need)
    for r in rows_wanted:
        wait_until_quiet(quiet_budget)
        other = OtherLoad()
        t0 = time.perf_counter()
        if r == 1:
            got = row_descriptors(ctx)
        elif r == 2:
            got = row_matcher(ctx)
        elif r == 3:
            got = row_train_step(ctx)
        elif r == 4:
            got = row_reads(ctx)
        elif r == 5:
            got = row_precompute(ctx, build)
        elif r == 6:
            got = row_eval(ctx)
        else:
            got = row_memory(ctx)
            tile_loop_split(ctx, (plan.step_warm + plan.step_count + 4) * plan.step_batch)
        others = other.stop()
        if r == 5 and others is not None and build.get("others") is not None:
            others = max(others, build["others"])  # the timed precompute ran before the row
        for row in got:
            row.machine = ctx.machine
            if others is not None:
                row.details["other_processes_cores"] = others
                row.machine += f" (other processes busy: {others:.1f} cores)"
            log.info(
                "row %s (%.0f s): %s | %s | ratio %s | met %s",
                row.row,
                time.perf_counter() - t0,
                row.project,
                row.baseline,
                ratio_text(row),
                met_text(row),
            )
        rows += got

    meta = {
        "command": "make bench"
        if argv is None and len(sys.argv) == 1
        else "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "seconds": time.perf_counter() - t_start,
        "machine": ctx.machine,
        "torch": torch.__version__,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "load_before": load_before,
        "load_after": load_average(),
        "json": os.path.relpath(json_path, ROOT)
        if json_path.is_relative_to(ROOT)
        else str(json_path),
        "plan": asdict(plan),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=1))
    write_markdown(args.md, rows, meta)
    log.info("wrote %s and %s in %.0f s", args.md, json_path, meta["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
