"""omama-precompute command line."""

from __future__ import annotations

import json

from omama.cli.common import run_cli
from omama.config import parse_config
from omama.precompute.pipeline import PrecomputeConfig, run_precompute

DESCRIPTION = (
    "Run DINOv2 ViT-B/14 (registers) once per unique image of a split's pairs and write HDF5 "
    "shards with features, images, candidate masks, adjacency and descriptors. Rerun the same "
    "command to resume; run it for other splits and directions into the same --cache."
)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(PrecomputeConfig, argv, "omama-precompute", DESCRIPTION)
        report = run_precompute(cfg)
        print(
            f"cache {cfg.cache}: {report.images_computed} images and "
            f"{report.candidate_sets_computed} candidate sets computed, "
            f"{report.images_reused} reused, {report.samples} {cfg.direction} {cfg.split} samples, "
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


if __name__ == "__main__":
    raise SystemExit(main())
