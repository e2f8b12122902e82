"""Visibility with the fitted confidence against O-MaMa's, over several training seeds.

Trains the demo's matcher with each seed on a cache `make demo` built, evaluates the test
split with `--confidence visibility` and `--confidence reference`, and prints a table of
IoU and balanced accuracy per seed (the IoU is the same for both by construction: only the
confidence differs). Writes OUT/visibility_seeds.json.

    python scripts/visibility_seeds.py --cache demo_out/cache --out vis_seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from omama.cli.eval import main as eval_main
from omama.cli.train import main as train_main

CONFIG = "configs/demo.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, required=True, help="cache made by make demo")
    p.add_argument("--out", type=Path, required=True, help="folder for runs and the summary")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="training seeds")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    rows = []
    for seed in args.seeds:
        run = args.out / f"seed{seed}"
        common = ["--config", CONFIG, "--cache", str(args.cache)]
        train_main([*common, "--out", str(run / "run"), "--seed", str(seed)])
        row: dict = {"seed": seed}
        for conf in ("visibility", "reference"):
            pred = run / f"{conf}.json"
            argv = [*common, "--checkpoint", str(run / "run" / "best.pt"), "--out", str(pred)]
            eval_main([*argv, "--confidence", conf, "--visualize", "0"])
            m = json.loads(pred.with_name(f"{conf}_metrics.json").read_text())
            row[conf] = {"iou": m["iou"], "balanced_acc": m["balanced_acc"]}
        rows.append(row)
    print(f"{'seed':>5s} {'iou':>6s} {'bal_acc fitted':>15s} {'bal_acc reference':>18s}")
    for r in rows:
        v, ref = r["visibility"], r["reference"]
        print(
            f"{r['seed']:5d} {v['iou']:6.3f} {v['balanced_acc']:15.3f} {ref['balanced_acc']:18.3f}"
        )
    summary = {"rows": rows}
    for conf in ("visibility", "reference"):
        for key in ("iou", "balanced_acc"):
            values = [r[conf][key] for r in rows]
            summary[f"{conf}_{key}"] = {
                "mean": statistics.mean(values),
                "min": min(values),
                "max": max(values),
            }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    (args.out / "visibility_seeds.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
