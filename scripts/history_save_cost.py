"""What a training save's loss history costs as a run grows: appended vs rewritten whole.

A run logs one loss record every --log-every steps (10) and saves every --save-every (200),
so each save adds 20 records to a history that grows for the whole run (a 10-epoch run on
the full train split: about 60,000). This times, at a history of N and 4N records, the
history's part of one save as `omama-train` writes it now (the 20 new records appended to
steps.jsonl by `StepLog`, plus state.pt's history without its steps) against the same save
with the whole history in state.pt and log.json, as the trainer wrote it before: the
snapshot the step pays (`saver.snapshot`) and the writes the saver thread pays, each the
median of R saves. The model and optimiser, the same in both, are left out.

    python scripts/history_save_cost.py --records 15000 --out /tmp/history_cost
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import time
from pathlib import Path

from omama.files import write_json, write_torch
from omama.train.saver import Write, snapshot
from omama.train.steplog import STEPS_FILE, StepLog

PER_SAVE = 20  # --save-every 200 / --log-every 10


def _history(n: int) -> dict:
    steps = [{"step": 10 * i, "epoch": i // 6000, "loss": 1.0 / i, "lr": 1e-4} for i in range(1, n)]
    return {"config": {"lr": 1e-4, "epochs": 10}, "steps": steps, "epochs": [], "order": {}}


def _rewritten(history: dict, out: Path) -> list[Write]:
    return [
        Write(write_torch, {"history": history}, out / "state.pt"),
        Write(functools.partial(write_json, indent=1), history, out / "log.json"),
    ]


def _appended(history: dict, out: Path, log: StepLog) -> list[Write]:
    rest = {key: value for key, value in history.items() if key != "steps"}
    appended = log.append(history["steps"])
    return [
        appended,
        Write(write_torch, {"history": rest, "steps_log": log.mark()}, out / "state.pt"),
    ]


def measure(n: int, reps: int, out: Path) -> dict[str, tuple[float, float]]:
    """(snapshot, writes) seconds of one save at a history of `n` records, per way."""
    result = {}
    for way in ("appended", "rewritten"):
        folder = out / f"{way}-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        history, log = _history(n), StepLog(folder / STEPS_FILE)
        if way == "appended":  # the run so far is already in the file
            _run(_appended(history, folder, log))
        snaps, writes = [], []
        for i in range(reps):
            history["steps"] += [dict(history["steps"][-1], step=n + i)] * PER_SAVE
            t0 = time.perf_counter()
            asked = (
                _appended(history, folder, log)
                if way == "appended"
                else _rewritten(history, folder)
            )
            copied, _, _ = snapshot([(w.obj, w.path) for w in asked])
            t1 = time.perf_counter()
            _run(Write(w.writer, obj, path) for w, (obj, path) in zip(asked, copied, strict=True))
            snaps.append(t1 - t0)
            writes.append(time.perf_counter() - t1)
        result[way] = (statistics.median(snaps), statistics.median(writes))
    return result


def _run(writes) -> None:
    for w in writes:
        w.writer(w.obj, w.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=15000, help="N: history records (4N too)")
    ap.add_argument("--reps", type=int, default=9, help="saves timed at each size")
    ap.add_argument("--out", type=Path, default=Path("/tmp/history_cost"))
    args = ap.parse_args()
    sizes = (args.records, 4 * args.records)
    got = {n: measure(n, args.reps, args.out) for n in sizes}
    shutil.rmtree(args.out, ignore_errors=True)
    print(f"one save's history cost, median of {args.reps} saves (ms: step's snapshot + writer)")
    for way in ("appended", "rewritten"):
        a, b = (sum(got[n][way]) for n in sizes)
        cells = [
            f"{n:,} records {1e3 * got[n][way][0]:.2f} + {1e3 * got[n][way][1]:.2f}" for n in sizes
        ]
        print(f"{way:9s}: {' | '.join(cells)} | 4N/N {b / a:.2f}")


if __name__ == "__main__":
    main()
