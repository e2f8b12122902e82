"""omama-eval: predictions in the challenge format, the ground truth they face, the metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from omama import dist
from omama.cache.reader import Cache, Records
from omama.cache.records import Sample
from omama.cache.rle_texts import RleReads
from omama.cache.samples import SampleTable, as_table
from omama.config import require
from omama.errors import OmamaError, bad_file
from omama.files import beside, write_json
from omama.loader.eval_samples import read_order
from omama.matcher.checkpoint import build_matcher
from omama.metrics.groundtruth import GTSample, build_gt_json, read_gt_file
from omama.metrics.official import Metrics, evaluate
from omama.metrics.official_gt import load_official_gt
from omama.predict.challenge import challenge_json
from omama.predict.options import EvalConfig
from omama.predict.ranks import score_across_ranks
from omama.predict.scoring import Scored, prediction_records, random_scores, with_confidence
from omama.predict.visualize import write_visualizations
from omama.profiling import StepProfiler

log = logging.getLogger(__name__)


def gt_samples(cache: Records, samples: SampleTable | Sequence[Sample]) -> list[GTSample]:
    """The ground truth of each sample, in the input order, read from the cache in
    `read_order` (each image's RLEs read once)."""
    table = as_table(samples)
    reads = RleReads(cache)
    out: list[GTSample | None] = [None] * len(table)
    for i in read_order(table).tolist():
        s = table[i]
        out[i] = GTSample(
            take=s.take,
            obj=s.obj,
            src_cam=s.src_cam,
            dst_cam=s.dst_cam,
            frame=s.frame,
            src_rle=reads.obj_rle(s.src, s.src_k),
            dst_rle=reads.obj_rle(s.dst, s.dst_k) if s.dst_k >= 0 else None,
        )
    return out  # type: ignore[return-value]


def measure(
    cache: Records,
    direction: str,
    samples: SampleTable | Sequence[Sample],
    scored: list[Scored],
    workers: int = 0,
    gt: dict | None = None,
) -> tuple[dict, dict, Metrics]:
    """Scores of `samples` -> challenge JSON, the ground truth it faces, official metrics;
    the per-pair work over `workers` processes when there are many pairs. `gt`: the
    ground truth of `samples` when the caller built it already (`build_gt_json(gt_samples)`,
    e.g. once per training run). `cache`: a `Cache`, or its `reader` of these samples."""
    table = as_table(samples)
    records = prediction_records(cache, direction, scored, workers=workers, table=table)
    pred = challenge_json(direction, records)
    gt = gt if gt is not None else build_gt_json(gt_samples(cache, table))
    # a validation subset need not hold every frame the official validator would ask for
    return pred, gt, evaluate(pred, gt, direction, strict=False, workers=workers)


def output_paths(cfg: EvalConfig) -> dict[str, Path]:
    """Every file or folder a run of `cfg` writes (beside --out unless given), by what the
    options call it: the predictions, the metrics, the ground truth (without --gt), the
    pictures (--visualize) and the profiler trace (--profile)."""
    out = Path(cfg.out)
    paths = {
        "out": out,
        "metrics_out": cfg.metrics_out or beside(out, "_metrics.json"),
    }
    if cfg.gt is None:
        paths["the ground truth written beside --out"] = beside(out, "_gt.json")
    if cfg.visualize:
        paths["the pictures folder beside --out"] = beside(out, "_vis")
    if cfg.profile:
        paths["the trace beside --out"] = beside(out, "_profile_trace.json")
    return paths


def run_eval(cfg: EvalConfig) -> Metrics | None:
    """Under torchrun the ranks score interleaved batches and rank 0 writes the one JSON
    (identical to a 1-process run's) and returns the metrics; other ranks return None."""
    check_options(cfg)
    with dist.session(cfg.device) as env:
        return _run_eval(cfg, env)


def check_options(cfg: EvalConfig) -> None:
    """Options that must or must not come together (one line each, before any path)."""
    require(cfg, "cache", "out")
    if (cfg.checkpoint is None) == (cfg.baseline == "none"):
        raise OmamaError("give exactly one of --checkpoint FILE or --baseline random")
    if cfg.relations is not None:
        if cfg.gt is not None:
            raise OmamaError("give at most one of --gt FILE or --relations FILE")
        if cfg.limit:
            raise OmamaError(
                "--relations scores against the whole split's official GT; drop --limit"
            )
        require(cfg, "root")


def _run_eval(cfg: EvalConfig, env: dist.DistEnv | None) -> Metrics | None:
    device = dist.device_for(env, cfg.device)
    cache = Cache(cfg.cache)
    samples = cache.samples(cfg.direction, cfg.split)
    if cfg.limit:
        samples = samples[: cfg.limit]
    reader = cache.reader(samples, cfg.direction)  # located once for scoring, records, GT
    paths = output_paths(cfg)
    official_gt = None
    if cfg.relations is not None and dist.is_main(env):  # bad files fail before the scoring
        official_gt = load_official_gt(cfg.root, cfg.split, cfg.relations)
    if cfg.gt is not None and dist.is_main(env):
        official_gt = read_gt_file(cfg.gt)
    if cfg.baseline == "random":  # cheap and sequential: rank 0 draws it alone
        scored = (
            random_scores(cache, cfg.direction, samples, cfg.seed) if dist.is_main(env) else None
        )
    else:
        grids = cache.role_grids(samples)
        model = build_matcher(*grids, cfg.checkpoint, cache.manifest.backbone).to(device)
        trace = paths.get("the trace beside --out", cfg.out)  # only written with --profile
        batches = math.ceil(len(samples) / cfg.batch_size)
        prof = StepProfiler(cfg.profile if dist.is_main(env) else 0, trace, device, batches)
        scored = score_across_ranks(
            reader,
            model,
            cfg.direction,
            samples,
            device,
            env,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            progress=True,
            on_batch=prof.step,
            precision=cfg.precision,
        )
        prof.close()
        if scored is not None:
            if cfg.confidence == "visibility" and not model.visibility.fitted:
                log.info("%s: no fitted visibility part: reference confidence", cfg.checkpoint)
            scored = with_confidence(scored, model.visibility, cfg.confidence)
    if scored is None:  # not rank 0: its scores went to rank 0
        return None
    records = prediction_records(reader, cfg.direction, scored, cfg.mask_size, cfg.workers, samples)
    pred = challenge_json(cfg.direction, records)
    write_json(pred, cfg.out)
    if cfg.gt is not None:
        gt = official_gt
    else:
        if official_gt is not None:
            gt = official_gt
        else:
            log.warning(
                "no --relations or --gt: ground truth built from the cache; balanced accuracy "
                "may differ from the official figure (a frame the destination camera never "
                "annotated counts as 'not visible' here, the official evaluator skips it)"
            )
            gt = build_gt_json(gt_samples(reader, samples))
        gt_path = paths["the ground truth written beside --out"]
        write_json(gt, gt_path)
        log.info("ground truth written to %s", gt_path)
    if cfg.mask_size != "official":
        log.warning("crop-size masks: the official evaluator rejects these; metrics skipped")
        return Metrics(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    strict = not cfg.limit  # --limit scores a subset: only its own frames are required
    try:  # the one validator runs inside: a file it refuses is named here
        metrics = evaluate(pred, gt, cfg.direction, strict=strict, workers=cfg.workers)
    except OmamaError as exc:
        raise bad_file(cfg.out, str(exc)) from None
    metrics_out = paths["metrics_out"]
    write_json(metrics.as_dict(), metrics_out, indent=1)
    if cfg.visualize:
        folder = paths["the pictures folder beside --out"]
        write_visualizations(cache, cfg.direction, scored, folder, worst=cfg.visualize)
        log.info("%d worst pairs drawn in %s", min(cfg.visualize, len(scored)), folder)
    return metrics
