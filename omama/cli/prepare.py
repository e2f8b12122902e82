"""omama-prepare: from the Ego-Exo4D download to a dataset root, as the official scripts."""

from __future__ import annotations

from omama.cli.common import run_cli
from omama.config import parse_config
from omama.prepare.run import PrepareConfig, run_prepare

DESCRIPTION = (
    "Make a dataset root from the Ego-Exo4D download, as the official scripts "
    "(EGO4D/ego-exo4d-relation, correspondence/SegSwap/data: process_data.py, "
    "create_pairs.py) make it: ROOT/processed/{take}/{cam}/{idx}.jpg for every 1 fps frame "
    "(ego halved, exo quartered), ROOT/processed/{take}/annotation.json, "
    "ROOT/processed/split.json, ROOT/takes.json and "
    "ROOT/dataset_jsons/{split}_{egoexo|exoego}_pairs.json. Each video is decoded once, one "
    "worker process per video. A killed run resumes where it stopped (rerun the same "
    "command); a bad input stops it with one line (exit 2) or, with --skip-bad, is skipped "
    "and listed in ROOT/reports/prepare_bad_SPLIT.json."
)


def main(argv: list[str] | None = None) -> int:
    def work() -> int:
        cfg = parse_config(PrepareConfig, argv, "omama-prepare", DESCRIPTION)
        s = run_prepare(cfg)
        pairs = ", ".join(f"{n} {setting}" for setting, n in s.pairs.items())
        skipped = f"; {len(s.problems)} bad inputs skipped (see the report)" if s.problems else ""
        print(
            f"{cfg.split}: {len(s.takes)} takes in {cfg.out}, {s.frames_written} frames written "
            f"in {s.seconds:.1f} s; pairs: {pairs}{skipped}"
        )
        return 0

    return run_cli("omama-prepare", work)


if __name__ == "__main__":
    raise SystemExit(main())
