"""`make bench`: each stage of omama timed against the plain thing it must beat.

Rows, one module each:
  1  descriptor pooling, all candidates of one image, vs a per-mask Python loop
     (docs/reference.md, Descriptors)
  2  matcher forward+backward per training sample (fp32) vs the standard attention order that
     projects keys and values for every image token; 2e: scoring 200 candidates (eval)
  3  training step fed by the cache loader vs the same step on batches already in memory
  4  cache reads: bytes per sample; loader read throughput vs a raw sequential read
  5  precompute images/s (decode .. HDF5 writes) vs the backbone forward alone
  6  evaluation pairs/s end to end, and per-pair latency
  7  memory: peak of training at batch 24 with the default workers; cache bytes per image
  8  precompute per backbone: images/s and cache bytes per image, ViT-S vs ViT-B (+ L on GPU)
  9  evaluation post-processing per CPU core (exo2ego, 9b: ego2exo), run-level vs pixel path
 10  precompute host work vs its floor (JPEG decode, npz inflate, RLE decode), per image
 11  training step time around a checkpoint save: background saver vs saving in the step vs
     no save
 12  omama-prepare: frames written per CPU second vs decoding the same videos alone
 13  omama-proposals images/s (decode .. npz writes) vs the FastSAM forward alone
 14  scale: per-item costs (precompute bookkeeping, samples, training epoch, validation,
     evaluation, --verify, --merge) and per-process memory and open files at N and 4N images
     and pairs, with a projection to 300k images and 1.5M pairs (`--rows 14` alone)

Writes the table to BENCHMARKS.md (BENCHMARKS_GPU.md on CUDA), keeping its hand-written
analysis block, and every raw number to bench_out/bench.json (bench_cuda.json).

    python scripts/bench [--device cpu|cuda] [--rows 1,2,...] [--out DIR] [--md FILE]
                         [--json FILE] [--quick] [--quiet-wait SECONDS]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from bench import (
    ROOT,
    row_backbones,
    row_checkpoint,
    row_descriptors,
    row_eval,
    row_eval_post,
    row_matcher,
    row_memory,
    row_precompute,
    row_precompute_host,
    row_prepare,
    row_proposals,
    row_reads,
    row_scale,
    row_train_step,
)
from bench.common import Ctx, Plan, Row, machine_name, met_text, ratio_text
from bench.data import ensure_cache, ensure_data, tile_loop_split
from bench.host import OtherLoad, load_average, wait_until_quiet

log = logging.getLogger("bench")

ROWS = {
    1: row_descriptors.run,
    2: row_matcher.run,
    3: row_train_step.run,
    4: row_reads.run,
    5: row_precompute.run,
    6: row_eval.run,
    7: row_memory.run,
    8: row_backbones.run,
    9: row_eval_post.run,
    10: row_precompute_host.run,
    11: row_checkpoint.run,
    12: row_prepare.run,
    13: row_proposals.run,
    14: row_scale.run,
}
ALL_ROWS = tuple(ROWS)
NEED_CACHE = {3, 4, 5, 6, 7, 11}
NEED_DATA = NEED_CACHE | {8, 13}
MARKER = "<!-- analysis: written by hand, kept when bench.py rewrites this file -->"
END_MARKER = "<!-- /analysis -->"


def write_markdown(path: Path, rows: list[Row], meta: dict) -> None:
    """The table and the measured details; the hand-written block between MARKER and
    END_MARKER of the existing file is kept as it is."""
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    ap.add_argument("--rows", default=",".join(map(str, ALL_ROWS)), help="e.g. 1,2,5")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out", help="scratch folder")
    ap.add_argument(
        "--md",
        type=Path,
        default=None,
        help="table to write (default BENCHMARKS.md on the CPU, BENCHMARKS_GPU.md on CUDA: "
        "a GPU run writes its table next to the CPU one)",
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="default OUT/bench.json (OUT/bench_cuda.json)"
    )
    ap.add_argument("--quick", action="store_true", help="small images, few repeats (smoke)")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds in all to wait, before rows, for other processes to go quiet",
    )
    return ap.parse_args(argv)


def run_rows(ctx: Ctx, wanted: list[int], quiet_wait: float) -> list[Row]:
    """Each wanted row after a wait for a quiet host, its rows stamped with the machine and
    the cores other processes kept busy meanwhile."""
    rows: list[Row] = []
    quiet_budget = [quiet_wait]
    build_others = None
    if set(wanted) & NEED_DATA:
        ensure_data(ctx)
    if set(wanted) & NEED_CACHE:
        wait_until_quiet(quiet_budget)
        build_load = OtherLoad()
        ctx.build = ensure_cache(ctx, fresh=5 in wanted)
        build_others = build_load.stop()
        tile_loop_split(ctx, ctx.plan.loop_samples())
    for r in wanted:
        wait_until_quiet(quiet_budget)
        other = OtherLoad()
        t0 = time.perf_counter()
        got = ROWS[r](ctx)
        others = other.stop()
        if r == 5 and others is not None and build_others is not None:
            others = max(others, build_others)  # the timed precompute ran before the row
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
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("omama").setLevel(logging.WARNING)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.error("--device cuda but no CUDA device here")
        return 2
    wanted = sorted({int(v) for v in args.rows.split(",") if v.strip()})
    if not set(wanted) <= set(ALL_ROWS):
        log.error("--rows must be among %s", ALL_ROWS)
        return 2
    plan = Plan.for_run(device.type, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = device.type == "cuda"
    md_path = args.md or ROOT / ("BENCHMARKS_GPU.md" if gpu else "BENCHMARKS.md")
    json_path = args.json or args.out / ("bench_cuda.json" if gpu else "bench.json")
    ctx = Ctx(device, plan, args.out, machine_name(device), args.rows)
    t_start, load_before = time.perf_counter(), load_average()
    log.info("machine: %s; rows %s; plan %s", ctx.machine, wanted, plan)
    rows = run_rows(ctx, wanted, args.quiet_wait)
    given = sys.argv[1:] if argv is None else argv
    meta = {
        "command": "python scripts/bench " + " ".join(given) if given else "make bench",
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
    write_markdown(md_path, rows, meta)
    log.info("wrote %s and %s in %.0f s", md_path, json_path, meta["seconds"])
    return 0
