"""omama-gt: the official ground-truth file of a split, as Ego-Exo4D's builder writes it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omama import preflight
from omama.cli.common import run_cli
from omama.config import opt, parse_config, require
from omama.dataset.layout import split_path
from omama.files import write_json
from omama.metrics.official_gt import load_official_gt

DESCRIPTION = (
    "Write the official ground-truth JSON of one split, as the official builder "
    "(EGO4D/ego-exo4d-relation, correspondence/evaluation/process_annotations.py) writes it: "
    "each take of the split with its processed annotation.json, plus annotated_frames[obj][cam] "
    "copied from Ego-Exo4D's relations_{split}.json. The takes come from "
    "ROOT/processed/split.json (or --split-file; the official split_checking.json has the same "
    "layout). The file feeds the official evaluator, or omama-eval --gt."
)


@dataclass
class GTConfig:
    root: Path | None = opt(
        None,
        "dataset root: reads ROOT/processed/split.json and ROOT/processed/TAKE/annotation.json",
    )
    split: str = opt("test", "split whose takes the GT covers (a key of the split file)")
    relations: Path | None = opt(
        None,
        "Ego-Exo4D relations file of that split (relations_SPLIT.json; annotated frames are read "
        "from annotations[take].object_masks[obj][cam].annotated_frames)",
    )
    out: Path | None = opt(None, "ground-truth JSON to write")
    split_file: Path | None = opt(
        None, "{split: [take ids]} file to take the split from instead of ROOT/processed/split.json"
    )


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(GTConfig, argv, "omama-gt", DESCRIPTION)
        require(cfg, "root", "relations", "out")
        check_paths(cfg)
        gt = load_official_gt(cfg.root, cfg.split, cfg.relations, cfg.split_file)
        write_json(gt, cfg.out)
        n_obj = sum(len(t.get("masks", {})) for t in gt["annotations"].values())
        print(f"ground truth {cfg.out}: {len(gt['annotations'])} takes, {n_obj} objects")
        return 0

    return run_cli("omama-gt", work)


def check_paths(cfg: GTConfig) -> None:
    """Inputs there, --out writable and none of the inputs, before anything is read."""
    preflight.input_dir(cfg.root, "root", "dataset root")
    preflight.input_file(cfg.relations, "relations", "relations file")
    preflight.input_file(cfg.split_file, "split_file", "split file")
    preflight.writable(cfg.out, "out")
    split_name = "split_file" if cfg.split_file else "the root's processed/split.json"
    inputs = {"relations": cfg.relations, split_name: cfg.split_file or split_path(cfg.root)}
    preflight.distinct(inputs, {"out": cfg.out})


if __name__ == "__main__":
    raise SystemExit(main())
