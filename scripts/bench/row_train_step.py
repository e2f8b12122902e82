"""Row 3: the trainer's own step fed by the trainer's own loader (omama.train.step) against the
same step on batches already in memory; the in-memory step is timed before and after.
Row 3s: the same, with the split's tokens in the token store (omama.loader.token_store), as
omama-train runs whenever they fit."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from bench.common import DIRECTION, LOOP_SPLIT, TRAIN, Ctx, Row, fmt_ms
from bench.host import cpu_seconds
from omama.cache.reader import Cache
from omama.loader.sampler import EpochSampler
from omama.loader.token_store import TokenStore
from omama.loader.train_samples import TrainSamples
from omama.matcher.checkpoint import build_matcher
from omama.train.step import PREFETCH, TrainStep, build_optimizer, train_loader

MEMORY_BATCHES = 4  # distinct batches the in-memory baseline cycles through


def trainer_step(
    ctx: Ctx, data: TrainSamples, total_steps: int, store: TokenStore | None = None
) -> Callable[[dict], None]:
    """omama-train's step with its default optimiser settings, the loss summed on the device
    as the trainer sums it between log lines (no host sync)."""
    torch.manual_seed(0)
    model = build_matcher(*data.cache.role_grids(data.samples)).to(ctx.device).train()
    optimizer, schedule = build_optimizer(
        model, TRAIN.lr, TRAIN.weight_decay, TRAIN.min_lr, total_steps
    )
    train_step = TrainStep(model, optimizer, schedule, ctx.device, store=store)
    running = torch.zeros((), device=ctx.device)

    def step(batch: dict) -> None:
        running.add_(train_step(batch))

    return step


def gather_seconds(ctx: Ctx, store: TokenStore, batch: dict, reps: int = 5) -> float:
    """Median seconds of the store's gather of one batch's tokens (what the step adds)."""
    batch = {k: v.to(store.tokens["src"].device) for k, v in batch.items()}
    times = []
    for _ in range(reps + 1):
        ctx.sync()
        t0 = time.perf_counter()
        store.gather(batch)
        ctx.sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def run(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    data = TrainSamples(Cache(ctx.cache), DIRECTION, LOOP_SPLIT, TRAIN.n_masks, TRAIN.seed)
    b, warm, count = p.step_batch, p.step_warm, p.step_count
    step = trainer_step(ctx, data, total_steps=10 * (warm + count))
    workers = TRAIN.workers

    def loader(n_workers: int, samples: TrainSamples = data):
        return train_loader(samples, EpochSampler(len(data), TRAIN.seed), b, n_workers, dev)

    # baseline batches: the same samples, read once and kept in memory (on the device)
    it = iter(loader(0))
    batches = [
        {k: v.to(dev) for k, v in next(it).items()} for _ in range(min(count, MEMORY_BATCHES))
    ]

    def in_memory(n_steps: int) -> tuple[float, float]:
        for i in range(warm):
            step(batches[i % len(batches)])
        ctx.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n_steps):
            step(batches[i % len(batches)])
        ctx.sync()
        return (time.perf_counter() - t0) / n_steps, (time.process_time() - c0) / n_steps

    stored = TrainSamples(Cache(ctx.cache), DIRECTION, LOOP_SPLIT, TRAIN.n_masks, TRAIN.seed)
    store = TokenStore.load(stored.cache, stored.samples, dev)
    stored.use_store(store.rows)
    store_step = trainer_step(ctx, stored, total_steps=10 * (warm + count), store=store)

    def from_cache(samples: TrainSamples = data, run=step) -> tuple[float, float]:
        loader_it = iter(loader(workers, samples))
        pids = [w.pid for w in getattr(loader_it, "_workers", [])]
        for _ in range(warm):
            run(next(loader_it))
        ctx.sync()
        t0, c0, w0 = time.perf_counter(), time.process_time(), cpu_seconds(pids)
        for _ in range(count):
            run(next(loader_it))
        ctx.sync()
        cpu = time.process_time() - c0 + cpu_seconds(pids) - w0
        return (time.perf_counter() - t0) / count, cpu / count

    mem_a, cpu_a = in_memory(max(2, count // 2))
    loaded, cpu_loaded = from_cache()
    from_store, cpu_store = from_cache(stored, store_step)
    gather = gather_seconds(ctx, store, next(iter(loader(0, stored))))
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
            f"prefetch {PREFETCH}), batch {b}, N={TRAIN.n_masks}, {dev.type}",
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
        ),
        Row(
            row="3s",
            what=f"training step fed by the token store ({workers} workers send rows and "
            f"descriptors; the split's tokens resident on {dev.type}), batch {b}",
            project=f"{b / from_store:.1f} samples/s",
            baseline=f"{b / mem:.1f} samples/s (batches in memory)",
            ratio=mem / from_store,
            target=">= 0.95 on CPU, >= 0.8 on a GPU",
            met=mem / from_store >= (0.95 if dev.type == "cpu" else 0.8),
            command=ctx.command("3"),
            note=f"same timing as row 3, in the same run; token store "
            f"{TokenStore.bytes_needed(stored.cache, stored.samples) / 2**20:.0f} MiB; CPU "
            f"seconds per step {cpu_store:.2f}; the store's gather of a batch's tokens, done "
            f"by the step where row 3's worker copies them: {fmt_ms(gather)} "
            f"({gather / mem:.0%} of the in-memory step)",
            details={"step_s_store": from_store, "cpu_s_store": cpu_store, "gather_s": gather},
        ),
    ]
