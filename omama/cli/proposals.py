"""omama-proposals command line."""

from __future__ import annotations

import json

from omama.cli.common import run_cli
from omama.config import parse_config
from omama.proposals.options import ProposalsConfig
from omama.proposals.run import run_proposals

DESCRIPTION = (
    "Write FastSAM candidate masks of every destination image of a split's pairs (ego images "
    "for exo2ego, exo images for ego2exo) into O-MaMa's own files: "
    "ROOT/Masks_{SPLIT}_{DIRECTION}/{take}/{cam}/{frame}_masks.npz (arr_0, uint8 N x H x W at "
    "the size O-MaMa crops the image to) and {frame}_boxes.npy (float32 N x 4: x, y, w, h). "
    "Empty masks are dropped; an image left with none gets the whole image as its one "
    "candidate. Needs the optional package ultralytics (AGPL-3.0): pip install -e "
    "'.[proposals]'. Nothing is downloaded. Rerun the same command to resume; under torchrun "
    "each rank writes its own share of the images, and --part/--parts does the same for "
    "job arrays."
)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(ProposalsConfig, argv, "omama-proposals", DESCRIPTION)
        report = run_proposals(cfg)
        where = f"part {report.part} of " if report.part else ""
        print(
            f"{where}{cfg.direction} {cfg.split}: {report.written} images written "
            f"({report.masks} masks, {report.empty_dropped} empty masks dropped, "
            f"{len(report.fallbacks)} given the whole image), {report.skipped} already there, "
            f"{report.seconds:.1f} s"
        )
        print(
            json.dumps(
                {
                    "written": report.written,
                    "skipped": report.skipped,
                    "masks": report.masks,
                    "fallbacks": len(report.fallbacks),
                }
            )
        )
        return 0

    return run_cli("omama-proposals", work)


if __name__ == "__main__":
    raise SystemExit(main())
