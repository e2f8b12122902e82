"""Run the official Ego-Exo4D correspondence evaluator and omama's re-implementation side by side.

The official evaluator (a local clone of EGO4D/ego-exo4d-relation correspondence/evaluation,
used unmodified) is run as a subprocess; its four printed numbers are parsed and compared
with ``omama.metrics.official.evaluate`` on the same files.

    python scripts/check_official_eval.py --evaluator /path/to/correspondence/evaluation \
        --pred pred.json --gt gt.json --direction exo2ego

The official tool needs scikit-learn and scikit-image besides numpy, opencv, pycocotools and
tqdm. Exit status: 0 when all four numbers agree within --tol, 1 when they differ, 2 when
either side fails to produce numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omama.errors import OmamaError  # noqa: E402
from omama.metrics.official import evaluate  # noqa: E402

log = logging.getLogger("check_official_eval")

SCRIPTS = {"exo2ego": "evaluate_exoego.py", "ego2exo": "evaluate_egoexo.py"}
# Printed label of each number -> our Metrics field.
LABELS = {
    "TOTAL EXISTENCE BALANCED ACC": "balanced_acc",
    "TOTAL IOU": "iou",
    "TOTAL LOCATION SCORE": "location_score",
    "TOTAL SHAPE ACC": "shape_acc",
}
_LINE = re.compile(r"^\s*(TOTAL [A-Z ]+?)\s*:\s*(\S+)\s*$")


def parse_official_output(text: str) -> dict[str, float]:
    """The four TOTAL lines of the official printout as {metric field: value}."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1) in LABELS:
            found[LABELS[m.group(1)]] = float(m.group(2))
    return found


def run_official(
    evaluator: Path, pred: Path, gt: Path, direction: str, python: str, timeout: float
) -> tuple[dict[str, float], subprocess.CompletedProcess]:
    # The tool runs in its own folder (it imports its siblings): hand it absolute paths.
    evaluator, pred, gt = evaluator.resolve(), pred.resolve(), gt.resolve()
    script = evaluator / SCRIPTS[direction]
    if not script.is_file():
        raise OmamaError(f"{script}: no such file (is --evaluator the evaluation folder?)")
    cmd = [python, str(script), "--gt-file", str(gt), "--pred-file", str(pred)]
    log.info("running: %s", " ".join(cmd))
    proc = subprocess.run(
        cmd,
        cwd=evaluator,
        stdin=subprocess.DEVNULL,  # the tool calls breakpoint() on some errors: never wait
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return parse_official_output(proc.stdout), proc


def _same(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluator", type=Path, required=True, help="official evaluation folder")
    ap.add_argument("--pred", type=Path, required=True, help="challenge prediction JSON")
    ap.add_argument("--gt", type=Path, required=True, help="official-format GT JSON")
    ap.add_argument("--direction", choices=sorted(SCRIPTS), required=True)
    ap.add_argument("--tol", type=float, default=1e-6, help="largest allowed difference")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the official tool")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds for the official run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    official, proc = run_official(
        args.evaluator, args.pred, args.gt, args.direction, args.python, args.timeout
    )
    if proc.returncode != 0 or len(official) != len(LABELS):
        log.error("official evaluator failed (exit %d); output tail:", proc.returncode)
        log.error("%s", (proc.stdout + proc.stderr)[-3000:])
        return 2
    try:
        with open(args.pred) as fp:
            pred = json.load(fp)
        with open(args.gt) as fp:
            gt = json.load(fp)
        ours = evaluate(pred, gt, args.direction).as_dict()
    except OmamaError as exc:
        log.error("omama evaluate failed: %s", exc)
        return 2

    worst = 0.0
    ok = True
    print(f"{'metric':<16}{'official':>24}{'omama':>24}{'abs diff':>12}")
    for field in ("iou", "shape_acc", "location_score", "balanced_acc"):
        a, b = official[field], float(ours[field])
        same = _same(a, b, args.tol)
        ok &= same
        diff = abs(a - b) if not (math.isnan(a) or math.isnan(b)) else float("nan")
        if not math.isnan(diff):
            worst = max(worst, diff)
        flag = "" if same else "  DIFFERS"
        print(f"{field:<16}{a!r:>24}{b!r:>24}{diff:>12.2e}{flag}")
    print(f"samples: {ours['n']} visible, {ours['n_visibility']} for visibility")
    print(f"{'MATCH' if ok else 'MISMATCH'} (largest difference {worst:.3g}, tolerance {args.tol})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
