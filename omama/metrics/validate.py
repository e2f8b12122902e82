"""The one check of a prediction file against a ground-truth file, before anything is scored.

Everything the official evaluator's validator would trip on is listed as a readable line
(`schema_problems`), instead of stopping at the first: the direction's section and results;
the same takes and objects as the GT; for each object with an ego and >= 1 exo camera, every
camera pair and every frame of the source camera's GT masks; for the scored frames a mask at
the official size and a plain number as confidence. `omama.metrics.official.evaluate` runs it
and refuses a file with problems; `omama-eval` runs it on every file it writes.
"""

from __future__ import annotations

import numbers

from omama.constants import OFFICIAL_MAX_SIDE, direction_info, is_ego


def eval_size(h: int, w: int) -> tuple[int, int]:
    """Size (h', w') the official evaluator resizes a GT mask to: longest side 480.

    The float operations are done in the official order (ratio = 1 / longest * 480, then
    truncation of side * ratio) so that rounding lands on the same integers.
    """
    longest = h if h > w else w
    ratio = 1.0 / longest * OFFICIAL_MAX_SIDE
    return int(h * ratio), int(w * ratio)


def pair_key(src_cam: str, dst_cam: str) -> str:
    """Camera pair key: source first in both directions ({exo}_{ego} / {ego}_{exo})."""
    return f"{src_cam}_{dst_cam}"


def split_cams(cams) -> tuple[list[str], list[str]]:
    """(ego cameras, exo cameras) among camera names, in their order."""
    return [c for c in cams if is_ego(c)], [c for c in cams if not is_ego(c)]


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
    info = direction_info(direction)
    setting, src_is_ego = info.challenge_key, info.source_is_ego
    problems: list[str] = []
    section = pred.get(setting) if isinstance(pred, dict) else None
    if not isinstance(section, dict):
        return [f"no {setting!r} section"]
    results = section.get("results")
    if not isinstance(results, dict):
        return [f"{setting!r} has no 'results' dict"]
    annotations = gt.get("annotations") if isinstance(gt, dict) else None
    if not isinstance(annotations, dict):
        return ["GT has no 'annotations' dict"]
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
            egos, exos = split_cams(cams)
            if not egos or not exos:
                continue
            if len(egos) > 1:
                problems.append(f"GT take {take} object {obj!r}: several ego cameras {egos}")
                continue
            ego = egos[0]
            for exo in exos:
                src, dst = (ego, exo) if src_is_ego else (exo, ego)
                key = pair_key(src, dst)
                annotated = gt_take.get("annotated_frames", {}).get(obj, {}).get(dst)
                if annotated is None:
                    problems.append(f"GT take {take} object {obj!r}: no annotated_frames for {dst}")
                    annotated = []
                annotated = set(annotated)  # looked up once per frame: a set, not a list
                wanted = [f for f in cams[src] if strict or int(f) in annotated]
                pair = pred_objs[obj].get(key)
                if not isinstance(pair, dict):
                    if wanted:
                        problems.append(f"take {take} object {obj!r}: camera pair {key} missing")
                    continue
                for frame in wanted:
                    where = f"take {take} object {obj!r} pair {key} frame {frame}"
                    if frame not in pair:
                        problems.append(f"{where}: missing")
                        continue
                    scored = int(frame) in annotated
                    want = None
                    if frame in cams[dst]:
                        size = _gt_size(cams[dst][frame], where, problems)
                        want = eval_size(*size) if size else None
                    elif dst in cam_sizes:
                        want = eval_size(*cam_sizes[dst])
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


def gt_problems(gt: object) -> list[str]:
    """What makes a ground-truth file unusable, as readable lines (empty: fine), checked on
    the file alone so that each problem is named under the file it is in: the `annotations`
    object; per take its `masks` and `annotated_frames`; per object its cameras' frames
    (RLEs with a valid size); per object with one ego camera and exo cameras, a list of int
    frames in `annotated_frames` for each of its cameras."""
    annotations = gt.get("annotations") if isinstance(gt, dict) else None
    if not isinstance(annotations, dict):
        return ["no 'annotations' object (not an official ground-truth file?)"]
    problems: list[str] = []
    for take, entry in annotations.items():
        masks = entry.get("masks") if isinstance(entry, dict) else None
        if not isinstance(masks, dict):
            problems.append(f"take {take}: no 'masks' object")
            continue
        annotated = entry.get("annotated_frames")
        if not isinstance(annotated, dict):
            problems.append(f"take {take}: no 'annotated_frames' object")
            continue
        for obj, cams in masks.items():
            where = f"take {take} object {obj!r}"
            if not isinstance(cams, dict) or not all(isinstance(f, dict) for f in cams.values()):
                problems.append(f"{where}: masks are not {{camera: {{frame: RLE}}}}")
                continue
            for cam, frames in cams.items():
                for frame, rle_dict in frames.items():
                    found: list[str] = []
                    _gt_size(rle_dict, f"{where} camera {cam} frame {frame}", found)
                    problems += [p.removeprefix("GT ") for p in found]
            egos, exos = split_cams(cams)
            if len(egos) > 1:
                problems.append(f"{where}: several ego cameras {egos}")
            elif egos and exos:
                for cam in cams:
                    frames = (
                        annotated.get(obj, {}).get(cam)
                        if isinstance(annotated.get(obj), dict)
                        else None
                    )
                    if not isinstance(frames, list) or not all(
                        isinstance(f, int) and not isinstance(f, bool) for f in frames
                    ):
                        problems.append(f"{where}: no list of int annotated_frames for {cam}")
    return problems
