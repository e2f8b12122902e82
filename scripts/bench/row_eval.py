"""Row 6: evaluation end to end (run_eval: scores, challenge JSON, ground truth, official
metrics) in pairs/s against the scoring forward alone on batches in memory; the per-pair
latency of one pair scored alone; and omama-eval as a command, interpreter start included."""

from __future__ import annotations

import contextlib
import io
import subprocess
import time

import numpy as np
import torch

from bench.common import (
    DIRECTION,
    TRAIN_SPLIT,
    Ctx,
    Row,
    fmt_ms,
    interleaved,
    median,
    omama_command,
    subprocess_env,
)
from omama import precision as prec
from omama.cache.reader import Cache
from omama.loader.eval_samples import EvalSamples, pair_inputs
from omama.matcher.checkpoint import build_matcher, save_matcher_state
from omama.matcher.model import predict
from omama.predict.evaluate import EvalConfig, run_eval
from omama.predict.scoring import score_samples


def run(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    cache = Cache(ctx.cache)
    samples = cache.samples(DIRECTION, TRAIN_SPLIT)
    torch.manual_seed(0)
    model = build_matcher(*cache.role_grids(samples)).to(dev)
    ckpt = ctx.out / "eval" / "matcher.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_matcher_state(model, ckpt)
    options = dict(
        cache=ctx.cache, direction=DIRECTION, split=TRAIN_SPLIT, checkpoint=ckpt, device=dev.type
    )
    cfg = EvalConfig(**options, out=ctx.out / "eval" / "pred.json")
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
    argv = omama_command("eval", **options, out=ctx.out / "eval" / "pred_cli.json")
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=subprocess_env(), capture_output=True)
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
    pairs, bs = EvalSamples(cache, DIRECTION, samples), cfg.batch_size
    batches = [pairs.__getitems__(list(range(i, min(i + bs, n)))) for i in range(0, n, bs)]
    batches = [pair_inputs({k: v.to(dev) for k, v in b.items()}) for b in batches]
    model.eval()

    def forward_all() -> None:  # in omama-eval's precision (fp32 unless --precision says)
        with torch.inference_mode(), prec.autocast(cfg.precision, dev):
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
