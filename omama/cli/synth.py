"""omama-synth: write a small synthetic dataset in the Ego-Exo4D correspondence layout."""

from __future__ import annotations

import logging
import time

from omama.cli.common import run_cli
from omama.config import parse_config
from omama.constants import SPLITS
from omama.errors import OmamaError
from omama.synth import SETTINGS, SynthConfig, generate
from omama.synth.download import write_download

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Write a synthetic dataset with the exact Ego-Exo4D correspondence layout (processed/ "
    "frames and annotation.json, split.json, takes.json, dataset_jsons/ pair lists, "
    "Masks_{SPLIT}_{DIRECTION}/ candidate masks, annotations/relations_{split}.json with every "
    "frame annotated) so that the rest of omama can run without "
    "the licensed data. Scenes are view-consistent: every camera sees the same textured plane "
    "and objects through its own homography, so a matcher can learn. The same --seed writes "
    "byte-identical files. --download DL writes the same takes as an Ego-Exo4D download "
    "(videos, relations files with LZString masks, takes.json) for omama-prepare."
)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(SynthConfig, argv, "omama-synth", DESCRIPTION)
        if cfg.out is None and cfg.download is None:
            raise OmamaError("missing required option --out (or --download)")
        start = time.perf_counter()
        if cfg.download is not None:
            splits = write_download(cfg, cfg.download)
            takes = ", ".join(f"{s} {len(splits.get(s, []))}" for s in SPLITS)
            print(f"synthetic Ego-Exo4D download written to {cfg.download} (takes: {takes})")
            if cfg.out is None:
                return 0
        summary = generate(cfg)
        log.info("generated in %.1f s", time.perf_counter() - start)
        print(f"synthetic dataset written to {summary.out}")
        for split in SPLITS:
            counts = ", ".join(
                f"{s} {summary.pairs[split][s]} pairs ({summary.invisible[split][s]} with the "
                "object hidden in the destination)"
                for s in SETTINGS
            )
            print(f"  {split}: {len(summary.splits[split])} takes; {counts}")
        if summary.portrait:
            print(f"  portrait camera: take {summary.portrait[0]} {summary.portrait[1]}")
        return 0

    return run_cli("omama-synth", work)


if __name__ == "__main__":
    raise SystemExit(main())
