"""The Ego-Exo4D correspondence challenge output: build, check and write prediction files.

This is the output side only; it deliberately shares no code with ``omama.metrics`` so that
the evaluator re-implementation can be checked against files written here.

Layout (exo2ego; ego2exo uses "ego-exo" and "{ego_cam}_{exo_cam}"):
``{"exo-ego": {"version", "challenge", "results": {take: {"masks": {obj: {"{exo}_{ego}":
{frame: {"pred_mask": RLE, "confidence": float}}}}, "subsample_idx": [int frames]}}}}``.
The official evaluator compares each predicted mask pixel for pixel with the GT mask resized
to longest side 480 (see :func:`official_mask_size`), so masks must be written at that size.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

from omama.errors import OmamaError

SETTINGS = {"exo2ego": "exo-ego", "ego2exo": "ego-exo"}
OFFICIAL_MAX_SIDE = 480


@dataclass(frozen=True)
class PredRecord:
    """One prediction: the chosen mask (RLE, official size) and the visibility confidence."""

    take: str
    obj: str
    src_cam: str
    dst_cam: str
    frame: str
    pred_rle: dict
    confidence: float


def official_mask_size(h: int, w: int) -> tuple[int, int]:
    """(h, w) of the official evaluator's GT resize: longest side 480, sizes truncated.

    The float operations follow the official order so that truncation gives the same ints.
    """
    ratio = 1.0 / (h if h > w else w) * OFFICIAL_MAX_SIDE
    return int(h * ratio), int(w * ratio)


def _setting(direction: str) -> str:
    if direction not in SETTINGS:
        raise OmamaError(f"direction must be one of {sorted(SETTINGS)}, got {direction!r}")
    return SETTINGS[direction]


def _pair_key(src_cam: str, dst_cam: str) -> str:
    """Camera pair key: source first in both directions ({exo}_{ego} / {ego}_{exo})."""
    return f"{src_cam}_{dst_cam}"


def _plain_confidence(value, where: str) -> float:
    """A plain Python float; numpy / torch scalars are accepted, lists and arrays are not."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, numbers.Real) and not isinstance(item, bool):
            return float(item)
    raise OmamaError(f"{where}: confidence must be a number, got {type(value).__name__}")


def _plain_rle(value, where: str) -> dict:
    if not isinstance(value, dict) or "size" not in value or "counts" not in value:
        raise OmamaError(f"{where}: pred_rle must be a COCO RLE dict with 'size' and 'counts'")
    counts = value["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        raise OmamaError(f"{where}: RLE counts must be a string, got {type(counts).__name__}")
    return {"size": [int(s) for s in value["size"]], "counts": counts}


def challenge_json(
    direction: str, records: Iterable[PredRecord], version: str = "xx", challenge: str = "xx"
) -> dict:
    """Assemble the challenge prediction dict for one direction from prediction records."""
    setting = _setting(direction)
    src_is_ego = direction == "ego2exo"
    results: dict = {}
    frames_of: dict[str, set[int]] = {}
    for r in records:
        frame = str(r.frame)
        where = f"prediction take {r.take} object {r.obj!r} {r.src_cam}->{r.dst_cam} frame {frame}"
        if ("aria" in r.src_cam) != src_is_ego or ("aria" in r.dst_cam) == src_is_ego:
            raise OmamaError(f"{where}: cameras do not fit direction {direction}")
        try:
            frame_int = int(frame)
        except ValueError:
            raise OmamaError(f"{where}: frame is not an integer index") from None
        take = results.setdefault(r.take, {"masks": {}, "subsample_idx": []})
        pair = take["masks"].setdefault(r.obj, {}).setdefault(_pair_key(r.src_cam, r.dst_cam), {})
        if frame in pair:
            raise OmamaError(f"{where}: predicted twice")
        pair[frame] = {
            "pred_mask": _plain_rle(r.pred_rle, where),
            "confidence": _plain_confidence(r.confidence, where),
        }
        frames_of.setdefault(r.take, set()).add(frame_int)
    for take, frames in frames_of.items():
        results[take]["subsample_idx"] = sorted(frames)
    return {setting: {"version": version, "challenge": challenge, "results": results}}


# --------------------------------------------------------------------------------------------
# Checking a prediction against a GT file


def _gt_size(rle_dict, where: str, problems: list[str]) -> tuple[int, int] | None:
    try:
        h, w = (int(s) for s in rle_dict["size"])
    except (KeyError, TypeError, ValueError):
        problems.append(f"GT {where}: RLE has no valid 'size'")
        return None
    return h, w


def _check_entry(
    entry, where: str, want: tuple[int, int] | None, scored: bool, problems: list[str]
) -> None:
    """One prediction entry: keys, a number for confidence, an RLE of the official size."""
    if not isinstance(entry, dict):
        problems.append(f"{where}: entry is {type(entry).__name__}, not a dict")
        return
    for key in ("pred_mask", "confidence"):
        if key not in entry:
            problems.append(f"{where}: no {key!r}")
    conf = entry.get("confidence")
    if "confidence" in entry and (not isinstance(conf, numbers.Real) or isinstance(conf, bool)):
        problems.append(f"{where}: confidence is {type(conf).__name__}, not a float")
    mask = entry.get("pred_mask")
    if "pred_mask" not in entry or not scored:
        return
    if not isinstance(mask, dict) or not isinstance(mask.get("counts"), str):
        problems.append(f"{where}: pred_mask is not a COCO RLE with string counts")
        return
    try:
        size = tuple(int(s) for s in mask["size"])
    except (KeyError, TypeError, ValueError):
        problems.append(f"{where}: pred_mask has no valid 'size'")
        return
    if want is not None and size != want:
        problems.append(f"{where}: pred_mask is {list(size)}, the official size is {list(want)}")


def schema_problems(pred: dict, gt: dict, direction: str, strict: bool = True) -> list[str]:
    """Everything the official evaluator would trip on, as readable lines (empty: fine).

    Checked: the direction section and its results; the same takes and the same objects per
    take as the GT; for each object with an ego and >= 1 exo camera, every camera pair and
    every frame of the source camera's GT masks (the validator asks for all of them); for the
    frames it scores, a mask RLE at the official size of the destination GT mask (visible
    frames) or of that camera's other GT masks (invisible frames, when known), and a plain
    number as confidence. ``strict=False`` (for a subset of the ego2exo pairs, see
    ``omama.metrics.official.evaluate``) asks only for the frames that are scored and lets
    extra takes and objects pass.
    """
    setting = _setting(direction)
    src_is_ego = direction == "ego2exo"
    problems: list[str] = []
    section = pred.get(setting) if isinstance(pred, dict) else None
    if not isinstance(section, dict):
        return [f"no {setting!r} section"]
    results = section.get("results")
    if not isinstance(results, dict):
        return [f"{setting!r} has no 'results' dict"]
    annotations = gt.get("annotations", {}) if isinstance(gt, dict) else {}
    for take in results:
        if strict and take not in annotations:
            problems.append(f"take {take}: not in the GT (the evaluator wants the same takes)")
    for take, gt_take in annotations.items():
        pred_take = results.get(take)
        if not isinstance(pred_take, dict):
            problems.append(f"take {take}: missing")
            continue
        for key in ("masks", "subsample_idx"):
            if key not in pred_take:
                problems.append(f"take {take}: no {key!r}")
        pred_objs = pred_take.get("masks", {})
        gt_masks = gt_take.get("masks", {})
        for obj in pred_objs:
            if strict and obj not in gt_masks:
                problems.append(f"take {take} object {obj!r}: not in the GT")
        cam_sizes = _camera_sizes(gt_masks, take, problems)
        for obj, cams in gt_masks.items():
            if obj not in pred_objs:
                problems.append(f"take {take} object {obj!r}: missing")
                continue
            egos = [c for c in cams if "aria" in c]
            exos = [c for c in cams if "aria" not in c]
            if not egos or not exos:
                continue
            if len(egos) > 1:
                problems.append(f"GT take {take} object {obj!r}: several ego cameras {egos}")
                continue
            ego = egos[0]
            for exo in exos:
                src, dst = (ego, exo) if src_is_ego else (exo, ego)
                pair_key = _pair_key(src, dst)
                annotated = gt_take.get("annotated_frames", {}).get(obj, {}).get(dst)
                if annotated is None:
                    problems.append(f"GT take {take} object {obj!r}: no annotated_frames for {dst}")
                    annotated = []
                wanted = [f for f in cams[src] if strict or int(f) in annotated]
                pair = pred_objs[obj].get(pair_key)
                if not isinstance(pair, dict):
                    if wanted:
                        problems.append(
                            f"take {take} object {obj!r}: camera pair {pair_key} missing"
                        )
                    continue
                for frame in wanted:
                    where = f"take {take} object {obj!r} pair {pair_key} frame {frame}"
                    if frame not in pair:
                        problems.append(f"{where}: missing")
                        continue
                    scored = int(frame) in annotated
                    want = None
                    if frame in cams[dst]:
                        size = _gt_size(cams[dst][frame], where, problems)
                        want = official_mask_size(*size) if size else None
                    elif dst in cam_sizes:
                        want = official_mask_size(*cam_sizes[dst])
                    _check_entry(pair[frame], where, want, scored, problems)
    return problems


def _camera_sizes(gt_masks: dict, take: str, problems: list[str]) -> dict[str, tuple[int, int]]:
    """Original (h, w) of each camera of a take, read from the first GT mask found."""
    sizes: dict[str, tuple[int, int]] = {}
    for cams in gt_masks.values():
        for cam, frames in cams.items():
            if cam in sizes or not frames:
                continue
            first = next(iter(frames.values()))
            size = _gt_size(first, f"take {take} camera {cam}", problems)
            if size:
                sizes[cam] = size
    return sizes
