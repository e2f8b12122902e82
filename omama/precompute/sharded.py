"""Precompute spread over processes: torchrun ranks or job-array tasks, then one merge.

    torchrun --nproc_per_node=K -m omama.cli.precompute ...     rank r computes part r of K
    omama-precompute ... --shard-index i --num-shards n          one task of a job array
    omama-precompute ... --merge [--num-shards n]                 merge finished parts

Each part computes its own images into its own shards and fragment (see `parts`), so parts
never write the same file and a dead part can be rerun alone. Under torchrun, rank 0 merges
after a barrier; in a job array the part that finds every fragment done merges (an explicit
`--merge` does the same). The merge is idempotent, and the merged cache holds the same records
and samples as a single-process build of the same split.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from pathlib import Path

import torch

from omama import dist
from omama.files import write_json
from omama.cache.manifest import (
    Manifest,
    check_settings,
    load_manifest,
    save_manifest,
    save_samples,
)
from omama.cache.records import image_key
from omama.dataset.layout import Annotations, Pair, default_masks_dir
from omama.errors import OmamaError, bad_file
from omama.precompute import backbone, pipeline
from omama.precompute.parts import (
    Fragment,
    Part,
    assign,
    fragment_path,
    load_fragment,
    merge_into,
    part_lock,
    parts_dir,
    plan_digest,
    save_fragment,
    working_manifest,
)
from omama.precompute.pipeline import PrecomputeConfig, PrecomputeReport

log = logging.getLogger(__name__)

# The barrier waits out the difference between the first and the last rank to finish.
BARRIER_TIMEOUT = datetime.timedelta(days=3)


def pair_images(pairs: list[Pair]) -> tuple[set[str], set[str]]:
    """(every image key the pairs name, the destination image keys)."""
    keys, dest = set(), set()
    for p in pairs:
        keys.add(image_key(p.take, p.source_cam, p.frame))
        dest.add(image_key(p.take, p.dest_cam, p.frame))
    return keys | dest, dest


def resolve_part(cfg: PrecomputeConfig, env: dist.DistEnv | None) -> Part:
    if env is not None:
        if cfg.shard_index is not None:
            raise OmamaError("under torchrun each rank computes its own part: drop --shard-index")
        return Part(env.rank, env.world)
    if cfg.shard_index is None:
        raise OmamaError(f"--num-shards {cfg.num_shards} needs --shard-index I (or --merge)")
    return Part(cfg.shard_index, cfg.num_shards)


def run_sharded(cfg: PrecomputeConfig) -> PrecomputeReport:
    """One part of a split (then the merge when it falls to this process), or only the merge."""
    env = dist.from_env()
    if cfg.merge:
        if env is not None:
            raise OmamaError("--merge runs in one process, not under torchrun")
        return run_merge(cfg)
    part = resolve_part(cfg, env)
    t0 = time.perf_counter()
    report = PrecomputeReport()
    ann = Annotations(Path(cfg.root))
    pairs, subset = pipeline.selected_pairs(cfg, ann, report)
    # The process group only carries the barrier before the merge (no tensors), so gloo
    # serves CPU and GPU runs alike and a long wait is not cut short by NCCL's watchdog.
    with dist.session("cpu", backend="gloo", timeout=BARRIER_TIMEOUT) as env:
        device = dist.device_for(env, cfg.device)
        run_part(cfg, part, device, pairs, ann, report)
        if env is not None:
            dist.barrier(env)
            if env.main:
                merge(cfg, part.count, pairs, subset, ann, report)
            dist.barrier(env)
        elif _all_done(Path(cfg.cache), cfg.direction, cfg.split, part.count):
            merge(cfg, part.count, pairs, subset, ann, report)
        else:
            log.info("part %s done; the last part to finish merges (or run with --merge)", part.tag)
    report.seconds = time.perf_counter() - t0
    return report


def run_part(
    cfg: PrecomputeConfig,
    part: Part,
    device: torch.device,
    pairs: list[Pair],
    ann: Annotations,
    report: PrecomputeReport,
) -> None:
    """Compute this part's share of the split's pairs into its own shards and fragment."""
    report.part = part.tag
    root, cache = Path(cfg.root), Path(cfg.cache)
    masks_dir = cfg.masks_dir or default_masks_dir(root, cfg.split, cfg.direction)
    keys, dest = pair_images(pairs)
    mine = assign(keys, dest, part)
    path = fragment_path(cache, cfg.direction, cfg.split, part)
    what = f"part {part.tag} of {cfg.direction} {cfg.split}"
    with part_lock(path.with_suffix(".lock"), what):
        # a random-init file is written atomically with the same bytes by whichever part is first
        weights = pipeline._resolve_weights(cfg, cache)
        settings = pipeline.cache_settings(backbone.weights_fingerprint(weights), cfg.features)
        main = load_manifest(cache)
        if main is not None:
            check_settings(cache, main.settings, settings)
        frag = load_fragment(path)
        digest = plan_digest(keys)
        if frag is None:
            frag = Fragment(settings, cfg.direction, cfg.split, part.index, part.count, digest)
        else:
            check_settings(path, frag.settings, settings)
            if frag.plan != digest:
                raise bad_file(
                    path,
                    "this part was started on another pair list; rerun with the same pairs "
                    "or delete the part's fragment to start it over",
                )
        work = working_manifest(main, frag)
        jobs, _ = pipeline.plan_jobs(pairs, ann, work, cfg.direction)
        jobs = [j for j in jobs if j.key in mine]
        report.images_reused = len(mine) - len(jobs)
        log.info(
            "%s: %d of %d images are this part's, %d to compute",
            what,
            len(mine),
            len(keys),
            len(jobs),
        )
        prefix = part.shard_prefix(cfg.direction, cfg.split)

        def save(manifest: Manifest) -> None:
            frag.take_own(manifest, prefix)
            save_fragment(path, frag)

        frag.done, frag.bad = False, []
        save_fragment(path, frag)
        if jobs:
            target = pipeline.Target(prefix, save)
            pipeline._compute(
                cfg, cache, work, jobs, weights, masks_dir, ann, device, report, target
            )
        frag.take_own(work, prefix)
        frag.bad = [b for b in report.bad if "key" in b]
        frag.done = True
        save_fragment(path, frag)


def run_merge(cfg: PrecomputeConfig) -> PrecomputeReport:
    """`--merge`: list the finished parts of a split in manifest.json (needs no backbone)."""
    t0 = time.perf_counter()
    cache = Path(cfg.cache)
    count = cfg.num_shards if cfg.num_shards > 1 else _part_count(cache, cfg.direction, cfg.split)
    report = PrecomputeReport()
    ann = Annotations(Path(cfg.root))
    pairs, subset = pipeline.selected_pairs(cfg, ann, report)
    if not _all_done(cache, cfg.direction, cfg.split, count):
        missing = _unfinished(cache, cfg.direction, cfg.split, count)
        raise bad_file(
            parts_dir(cache),
            f"parts {', '.join(missing)} of {count} are not finished; rerun them first",
        )
    merge(cfg, count, pairs, subset, ann, report)
    report.seconds = time.perf_counter() - t0
    return report


def merge(
    cfg: PrecomputeConfig,
    count: int,
    pairs: list[Pair],
    subset: dict | None,
    ann: Annotations,
    report: PrecomputeReport,
) -> None:
    """Fragments -> manifest.json, then the split's samples, under the cache's one lock."""
    cache = Path(cfg.cache)
    split_key = f"{cfg.direction}/{cfg.split}"
    keys, _ = pair_images(pairs)
    digest = plan_digest(keys)
    # blocking: a part finishing at the same moment, or another split's run, merges first
    with part_lock(cache / ".lock", "another omama-precompute on this cache", wait=True):
        frags = []
        for i in range(count):
            path = fragment_path(cache, cfg.direction, cfg.split, Part(i, count))
            frag = load_fragment(path)
            if frag is None or not frag.done:
                raise bad_file(path, "part not finished; rerun it, then --merge")
            if frag.plan != digest:
                raise bad_file(path, "part computed from another pair list than this merge's")
            frags.append((path, frag))
        main = load_manifest(cache) or Manifest(settings=frags[0][1].settings)
        for path, frag in frags:
            check_settings(path, main.settings, frag.settings)
        merge_into(main, [f for _, f in frags], cache / "shards")
        bad = report.bad + [b for _, f in frags for b in f.bad]
        # pairs of bad images stay listed: the cache reader skips them and says how many
        samples = pipeline.build_samples(pairs, ann)
        save_samples(cache, cfg.direction, cfg.split, samples)
        main.splits[split_key] = len(samples)
        pipeline.record_subset(main, split_key, subset)
        save_manifest(cache, main)
        if bad:
            write_json(bad, cache / "reports" / f"bad_{cfg.direction}_{cfg.split}.json", 1)
    report.samples, report.merged = len(samples), True
    log.info("merged %d parts of %s: %d samples", count, split_key, len(samples))


def _unfinished(cache: Path, direction: str, split: str, count: int) -> list[str]:
    out = []
    for i in range(count):
        frag = load_fragment(fragment_path(cache, direction, split, Part(i, count)))
        if frag is None or not frag.done:
            out.append(str(i))
    return out


def _all_done(cache: Path, direction: str, split: str, count: int) -> bool:
    return not _unfinished(cache, direction, split, count)


def _part_count(cache: Path, direction: str, split: str) -> int:
    """The n of the `{direction}_{split}_{i}-of-{n}.json` fragments present (exactly one n)."""
    pattern = re.compile(rf"{re.escape(direction)}_{re.escape(split)}_\d+-of-(\d+)\.json")
    counts = {
        int(m.group(1)) for p in parts_dir(cache).glob("*.json") if (m := pattern.fullmatch(p.name))
    }
    if len(counts) != 1:
        found = ", ".join(str(c) for c in sorted(counts)) or "none"
        raise bad_file(
            parts_dir(cache),
            f"cannot tell how many parts {direction} {split} has (found n = {found}); "
            "pass --num-shards",
        )
    return counts.pop()
