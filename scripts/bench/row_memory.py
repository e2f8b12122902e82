"""Row 7: memory. The peak of omama-train (PSS over the trainer and its workers, the main
process's RSS) at the plan's batch with the default workers, whether it grows during the
steps, and the cache's bytes per image and where they go."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import defaultdict

from bench.common import DIRECTION, LOOP_SPLIT, TRAIN, Ctx, Row, omama_command, subprocess_env
from bench.data import tile_loop_split
from bench.host import tree_pss
from omama.cache.paths import shards_dir
from omama.cache.reader import Cache, Record

POLL_S = 0.1  # seconds between two looks at the trainer's memory


def watch_training(ctx: Ctx) -> tuple[list[tuple[float, int, int]], dict[str, float]]:
    """Run omama-train on the loop split for one epoch; returns the (seconds, PSS, RSS)
    series and when init.pt and last.pt appeared (the trainer writes one before its steps
    and the other after)."""
    p = ctx.plan
    run_dir = ctx.out / "mem_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    tile_loop_split(ctx, p.mem_batch * p.mem_steps, exact=True)
    argv = omama_command(
        "train",
        cache=ctx.cache,
        direction=DIRECTION,
        train_split=LOOP_SPLIT,
        val_split="none",
        epochs=1,
        batch_size=p.mem_batch,
        out=run_dir,
        device=ctx.device.type,
    )
    series: list[tuple[float, int, int]] = []
    marks: dict[str, float] = {}
    proc = subprocess.Popen(
        argv, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    t0 = time.perf_counter()

    def poll() -> None:
        while proc.poll() is None:
            pss, rss = tree_pss(proc.pid)
            now = time.perf_counter() - t0
            if pss:
                series.append((now, pss, rss))
            for name in ("init.pt", "last.pt"):
                if name not in marks and (run_dir / name).exists():
                    marks[name] = now
            time.sleep(POLL_S)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"training run failed: {err.decode()[-2000:]}")
    return series, marks


def cache_parts(ctx: Ctx) -> tuple[int, int, dict[str, int]]:
    """(shard bytes, images, stored bytes of each field) of the cache."""
    cache = Cache(ctx.cache)
    total = sum((shards_dir(ctx.cache) / s).stat().st_size for s in set(cache.manifest.shards))
    parts: dict[str, int] = defaultdict(int)

    def add(rec: Record, names: tuple[str, ...], prefix: str = "") -> None:
        group = cache.shards.group(rec.shard, rec.path)
        for name in names:
            parts[prefix + name] += group[name].id.get_storage_size()

    for key in cache.manifest.images:
        add(cache.image(key), ("tokens", "image"))
    for key in cache.manifest.candidates.get(DIRECTION, {}):
        add(cache.cands(DIRECTION, key), ("desc", "rle", "adj"), "cand ")
    n_img = len(cache.manifest.images)
    cache.close()
    return total, n_img, dict(parts)


def run(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    series, marks = watch_training(ctx)
    tile_loop_split(ctx, p.loop_samples())  # row 3's loop split again, for rows after this
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
    total, n_img, parts = cache_parts(ctx)
    split = ", ".join(f"{k} {v / n_img / 1e6:.2f}" for k, v in parts.items())
    return [
        Row(
            row="7",
            what=f"memory: training at batch {p.mem_batch}, default workers "
            f"({TRAIN.workers}), {dev.type}; cache size per image",
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
                "parts": parts,
            },
        )
    ]
