"""What one take needs: its annotation, its frame indices, the cameras still to write, and
every bad input found on the way (nothing is decoded but the masks and the video headers).

A take is done when `processed/{take}/annotation.json` exists: it is written last, after
every camera folder has been published whole (renamed from `.{cam}.partial`), so a take
killed half-way has no annotation.json and is planned again; its finished cameras are kept.
A camera folder short of a frame, or with one cut short (one the official script was killed
in, say), is redone.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from omama.constants import is_ego
from omama.files import read_json
from omama.prepare.annotation import CAMERA, TAKE, Problem, take_masks, used_frames
from omama.prepare.download import FRAME_STEP, cameras, scale_of, video_path
from omama.prepare.video import VideoError, VideoInfo, probe, too_small

PARTIAL = ".partial"  # a camera folder being written: processed/{take}/.{cam}.partial


@dataclass
class Task:
    """One camera's frames to write."""

    take: str
    cam: str
    video: Path
    frames: list[int]
    scale: int
    folder: Path  # the published folder, processed/{take}/{cam}


@dataclass
class TakePlan:
    take: str
    done: bool = False  # annotation.json exists
    masks: dict = field(default_factory=dict)
    subsample: list[int] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def bad_take(self) -> bool:
        return any(p.scope == TAKE for p in self.problems)

    def bad_cams(self) -> set[str]:
        return {p.cam for p in self.problems if p.scope == CAMERA and p.cam is not None}


@dataclass(frozen=True)
class PlanContext:
    """What every take's plan reads (forked planning workers share it)."""

    download: Path
    processed: Path
    relations_file: str
    relations: dict
    frames: str  # "all" or "used"
    min_height: int


def annotation_file(processed: Path, take: str) -> Path:
    return processed / take / "annotation.json"


def partial_folder(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}{PARTIAL}")


def _whole_jpeg(path: Path) -> bool:
    """The file exists and ends with JPEG's end-of-image marker (a write cut short does not)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-2, os.SEEK_END)
            return fh.read(2) == b"\xff\xd9"
    except OSError:
        return False


def _video(ctx: PlanContext, take: str, name: str, cam: str) -> tuple[VideoInfo | None, Problem]:
    path = video_path(ctx.download, name, cam)
    scope = TAKE if is_ego(cam) else CAMERA
    if not path.is_file():
        return None, Problem(str(path), take, "video missing", scope, cam)
    try:
        info = probe(path)
    except VideoError as exc:
        return None, Problem(str(path), take, exc.what, scope, cam)
    why = too_small(info.width, info.height, ctx.min_height)
    if why:
        return None, Problem(str(path), take, why, scope, cam)
    if info.frames < 1:
        return None, Problem(str(path), take, "video has no frame", scope, cam)
    return info, None  # type: ignore[return-value]


def plan_take(ctx: PlanContext, take: str) -> TakePlan:
    """The plan of one take: read back when done, else built from the relations entry."""
    done = annotation_file(ctx.processed, take)
    if done.is_file():
        data = read_json(done, "annotation file")
        return TakePlan(take, True, data.get("masks", {}), list(data.get("subsample_idx", [])))
    plan = TakePlan(take)
    if take not in ctx.relations:
        what = "take of the split is not in the relations file"
        plan.problems.append(Problem(ctx.relations_file, take, what, TAKE))
        return plan
    entry = ctx.relations[take]
    cams = cameras(entry)
    egos = [c for c in cams if is_ego(c)]
    if len(egos) != 1:
        what = f"{len(egos)} ego (aria) cameras {egos}, expected one" if egos else "no ego camera"
        plan.problems.append(Problem(ctx.relations_file, take, what, TAKE))
        return plan
    plan.masks, plan.problems = take_masks(entry, take, ctx.relations_file)
    infos: dict[str, VideoInfo] = {}
    for cam in [egos[0]] + [c for c in cams if c != egos[0]]:
        info, problem = _video(ctx, take, entry["take_name"], cam)
        if problem is not None:
            plan.problems.append(problem)
            if problem.scope == TAKE:
                return plan
        else:
            infos[cam] = info
    plan.subsample = list(range(0, infos[egos[0]].frames, FRAME_STEP))
    used = used_frames(plan.masks) if ctx.frames == "used" else None
    for cam, info in infos.items():
        if info.frames <= plan.subsample[-1]:
            what = (
                f"video has {info.frames} frames, the ego video {infos[egos[0]].frames}: "
                f"frame {plan.subsample[-1]} is missing"
            )
            path = str(video_path(ctx.download, entry["take_name"], cam))
            plan.problems.append(Problem(path, take, what, CAMERA, cam))
            continue
        folder = ctx.processed / take / cam
        frames = plan.subsample
        if used is not None:
            frames = sorted(used.get(cam, set()) & set(plan.subsample))
        if folder.is_dir() and all(_whole_jpeg(folder / f"{i}.jpg") for i in frames):
            continue  # published by an earlier run (a folder short of a frame is redone)
        shutil.rmtree(partial_folder(folder), ignore_errors=True)  # left by a killed run
        video = video_path(ctx.download, entry["take_name"], cam)
        plan.tasks.append(Task(take, cam, video, frames, scale_of(cam), folder))
    return plan
