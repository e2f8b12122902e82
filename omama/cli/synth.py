"""omama-synth: write a small synthetic dataset in the Ego-Exo4D correspondence layout."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from omama.cli.common import run_cli
from omama.config import read_section
from omama.dataset.synth import SETTINGS, SPLITS, SynthConfig, generate
from omama.errors import OmamaError

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Write a synthetic dataset with the exact Ego-Exo4D correspondence layout (processed/ "
    "frames and annotation.json, split.json, takes.json, dataset_jsons/ pair lists, "
    "Masks_{SPLIT}_{DIRECTION}/ candidate masks) so that the rest of omama can run without "
    "the licensed data. Scenes are view-consistent: every camera sees the same textured plane "
    "and objects through its own homography, so a matcher can learn. The same --seed writes "
    "byte-identical files."
)


def build_parser() -> argparse.ArgumentParser:
    d = SynthConfig()
    p = argparse.ArgumentParser(prog="omama-synth", description=DESCRIPTION)
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file whose `synth:` section (or flat mapping) sets any option below by its "
        "long name (out, seed, small, takes, frames, objects, exo_cams, no_portrait, "
        "overwrite); flags override it",
    )
    p.add_argument("--out", type=Path, default=None, help="dataset root to create (ROOT)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument(
        "--small",
        action="store_true",
        help="test-sized images: ego 230x230 (crop 224), exo 200x350 (crop 196x350) "
        "instead of ego 704x704 and exo 540x960",
    )
    p.add_argument(
        "--takes",
        type=int,
        default=d.n_takes,
        help="number of takes, at least 3; val and test get about a sixth each "
        "(default %(default)s: 4 train, 1 val, 1 test)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=d.n_frames,
        help="frames per take, numbered 0, 30, 60, ... (default %(default)s)",
    )
    p.add_argument(
        "--objects", type=int, default=d.n_objects, help="objects per take (default %(default)s)"
    )
    p.add_argument(
        "--exo-cams",
        type=int,
        default=d.n_exo_cams,
        help="exo cameras per take, named cam01, cam02, ... (default %(default)s)",
    )
    p.add_argument(
        "--no-portrait",
        action="store_true",
        help="keep every exo camera landscape (by default the last exo camera of the first "
        "train take is portrait)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it already holds a synthetic dataset (never deletes other data)",
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        known = {a.dest for a in parser._actions} - {"help", "config"}
        parser.set_defaults(**read_section(args.config, "synth", known))
        args = parser.parse_args(argv)
    if args.out is None:
        raise OmamaError("missing required option --out (a flag or `out:` in the config file)")
    return args


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        args = parse_args(argv)
        cfg = SynthConfig(
            seed=args.seed,
            n_takes=args.takes,
            n_frames=args.frames,
            n_objects=args.objects,
            n_exo_cams=args.exo_cams,
            small=args.small,
            portrait=not args.no_portrait,
        )
        start = time.perf_counter()
        summary = generate(cfg, args.out, overwrite=args.overwrite)
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
