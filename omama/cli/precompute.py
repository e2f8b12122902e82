"""omama-precompute command line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omama import dist, preflight
from omama.cache.manifest import load_manifest
from omama.cache.verify import verify_cache
from omama.cli.common import run_cli
from omama.config import parse_config, require
from omama.errors import OmamaError
from omama.precompute.estimate import dry_run
from omama.precompute.fingerprints import all_records, stale_records
from omama.precompute.run import PrecomputeConfig, resolve_part, run_precompute

log = logging.getLogger("omama.cli.precompute")

DESCRIPTION = (
    "Run the backbone (default DINOv2 ViT-B/14 reg4; see --backbone) once per unique image "
    "of a split's pairs and write HDF5 shards with features, images, candidate masks, "
    "adjacency and descriptors. Rerun the same "
    "command to resume; run it for other splits and directions into the same --cache. "
    "Under torchrun each rank computes its own part of the images, then rank 0 merges; for "
    "job arrays use --part/--parts (the last part to finish merges, or --merge)."
)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(PrecomputeConfig, argv, "omama-precompute", DESCRIPTION)
        if cfg.verify:
            require(cfg, "cache")
            preflight.input_dir(cfg.cache, "cache", "cache folder")
            preflight.input_dir(cfg.root, "root", "dataset root")
            return verify(Path(cfg.cache), cfg.root)
        check_paths(cfg)
        if cfg.dry_run:
            print(dry_run(cfg))
            return 0
        report = run_precompute(cfg)
        where = f"cache {cfg.cache}" + (f" part {report.part}" if report.part else "")
        listed = (
            f"{report.samples} {cfg.direction} {cfg.split} samples"
            if not report.part or report.merged
            else "samples listed once every part is merged"
        )
        print(
            f"{where}: {report.images_computed} images and "
            f"{report.candidate_sets_computed} candidate sets computed, "
            f"{report.images_reused} reused, {listed}, "
            f"{len(report.bad)} bad items, {report.seconds:.1f} s"
        )
        print(
            json.dumps(
                {
                    "images": report.images_computed,
                    "samples": report.samples,
                    "bad": len(report.bad),
                }
            )
        )
        return 0

    return run_cli("omama-precompute", work)


def check_paths(cfg: PrecomputeConfig) -> None:
    """The root, the weights and the other input files there; the cache folder writable and
    not the root; before the backbone loads."""
    require(cfg, "root", "cache")
    if not cfg.merge and not cfg.dry_run:
        resolve_part(cfg, dist.from_env())  # options that do not fit together come first
    preflight.input_dir(cfg.root, "root", "dataset root")
    preflight.input_file(cfg.weights, "weights", "weights file")
    preflight.input_file(cfg.pairs, "pairs", "pair file")
    preflight.input_dir(cfg.masks_dir, "masks_dir", "candidate masks folder")
    if not cfg.dry_run:
        preflight.writable(cfg.cache, "cache", folder=True)
    preflight.distinct({"root": cfg.root}, {"cache": cfg.cache})


def verify(cache: Path, root: Path | None = None) -> int:
    """Print a summary of a good cache; log every problem of a bad one and fail with the first.
    Records whose input files changed since they were cached are problems too (compared
    with the files under `root`, or under the root each shard was computed from)."""
    report = verify_cache(cache)  # the cache's own checks; the inputs' are precompute's
    try:
        manifest = load_manifest(cache)
    except OmamaError:  # unreadable: verify_cache has listed it among the problems
        manifest = None
    if manifest is not None:
        stale = stale_records(cache, manifest, all_records(manifest), root)
        report.problems += [
            f"{cache}: {s.record} is stale, {s.why}; rerun its split with --stale recompute"
            for s in stale
        ]
    for problem in report.problems:
        log.error("%s", problem)
    if report.problems:
        n = len(report.problems)
        raise OmamaError(f"{report.problems[0]} ({n} problem{'s' if n > 1 else ''} in all)")
    print(
        f"cache {cache}: OK, {report.shards} shards (sha256 match), {report.images} images, "
        f"{report.candidate_sets} candidate sets, {report.samples} samples"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
