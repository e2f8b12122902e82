"""What the block order does to validation IoU, against the plain shuffle, over seeds.

Trains the demo's matcher (configs/demo.yaml) on a cache `make demo` built, once per seed
with `--order shuffle` and once with `--order blocks` under a token store budget of
STORE_SHARE times the training split's tokens (each block of takes then fits half of it;
the default splits the demo's five takes into three blocks), and prints the best validation
IoU of each run and its mean, min and max per order. Writes OUT/order_effect.json.

    python scripts/order_effect.py --cache demo_out/cache --out order_runs
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from omama.cache.reader import Cache
from omama.cli.train import main as train_main
from omama.loader.order import take_blocks
from omama.loader.token_store import GB, TokenStore

CONFIG = "configs/demo.yaml"
DIRECTION = "exo2ego"  # the demo's


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, required=True, help="cache made by make demo")
    p.add_argument("--out", type=Path, required=True, help="folder for runs and the summary")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="training seeds")
    p.add_argument(
        "--store-share",
        type=float,
        default=0.8,
        help="token store budget of the blocks runs, as a share of the split's tokens",
    )
    args = p.parse_args()
    cache = Cache(args.cache)
    samples = cache.samples(DIRECTION, "train")
    budget = int(args.store_share * TokenStore.bytes_needed(cache, samples))
    blocks = take_blocks(cache, samples, budget // 2)
    n_takes = len({s.take for s in samples})
    print(f"{len(samples)} train samples, {n_takes} takes, {len(blocks)} blocks")
    if len(blocks) < 3:
        raise SystemExit(f"--store-share {args.store_share}: {len(blocks)} blocks, want >= 3")
    logging.disable(logging.WARNING)
    orders = {"shuffle": [], "blocks": ["--token-store-gb", f"{budget / GB:.12f}"]}
    rows = []
    for seed in args.seeds:
        row: dict = {"seed": seed}
        for order, extra in orders.items():
            run = args.out / f"{order}_seed{seed}"
            argv = ["--config", CONFIG, "--cache", str(args.cache), "--out", str(run)]
            train_main([*argv, "--seed", str(seed), "--order", order, *extra])
            log = json.loads((run / "log.json").read_text())
            assert log["order"]["order"] == order, log["order"]
            row[order] = max(e["iou"] for e in log["epochs"])
        rows.append(row)
    print(f"{'seed':>5s} {'shuffle':>8s} {'blocks':>8s}")
    for r in rows:
        print(f"{r['seed']:5d} {r['shuffle']:8.3f} {r['blocks']:8.3f}")
    summary: dict = {"blocks": len(blocks), "store_share": args.store_share, "rows": rows}
    for order in orders:
        values = [r[order] for r in rows]
        summary[order] = {"mean": statistics.mean(values), "min": min(values), "max": max(values)}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "order_effect.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
