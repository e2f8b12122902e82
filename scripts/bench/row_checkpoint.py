"""Row 11: the trainer's step time around a checkpoint save. What omama-train writes every
`--save-every` steps (the loss records logged since the last save appended to steps.jsonl, a
long run's worth there already; state.pt: model, AdamW state, schedule, RNG, history),
saved by the background saver, against the same save written inside the step (as the trainer
did before) and against no save at all (the floor).

A window is one save followed by K steps on batches in memory; the background window also
waits, at its end, for its save to be on disk, so a write slower than K steps is counted.
The three kinds of window are interleaved, each first by turns, so a busy host slows them
alike; a ratio is the median over rounds of a window's step time over the round's floor.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict

import torch

from bench.common import DIRECTION, LOOP_SPLIT, TRAIN, Ctx, Row, fmt_ms
from omama.cache.reader import Cache
from omama.loader.sampler import EpochSampler
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import build_matcher
from omama.train.loop import state_writes
from omama.train.saver import BackgroundSaver
from omama.train.step import TrainStep, build_optimizer, train_loader
from omama.train.steplog import STEPS_FILE, StepLog

MEMORY_BATCHES = 4  # distinct batches the steps cycle through
LOGGED_STEPS = 2000  # loss records of the run so far: a long run's steps.jsonl
TARGET = 1.1


def run(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    b, k, reps = p.step_batch, p.ckpt_steps, p.ckpt_reps
    data = TrainSamples(Cache(ctx.cache), DIRECTION, LOOP_SPLIT, TRAIN.n_masks, TRAIN.seed)
    it = iter(train_loader(data, EpochSampler(len(data), TRAIN.seed), b, 0, dev))
    batches = [{key: v.to(dev) for key, v in next(it).items()} for _ in range(MEMORY_BATCHES)]

    torch.manual_seed(0)
    model = build_matcher(*data.cache.role_grids(data.samples)).to(dev).train()
    optimizer, schedule = build_optimizer(
        model, TRAIN.lr, TRAIN.weight_decay, TRAIN.min_lr, 100 * (reps + 1) * k
    )
    train_step = TrainStep(model, optimizer, schedule, dev)
    running = torch.zeros((), device=dev)
    history = {
        "config": {key: str(v) for key, v in asdict(TRAIN).items()},
        "steps": [
            {"step": i, "epoch": 0, "loss": 1.0 / i, "lr": TRAIN.lr}
            for i in range(1, LOGGED_STEPS + 1)
        ],
        "epochs": [],
    }
    out = ctx.out / "checkpoint_row"
    shutil.rmtree(out, ignore_errors=True)
    n_step = [0]
    steplog = StepLog(out / STEPS_FILE)
    save_s: dict[str, list[float]] = {"sync": [], "background": []}

    def steps() -> None:
        for _ in range(k):
            running.add_(train_step(batches[n_step[0] % len(batches)]))
            n_step[0] += 1

    def window(kind: str, saver: BackgroundSaver | None) -> float:
        """Seconds per step of one save (none for the floor) and the K steps after it."""
        ctx.sync()
        t0 = time.perf_counter()
        if saver is not None:
            history["steps"].append({"step": n_step[0], "epoch": 0, "loss": 0.5, "lr": TRAIN.lr})
            writes = state_writes(
                out, model, optimizer, schedule, 0, n_step[0], -1.0, history, steplog
            )
            saver.save(*writes)
            save_s[kind].append(time.perf_counter() - t0)
        steps()
        ctx.sync()
        if saver is not None:
            saver.wait()
        return (time.perf_counter() - t0) / k

    times: dict[str, list[float]] = {"floor": [], "sync": [], "background": []}
    with BackgroundSaver(background=False) as sync, BackgroundSaver() as background:
        savers = [("floor", None), ("sync", sync), ("background", background)]
        for rep in range(reps + 1):  # the first round warms up (files created, pages touched)
            for kind, saver in savers[rep % 3 :] + savers[: rep % 3]:  # each goes first by turns
                t = window(kind, saver)
                if rep:
                    times[kind].append(t)
    state_mb = (out / "state.pt").stat().st_size / 1e6
    shutil.rmtree(out, ignore_errors=True)

    med = {kind: statistics.median(v) for kind, v in times.items()}
    # per round, against that round's floor: slow drifts of other tenants' load cancel
    ratio = statistics.median(
        a / f for a, f in zip(times["background"], times["floor"], strict=True)
    )
    sync_ratio = statistics.median(
        a / f for a, f in zip(times["sync"], times["floor"], strict=True)
    )
    snap = statistics.median(save_s["background"][1:] or save_s["background"])
    write = statistics.median(save_s["sync"][1:] or save_s["sync"])
    return [
        Row(
            row="11",
            what=f"training step around a checkpoint save (state.pt {state_mb:.0f} MB + "
            f"steps.jsonl, every {k} steps), batch {b}, N={TRAIN.n_masks}, {dev.type}: "
            "background saver vs no save",
            project=f"{fmt_ms(med['background'])} per step (background)",
            baseline=f"{fmt_ms(med['floor'])} per step (no save); "
            f"{fmt_ms(med['sync'])} saving in the step ({sync_ratio:.2f}x)",
            ratio=ratio,
            target=f"<= {TARGET}x the no-save step",
            met=ratio <= TARGET,
            command=ctx.command("11"),
            note=f"{reps} interleaved rounds of windows of one save + {k} steps each, after "
            f"one warm-up round; ratios: median over rounds of the window's step time over "
            f"that round's no-save step time; the save call itself: {fmt_ms(snap)} in the "
            f"background (the snapshot), {fmt_ms(write)} written in the step; step time saving "
            f"in the "
            f"step / no save = {sync_ratio:.2f}",
            details={
                "step_s": times,
                "save_call_s": save_s,
                "ratio_sync": sync_ratio,
                "state_mb": state_mb,
                "steps_per_window": k,
                "batch": b,
            },
        )
    ]
