"""omama-prepare's run: plan every take, write the cameras' frames over worker processes
(one video each), publish each take's annotation.json once its cameras are in, then the
split's pair lists, split.json, takes.json and the bad-input report.

Resumable: a camera is published by renaming its whole folder, a take by writing its
annotation.json last, so a rerun of the same command skips what is done and redoes only a
camera that was being written. A lock refuses a second run on the same root, and
`ROOT/prepare_settings.json` refuses a rerun with another `--frames`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omama.config import default_workers, opt, require
from omama.constants import SPLITS, is_ego
from omama.errors import OmamaError, bad_file
from omama.files import atomic_path, read_json, write_json
from omama.prepare.annotation import CAMERA, SETTINGS, TAKE, Problem, take_pairs, without_cameras
from omama.prepare.download import FULL_HEIGHT, read_relations, relations_path, takes_json_path
from omama.prepare.plan import (
    PlanContext,
    TakePlan,
    Task,
    annotation_file,
    partial_folder,
    plan_take,
)
from omama.prepare.video import VideoError, extract

log = logging.getLogger(__name__)

SETTINGS_FILE = "prepare_settings.json"
LOCK_FILE = ".prepare.lock"


@dataclass
class PrepareConfig:
    download: Path | None = opt(
        None,
        "the Ego-Exo4D download DL: DL/takes.json, DL/annotations/relations_SPLIT.json, "
        "DL/takes/TAKE_NAME/frame_aligned_videos/CAM.mp4; required",
    )
    out: Path | None = opt(
        None, "dataset root ROOT to write (processed/, takes.json, dataset_jsons/); required"
    )
    split: str = opt("train", "split to prepare", SPLITS)
    split_file: Path | None = opt(
        None,
        "the official split.json ({split: [take uids]}) to take the split's takes from; "
        "default: every take of relations_SPLIT.json",
    )
    workers: int = opt(
        default_workers(None),
        "worker processes, one video each (default: every core but one)",
        low=1,
    )
    threads: int = opt(1, "decoder threads per video (workers x threads ~ cores)", low=1)
    frames: str = opt(
        "all",
        "'all': every 1 fps frame, as the official script; 'used': only the frames some pair "
        "of the split shows (smaller and faster; fixed for a root once written)",
        ("all", "used"),
    )
    skip_bad: bool = opt(
        False,
        "skip a bad input (the mask, the exo camera, or the take it spoils) and list it in "
        "ROOT/reports/prepare_bad_SPLIT.json, instead of stopping at the first with exit 2",
    )
    min_height: int = opt(
        FULL_HEIGHT,
        "a video less high than this is refused (the official script writes no frame for it); "
        "lower it only for small test data",
        low=1,
    )


@dataclass
class PrepareSummary:
    takes: list[str]  # published, in split order
    frames_written: int
    pairs: dict[str, int]  # setting -> pairs
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / LOCK_FILE, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise bad_file(root, "another omama-prepare is writing this root") from None
        yield


def _check_settings(root: Path, frames: str) -> None:
    path = root / SETTINGS_FILE
    if path.exists():
        had = read_json(path, "prepare settings").get("frames")
        if had != frames:
            raise bad_file(
                path,
                f"root prepared with --frames {had}, this run asks --frames {frames}; "
                "use another --out",
            )
    else:
        write_json({"frames": frames}, path)


def _split_takes(cfg: PrepareConfig, relations: dict) -> list[str]:
    if cfg.split_file is None:
        return list(relations)
    data = read_json(cfg.split_file, "split file")
    takes = data.get(cfg.split) if isinstance(data, dict) else None
    if not isinstance(takes, list) or not all(isinstance(t, str) for t in takes):
        raise bad_file(cfg.split_file, f"no list of take ids under {cfg.split!r}")
    return takes


def _camera(task: Task, min_height: int, threads: int) -> tuple[Task, int, str | None, int | None]:
    """Write one camera's frames into its partial folder and publish it by renaming."""
    tmp = partial_folder(task.folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        n = extract(task.video, task.frames, task.scale, tmp, min_height, threads)
    except VideoError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return task, 0, exc.what, exc.frame
    if task.folder.exists():  # short of frames (planned again): replaced whole
        shutil.rmtree(task.folder)
    os.rename(tmp, task.folder)
    return task, n, None, None


_JOB: tuple[int, int] = (FULL_HEIGHT, 1)
_PLAN: PlanContext | None = None  # what forked planning workers read (never pickled)


def _plan_job(take: str) -> TakePlan:
    return plan_take(_PLAN, take)  # type: ignore[arg-type]


def _plans(ctx: PlanContext, takes: list[str], workers: int) -> list[TakePlan]:
    """Each take's plan, in split order, over forked workers: they share the relations file
    read once here (a split's file can be gigabytes) instead of each receiving a copy."""
    global _PLAN
    if workers < 2 or len(takes) < 2:
        return [plan_take(ctx, take) for take in takes]
    _PLAN = ctx
    try:
        pool_ctx = multiprocessing.get_context("fork")
        with pool_ctx.Pool(min(workers, len(takes))) as pool:
            return pool.map(_plan_job, takes, chunksize=1)
    finally:
        _PLAN = None


def _start(min_height: int, threads: int) -> None:
    global _JOB
    _JOB = (min_height, threads)


def _camera_job(task: Task) -> tuple[Task, int, str | None, int | None]:
    return _camera(task, *_JOB)


def _results(tasks: list[Task], cfg: PrepareConfig) -> Iterator[tuple]:
    """Each camera's result as it finishes: in worker processes, or here with one worker."""
    if cfg.workers < 2 or len(tasks) < 2:
        for task in tasks:
            yield _camera(task, cfg.min_height, cfg.threads)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(
        min(cfg.workers, len(tasks)), initializer=_start, initargs=(cfg.min_height, cfg.threads)
    ) as pool:
        yield from pool.imap_unordered(_camera_job, tasks)


def _publish(plan: TakePlan, processed: Path) -> None:
    """annotation.json, last: from now on the take is done."""
    masks = without_cameras(plan.masks, plan.bad_cams())
    annotation = {"masks": masks, "subsample_idx": plan.subsample}
    write_json(annotation, annotation_file(processed, plan.take))
    plan.masks, plan.done = masks, True


def _fail_or_skip(problems: list[Problem], skip_bad: bool) -> None:
    if problems and not skip_bad:
        n = len(problems) - 1
        more = f" (and {n} more; --skip-bad skips them)" if n else ""
        raise OmamaError(problems[0].line() + more)


def _write_outputs(cfg: PrepareConfig, root: Path, plans: list[TakePlan]) -> dict[str, int]:
    """Pair lists, split.json and takes.json of the published takes."""
    processed = root / "processed"
    done = [p for p in plans if p.done]
    counts = {}
    for setting in SETTINGS:
        pairs = [
            pair for p in done for pair in take_pairs(str(processed), p.take, p.masks, setting)
        ]
        write_json(pairs, root / "dataset_jsons" / f"{cfg.split}_{setting}_pairs.json")
        counts[setting] = len(pairs)
    split_file = processed / "split.json"
    splits = read_json(split_file, "split file") if split_file.exists() else {}
    splits[cfg.split] = [p.take for p in done]
    write_json(splits, split_file)
    with atomic_path(root / "takes.json") as tmp:
        shutil.copyfile(takes_json_path(cfg.download), tmp)
    return counts


def _report(root: Path, split: str, problems: list[Problem]) -> None:
    path = root / "reports" / f"prepare_bad_{split}.json"
    if not problems:
        path.unlink(missing_ok=True)
        return
    rows = [
        {
            "line": p.line(),
            "take": p.take,
            "object": p.obj,
            "camera": p.cam,
            "frame": p.frame,
            "skipped": p.scope,
        }
        for p in problems
    ]
    write_json({"split": split, "problems": rows}, path, indent=1)
    for p in problems:
        log.warning("skipped (%s): %s", p.scope, p.line())
    log.warning("%d bad inputs skipped, listed in %s", len(problems), path)


def run_prepare(cfg: PrepareConfig) -> PrepareSummary:
    """Prepare one split of the download into the dataset root `cfg.out`."""
    require(cfg, "download", "out")
    start = time.perf_counter()
    dl, root = Path(cfg.download), Path(cfg.out).absolute()
    rel_file = relations_path(dl, cfg.split)
    relations = read_relations(rel_file)
    read_json(takes_json_path(dl), "takes file")  # missing or broken: one line, before work
    takes = _split_takes(cfg, relations)
    processed = root / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        _check_settings(root, cfg.frames)
        ctx = PlanContext(dl, processed, str(rel_file), relations, cfg.frames, cfg.min_height)
        plans = _plans(ctx, takes, cfg.workers)
        problems = [p for plan in plans for p in plan.problems]
        _fail_or_skip(problems, cfg.skip_bad)
        live = [p for p in plans if not p.done and not p.bad_take]
        tasks = [t for p in live for t in p.tasks]
        left = {p.take: len(p.tasks) for p in live}
        by_take = {p.take: p for p in live}
        log.info(
            "%s: %d takes (%d done before), %d videos to read, %d workers",
            cfg.split,
            len(takes),
            sum(p.done for p in plans),
            len(tasks),
            cfg.workers,
        )
        for plan in live:
            if left[plan.take] == 0:
                _publish(plan, processed)
        written = 0
        with contextlib.closing(_results(tasks, cfg)) as results:
            written = _collect(results, cfg, by_take, left, problems, processed)
        counts = _write_outputs(cfg, root, plans)
        _report(root, cfg.split, problems)
    published = [p.take for p in plans if p.done]
    return PrepareSummary(published, written, counts, problems, time.perf_counter() - start)


def _collect(
    results: Iterator[tuple],
    cfg: PrepareConfig,
    by_take: dict[str, TakePlan],
    left: dict[str, int],
    problems: list[Problem],
    processed: Path,
) -> int:
    """Take each camera's result; publish a take when its last camera is in (never a take
    whose ego video failed: as at planning, that costs the take, not a camera)."""
    written = 0
    for task, n, what, frame in results:
        plan = by_take[task.take]
        if what is not None:
            p = Problem(
                str(task.video),
                task.take,
                what,
                TAKE if is_ego(task.cam) else CAMERA,
                task.cam,
                frame=None if frame is None else str(frame),
            )
            _fail_or_skip([p], cfg.skip_bad)
            plan.problems.append(p)
            problems.append(p)
        written += n
        left[task.take] -= 1
        if left[task.take] == 0 and not plan.bad_take:
            _publish(plan, processed)
            log.info("take %s published", task.take)
    return written
