"""omama-eval command line."""

from __future__ import annotations

import json

from omama import preflight
from omama.cli.common import run_cli
from omama.config import parse_config
from omama.predict.evaluate import check_options, output_paths, run_eval
from omama.predict.options import EvalConfig

DESCRIPTION = (
    "Score every candidate of every pair of a cached split, write the predictions as RLE JSON "
    "in the official challenge format (and the ground truth used, unless --gt), and print the "
    "official metrics (against the official GT of the split with --root and --relations); "
    "the last line is one JSON object of them. Under torchrun the ranks "
    "share the scoring and rank 0 writes the same JSON a single process would."
)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(EvalConfig, argv, "omama-eval", DESCRIPTION)
        check_paths(cfg)
        metrics = run_eval(cfg)
        if metrics is None:  # a torchrun rank other than 0: rank 0 reports
            return 0
        m = metrics.as_dict()
        print(f"predictions {cfg.out}")
        for name in ("iou", "shape_acc", "location_score", "balanced_acc", "n"):
            print(f"  {name:15s} {m[name]}")
        print(json.dumps(m))
        return 0

    return run_cli("omama-eval", work)


def check_paths(cfg: EvalConfig) -> None:
    """Every input there, every output writable and none of them an input, before any work."""
    check_options(cfg)
    preflight.input_dir(cfg.cache, "cache", "cache folder")
    preflight.input_file(cfg.checkpoint, "checkpoint", "checkpoint file")
    preflight.input_file(cfg.gt, "gt", "ground-truth file")
    preflight.input_file(cfg.relations, "relations", "relations file")
    preflight.input_dir(cfg.root, "root", "dataset root")
    outputs = output_paths(cfg)
    for name, path in outputs.items():
        preflight.writable(
            path, name if " " not in name else "out", folder=name.endswith("folder beside --out")
        )
    inputs = {"checkpoint": cfg.checkpoint, "gt": cfg.gt, "relations": cfg.relations}
    preflight.distinct(inputs, outputs)


if __name__ == "__main__":
    raise SystemExit(main())
