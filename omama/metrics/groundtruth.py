"""Build an official-format ground-truth file from the samples being evaluated.

The official evaluator visits, for each object and each exo camera, every frame of the
SOURCE camera's GT masks whose int index is listed in the DESTINATION camera's
``annotated_frames``, and calls the object visible when the destination camera has a mask for
that frame. So, built from a set of samples of one direction:

- ``masks[obj][src_cam]`` holds exactly the source masks of the samples;
- ``masks[obj][dst_cam]`` holds the destination masks of the visible samples, and exists
  (possibly empty) for every destination camera that has a sample, because the evaluator only
  loops over cameras present under ``masks[obj]``: an exo camera where the object is never
  visible would otherwise be skipped and its invisible samples never counted;
- ``annotated_frames[obj][dst_cam]`` lists the frames of the samples with that destination,
  visible or not: that is what makes an invisible sample count for balanced accuracy.
  ``annotated_frames[obj][src_cam]`` lists the source frames (the evaluator ignores it).

Then the evaluator visits exactly the given samples, for every camera pair (the reference
O-MaMa builder only filled the first exo camera of each object).

One caveat belongs to the official validator, not to this file: for ego2exo it wants a
prediction for every (exo camera, ego frame) of an object, scored or not, so an ego2exo sample
set should pair every source frame with every exo camera of its object (the official pair
lists do).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omama.constants import is_ego
from omama.errors import OmamaError, bad_file
from omama.files import read_json
from omama.metrics.validate import gt_problems


@dataclass(frozen=True)
class GTSample:
    """One evaluated sample; RLEs at the camera's original resolution."""

    take: str
    obj: str
    src_cam: str
    dst_cam: str
    frame: str
    src_rle: dict
    dst_rle: dict | None  # None: the object is not visible in the destination camera


def _describe(s: GTSample) -> str:
    return f"take {s.take} object {s.obj!r} {s.src_cam}->{s.dst_cam} frame {s.frame}"


def _put_mask(cam_masks: dict, frame: str, value: dict | None, sample: GTSample, role: str):
    """Record a mask (or its absence, None) once; a second, different value is a conflict."""
    if frame in cam_masks and cam_masks[frame] != value:
        raise OmamaError(
            f"GT samples: two different {role} masks for {_describe(sample)} "
            f"(the same camera and frame must have one mask in every pair)"
        )
    cam_masks[frame] = value


def build_gt_json(samples: Iterable[GTSample], version: str = "xx", challenge: str = "xx") -> dict:
    """Official GT structure under which the official evaluator visits exactly `samples`.

    All samples must be of one direction (exo->ego or ego->exo) and each object must have a
    single ego camera, as the evaluator requires.
    """
    ego_src: bool | None = None
    # take -> obj -> cam -> frame -> RLE or None (None: annotated, not visible)
    seen: dict[str, dict[str, dict[str, dict[str, dict | None]]]] = {}
    ego_of: dict[tuple[str, str], str] = {}
    n = 0
    for s in samples:
        n += 1
        frame = str(s.frame)
        try:
            int(frame)
        except ValueError:
            raise OmamaError(f"GT samples: frame {frame!r} is not an integer index") from None
        if is_ego(s.src_cam) == is_ego(s.dst_cam):
            raise OmamaError(f"GT samples: {_describe(s)} is not an ego/exo pair")
        if ego_src is None:
            ego_src = is_ego(s.src_cam)
        elif ego_src != is_ego(s.src_cam):
            raise OmamaError("GT samples: both exo2ego and ego2exo samples; build one GT each")
        ego_cam = s.src_cam if ego_src else s.dst_cam
        if ego_of.setdefault((s.take, s.obj), ego_cam) != ego_cam:
            raise OmamaError(
                f"GT samples: take {s.take} object {s.obj!r} has two ego cameras "
                f"({ego_of[(s.take, s.obj)]}, {ego_cam})"
            )
        if s.src_rle is None:
            raise OmamaError(f"GT samples: {_describe(s)} has no source mask")
        cams = seen.setdefault(s.take, {}).setdefault(s.obj, {})
        _put_mask(cams.setdefault(s.src_cam, {}), frame, s.src_rle, s, "source")
        _put_mask(cams.setdefault(s.dst_cam, {}), frame, s.dst_rle, s, "destination")
    if n == 0:
        raise OmamaError("GT samples: none given")

    annotations: dict = {}
    for take, objs in seen.items():
        masks: dict = {}
        annotated: dict = {}
        for obj, cams in objs.items():
            masks[obj] = {
                cam: {f: r for f, r in frames.items() if r is not None}
                for cam, frames in cams.items()
            }
            annotated[obj] = {cam: sorted({int(f) for f in frames}) for cam, frames in cams.items()}
        annotations[take] = {"masks": masks, "annotated_frames": annotated}
    return {"version": version, "challenge": challenge, "annotations": annotations}


def read_gt_file(path: Path) -> dict:
    """An official ground-truth file (`omama-eval --gt`), read and checked on its own: a
    problem is one line naming this file, before anything is scored."""
    gt = read_json(path, "ground-truth file")
    problems = gt_problems(gt)
    if problems:
        n = len(problems)
        raise bad_file(path, f"{problems[0]} ({n} problem{'s' if n > 1 else ''} in all)")
    return gt
