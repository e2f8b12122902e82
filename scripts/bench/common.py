"""What every bench row shares: the plan of sizes and repeats, the context, a table row, and
the timing and formatting helpers.

Data: the synthetic generator at real sizes (ego 704x704 -> 700x700, 50x50 patches; exo
540x960 -> 532x952, 38x68), a seeded random-init ViT-B/14 backbone, and a cache made by the
real precompute. Times are medians of repeats after a warm-up, project and baseline
interleaved where both are cheap, so that a busy host slows both alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench import ROOT
from omama.config import flag_name
from omama.train.options import TrainConfig

DIRECTION = "exo2ego"  # source exo (38x68), destination ego (50x50): T = 2500, Tq = 2584
TRAIN_SPLIT = "train"  # precomputed (row 5) and evaluated (row 6)
LOOP_SPLIT = "val"  # the bench writes the train pairs, repeated, under this split's name
TRAIN = TrainConfig()  # the trainer's defaults: candidates per sample, seed, optimiser, workers


@dataclass(frozen=True)
class Plan:
    """Sizes and repeat counts: real sizes everywhere except --quick; more work on a GPU."""

    # the synthetic dataset (rows 3-7)
    small: bool = False
    n_takes: int = 3
    n_frames: int = 2
    # row 1: candidates pooled; repeats of the project and of the per-mask loop
    desc_cands: int = 120
    desc_reps: int = 5
    loop_reps: int = 2
    # row 2: batch of the training and of the scoring comparison; repeats
    mm_batch: int = 4
    mm_eval_batch: int = 4
    mm_reps: int = 5
    # row 3: batch, warm-up and timed steps
    step_batch: int = 12
    step_warm: int = 1
    step_count: int = 20
    # row 4: repeats of every pass; batches per loader pass
    read_reps: int = 3
    read_batches: int = 3
    # row 5: precompute the test split first, untimed (first CUDA use, kernels, allocator)
    precompute_warmup: bool = False
    # row 6: pairs scored alone for the latency
    eval_latency_pairs: int = 8
    # row 7: batch and steps of the watched training run
    mem_batch: int = 24
    mem_steps: int = 8
    # row 11: steps after each checkpoint save (batch: row 3's); timed rounds
    ckpt_steps: int = 2
    ckpt_reps: int = 10

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
                ckpt_steps=2,
                ckpt_reps=2,
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
                ckpt_steps=10,
                ckpt_reps=5,
            )
        return Plan()

    def loop_samples(self) -> int:
        """Samples the loop split must hold for row 3's warm-up, timed steps and spare."""
        return (self.step_warm + self.step_count + 4) * self.step_batch


@dataclass
class Row:
    """One line of the table in BENCHMARKS.md (and one entry of bench.json)."""

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
    """What the rows run with: device, plan, scratch folder, and the data made for them."""

    device: torch.device
    plan: Plan
    out: Path
    machine: str
    rows_arg: str
    data: Path = Path()
    weights: Path = Path()
    cache: Path = Path()
    build: dict = field(default_factory=dict)  # the timed precompute (row 5)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def command(self, row: str) -> str:
        """The command that reruns this row alone."""
        quick = " --quick" if self.plan.small else ""
        return f"python scripts/bench --device {self.device.type} --rows {row}{quick}"


def machine_name(device: torch.device) -> str:
    """CPU model and core count; the GPU's name first on CUDA."""
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


def omama_command(name: str, **options: object) -> list[str]:
    """argv of `python -m omama.cli.NAME --option value ...` (underscores become dashes)."""
    argv = [sys.executable, "-m", f"omama.cli.{name}"]
    for key, value in options.items():
        argv += [flag_name(key), str(value)]
    return argv


def subprocess_env() -> dict[str, str]:
    """The environment for an omama command run as a subprocess from a fresh clone."""
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def interleaved(
    fns: dict[str, Callable[[], object]],
    reps: dict[str, int],
    sync: Callable[[], None],
    warm: dict[str, Callable[[], object]] | None = None,
) -> dict:
    """Median seconds of each fn: one warm-up each (`warm` may name a cheaper call for it),
    then rounds that call each in turn. Key "_all" holds every time measured."""
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
    """|a - b| / |b| in float64 (Frobenius norms)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def ratio_text(r: Row) -> str:
    return "—" if r.ratio is None else f"{r.ratio:.2f}"


def met_text(r: Row) -> str:
    return {True: "yes", False: "**no**", None: "—"}[r.met]
