"""omama-precompute: every unique image through the backbone once, everything else derived once.

One path for every run: a plain run is part 0 of 1.

    pairs -> unique images -> this part's jobs -> build (shards, listed as they close)
          -> finish the split: samples, manifest splits/subsets, bad-input report

    omama-precompute ...                                   part 0 of 1, finished at once
    torchrun --nproc_per_node=K -m omama.cli.precompute    rank r computes part r of K
    omama-precompute ... --part i --parts n                one task of a job array
    omama-precompute ... --merge [--parts n]               merge finished parts

A part of n > 1 plans the split once for all parts and the merge (the first to start writes
the plan to the cache, the others read it: see `plan`), and writes only its own shards and
part manifest (see `parts`). Under torchrun,
rank 0 merges after a barrier; in a job array the part that finds every part done merges
(an explicit `--merge` does the same). The merge is idempotent, and the merged cache holds the
same records and samples as a plain run of the same split.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from omama import dist
from omama.backbones import DEFAULT_BACKBONE, backbone_info
from omama.cache.manifest import Manifest, cache_lock, save_manifest
from omama.cache.paths import bad_report_path, parts_dir, random_init_weights_path
from omama.cache.samples import save_samples
from omama.config import require
from omama.dataset.layout import Annotations, default_masks_dir
from omama.errors import OmamaError, bad_file
from omama.files import write_json
from omama.precompute import backbone
from omama.precompute.build import Built, build
from omama.precompute.fingerprints import (
    Inputs,
    forget,
    listed_records,
    record_prints,
    stale_message,
    stale_records,
    write_shard_prints,
)
from omama.precompute.jobs import SplitImages, plan_jobs, table_images
from omama.precompute.options import PrecomputeConfig, PrecomputeReport, cache_settings
from omama.precompute.parts import (
    Part,
    assign,
    merge_parts,
    part_count,
    plan_digest,
    split_listing,
    unfinished_parts,
)
from omama.precompute.plan import SplitPlan, make_plan, shared_plan

__all__ = ["PrecomputeConfig", "PrecomputeReport", "run_precompute"]

log = logging.getLogger(__name__)

# The barrier waits out the difference between the first and the last rank to finish.
BARRIER_TIMEOUT = datetime.timedelta(days=3)


@dataclass(frozen=True)
class Split:
    """One split as this process sees it: the options, the annotations, the pairs it caches
    (as samples) and their unique images."""

    cfg: PrecomputeConfig
    ann: Annotations
    chosen: SplitPlan
    images: SplitImages

    @classmethod
    def plan(cls, cfg: PrecomputeConfig, shared: bool = False) -> Split:
        """Plan the split; `shared`: a part or the merge, which plan once per split and
        read the plan from the cache after (`omama.precompute.plan`)."""
        ann = Annotations(Path(cfg.root))
        chosen = shared_plan(cfg, ann) if shared else make_plan(cfg, ann)
        return cls(cfg, ann, chosen, table_images(chosen.samples))

    @property
    def cache(self) -> Path:
        return Path(self.cfg.cache)

    @property
    def digest(self) -> str:
        """Identifies the image set (a part must be resumed and merged on the same one)."""
        return plan_digest(self.images.where)


def run_precompute(cfg: PrecomputeConfig) -> PrecomputeReport:
    """Build (or extend) the cache for one split and direction; resumable and idempotent."""
    require(cfg, "root", "cache")
    env = dist.from_env()
    if cfg.merge:
        if env is not None:
            raise OmamaError("--merge runs in one process, not under torchrun")
        return run_merge(cfg)
    part = resolve_part(cfg, env)
    t0 = time.perf_counter()
    split = Split.plan(cfg, shared=part.count > 1)
    report = PrecomputeReport(bad=list(split.chosen.bad), part=part.tag if part.count > 1 else "")
    # The process group only carries the barrier before the merge (no tensors), so gloo
    # serves CPU and GPU runs alike and a long wait is not cut short by NCCL's watchdog.
    with dist.session("cpu", backend="gloo", timeout=BARRIER_TIMEOUT) as env:
        run_part(split, part, dist.device_for(env, cfg.device), report)
        if part.count > 1:
            merge_when_done(split, part, env, report)
    report.seconds = time.perf_counter() - t0
    return report


def resolve_part(cfg: PrecomputeConfig, env: dist.DistEnv | None) -> Part:
    """This process's part: its torchrun rank, its --part, or the whole split (0 of 1)."""
    if env is not None:
        if cfg.part is not None:
            raise OmamaError("under torchrun each rank computes its own part: drop --part")
        return Part(env.rank, env.world)
    if cfg.part is None:
        if cfg.parts > 1:
            raise OmamaError(f"--parts {cfg.parts} needs --part I (or --merge)")
        return Part(0, 1)
    return Part(cfg.part, cfg.parts)


def resolve_weights(cfg: PrecomputeConfig, cache: Path) -> Path:
    """The backbone weights file: --weights, or the cache's seeded random-init file (written
    atomically, with the same bytes, by whichever run or part needs it first)."""
    if cfg.random_init == (cfg.weights is not None):
        raise OmamaError("give exactly one of --weights FILE or --random-init")
    if cfg.weights is not None:
        return cfg.weights
    spec = backbone_info(cfg.backbone)
    path = random_init_weights_path(cache, cfg.seed, "" if spec == DEFAULT_BACKBONE else spec.name)
    if not path.exists():
        log.warning(
            "RANDOM-INIT %s (seed %d): features are not pretrained; for tests and demos only",
            spec.title,
            cfg.seed,
        )
        backbone.save_random_init(path, cfg.seed, spec)
    return path


def run_part(split: Split, part: Part, device: torch.device, report: PrecomputeReport) -> None:
    """Compute this part's share of the split's images; part 0 of 1 also finishes the split."""
    cfg, images = split.cfg, split.images
    mine = assign(images.where, images.dest, part)
    listing = split_listing(split.cache, cfg.direction, cfg.split, part, split.digest)
    with listing.lock():
        weights = resolve_weights(cfg, split.cache)
        settings = cache_settings(
            backbone.weights_fingerprint(weights),
            cfg.features,
            backbone_info(cfg.backbone),
            backbone.precision_on(device),
        )
        work = listing.open(settings)
        inputs = Inputs(Path(cfg.root), masks_folder(cfg), split.ann)
        check_stale(split, part, work, mine)
        jobs = plan_jobs(images, mine, split.ann, work, cfg.direction)
        report.images_reused = len(mine) - len(jobs)
        share = f" (part {part.tag}: {len(mine)} of {len(images.where)})" if part.count > 1 else ""
        log.info(
            "%s %s: %d pairs, %d images%s, %d to compute, %d already cached",
            cfg.direction,
            cfg.split,
            len(split.chosen.samples),
            len(mine),
            share,
            len(jobs),
            report.images_reused,
        )
        built = Built()
        if jobs:
            prints = record_prints(inputs, jobs, cfg.direction)

            def keep_prints(shard: str, keys: list[str], cands: list[tuple[str, str]]) -> None:
                write_shard_prints(split.cache, shard, inputs, prints, keys, cands)

            built = build(
                cfg,
                jobs,
                work=work,
                weights=weights,
                device=device,
                ann=split.ann,
                prefix=listing.prefix,
                publish=listing.publish,
                on_publish=keep_prints,
            )
        report.images_computed = built.images
        report.candidate_sets_computed = built.candidate_sets
        report.bad += built.bad
        listing.done(work, built.bad)
        if part.count == 1:
            report.samples = finish_split(split, work, built.bad)


def masks_folder(cfg: PrecomputeConfig) -> Path:
    return Path(cfg.masks_dir or default_masks_dir(Path(cfg.root), cfg.split, cfg.direction))


def check_stale(split: Split, part: Part, work: Manifest, mine: list[str]) -> None:
    """Records of this part's images whose input files changed since they were cached:
    `--stale stop` (default) refuses, naming them; `recompute` unlists them from `work`,
    so this run computes them again; `keep` uses them as they are, with a warning."""
    cfg = split.cfg
    listed = listed_records(work, mine, split.images.dest, cfg.direction)
    stale = stale_records(split.cache, work, listed, Path(cfg.root), split.ann)
    if not stale:
        return
    for s in stale:
        log.warning("stale record %s: %s", s.record, s.why)
    if cfg.stale == "keep":
        log.warning("%d stale records kept as cached (--stale keep)", len(stale))
        return
    if cfg.stale == "stop":
        raise OmamaError(stale_message(split.cache, stale))
    if part.count > 1:
        raise OmamaError(
            "--stale recompute runs as one part: rerun this split without --part/--parts "
            "(or under one process), then run the parts"
        )
    forget(work, stale)
    log.info("%d stale records will be computed again", len(stale))


def merge_when_done(
    split: Split, part: Part, env: dist.DistEnv | None, report: PrecomputeReport
) -> None:
    """Under torchrun rank 0 merges once every rank is done; in a job array, the part that
    finds every other part done merges."""
    if env is not None:
        dist.barrier(env)
        if env.main:
            merge(split, part.count, report)
        dist.barrier(env)
    elif not unfinished_parts(split.cache, split.cfg.direction, split.cfg.split, part.count):
        merge(split, part.count, report)
    else:
        log.info("part %s done; the last part to finish merges (or run with --merge)", part.tag)


def merge(split: Split, count: int, report: PrecomputeReport) -> None:
    """The finished parts -> manifest.json, then the split's end, under the cache lock."""
    cfg = split.cfg
    # blocking: a part finishing at the same moment, or another split's run, merges first
    with cache_lock(split.cache, wait=True):
        manifest, bad = merge_parts(split.cache, cfg.direction, cfg.split, count, split.digest)
        report.samples = finish_split(split, manifest, bad)
    report.merged = True
    log.info(
        "merged %d parts of %s %s: %d samples", count, cfg.direction, cfg.split, report.samples
    )


def run_merge(cfg: PrecomputeConfig) -> PrecomputeReport:
    """`--merge`: list the finished parts of a split in manifest.json (needs no backbone)."""
    t0 = time.perf_counter()
    cache = Path(cfg.cache)
    count = cfg.parts if cfg.parts > 1 else part_count(cache, cfg.direction, cfg.split)
    split = Split.plan(cfg, shared=True)
    report = PrecomputeReport(bad=list(split.chosen.bad))
    missing = unfinished_parts(cache, cfg.direction, cfg.split, count)
    if missing:
        raise bad_file(
            parts_dir(cache),
            f"parts {', '.join(missing)} of {count} are not finished; rerun them first",
        )
    merge(split, count, report)
    report.seconds = time.perf_counter() - t0
    return report


def finish_split(split: Split, manifest: Manifest, bad_images: list[dict]) -> int:
    """The one end of a split (the caller holds the cache lock): its samples, its count and
    subset in the manifest, and its bad-input report (bad pairs, then `bad_images`), written
    when something was bad and removed otherwise (a report of an earlier run whose files are
    fixed now). Returns the number of samples."""
    cfg, cache, chosen = split.cfg, split.cache, split.chosen
    split_key = f"{cfg.direction}/{cfg.split}"
    # pairs of bad images stay listed: the cache reader skips them and says how many
    samples = chosen.samples
    manifest.sample_formats[split_key] = save_samples(cache, cfg.direction, cfg.split, samples)
    manifest.splits[split_key] = len(samples)
    if chosen.subset is None:
        manifest.subsets.pop(split_key, None)
    else:
        manifest.subsets[split_key] = chosen.subset
    save_manifest(cache, manifest)
    report_path = bad_report_path(cache, cfg.direction, cfg.split)
    bad = chosen.bad + bad_images
    if bad:
        write_json(bad, report_path, 1)
    else:
        report_path.unlink(missing_ok=True)
    return len(samples)
