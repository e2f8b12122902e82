"""omama-train command line."""

from __future__ import annotations

from omama import dist, preflight
from omama.cli.common import run_cli
from omama.config import parse_config, require
from omama.train.loop import run_train
from omama.train.options import TrainConfig

DESCRIPTION = (
    "Train the O-MaMa cross-attention matcher from a cache made by omama-precompute. Writes "
    "OUT/last.pt and OUT/best.pt (plain state_dicts with O-MaMa's keys), OUT/state.pt for "
    "--resume, OUT/log.json and OUT/curves.png. Under torchrun (e.g. `torchrun "
    "--nproc_per_node=8 -m omama.cli.train ...`) it trains with DistributedDataParallel: "
    "--batch-size stays the global batch, split evenly over the ranks."
)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(TrainConfig, argv, "omama-train", DESCRIPTION)
        check_paths(cfg)
        history = run_train(cfg)
        if not dist.is_main(dist.from_env()):  # torchrun: rank 0 reports
            return 0
        last = history["epochs"][-1] if history["epochs"] else {}
        print(f"run {cfg.out}: best.pt, last.pt, log.json, curves.png; last epoch {last}")
        return 0

    return run_cli("omama-train", work)


def check_paths(cfg: TrainConfig) -> None:
    """The cache and --init there; the run folder writable and not the cache; before any
    sample is read."""
    require(cfg, "cache", "out")
    preflight.input_dir(cfg.cache, "cache", "cache folder")
    preflight.input_file(cfg.init, "init", "checkpoint file")
    preflight.writable(cfg.out, "out", folder=True)
    preflight.distinct({"cache": cfg.cache}, {"out": cfg.out})


if __name__ == "__main__":
    raise SystemExit(main())
