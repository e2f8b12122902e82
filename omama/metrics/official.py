"""The Ego-Exo4D correspondence metrics, computed as the official evaluator computes them.

This is an independent re-implementation of the behaviour of the official tool
(EGO4D/ego-exo4d-relation, ``correspondence/evaluation``), written so that its numbers agree
with the tool's printout to floating-point precision (``scripts/check_official_eval.py``
checks that). Quirks of the official tool that change numbers are reproduced on purpose and
named where they happen:

- The GT mask is resized (cv2 nearest) so that its longest side is 480, sizes truncated;
  the prediction is NOT resized and must already have that size.
- IoU is ``inter / (union + 1e-7)``, and 1 when the union is empty.
- Contour accuracy is the DAVIS boundary F-measure with a dilation radius of
  ``ceil(0.008 * diagonal)`` pixels.
- The location error compares integer bounding-box centres; an EMPTY mask's centre is put at
  ``(x = H // 2, y = W // 2)`` (height and width swapped: the official padding trick does that)
  and the distance is always divided by ``sqrt(480**2 + 480**2)``, whatever the mask size.
- Visibility is the balanced accuracy of ``confidence > 0.5`` against "the destination GT mask
  exists"; a class absent from the GT is left out of the mean (scikit-learn's behaviour).
- Means are plain means over samples pooled across all takes (not per take).

The per-sample metrics are stated on pixel masks in `omama.metrics.pixels` (re-exported
here); `evaluate` computes the same numbers from the RLEs (`omama.metrics.runs.run_scores`:
runs, bounding boxes and windows around the masks, never a full-size mask), which the tests
hold equal to the pixel functions bit for bit.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass

import numpy as np

from omama.constants import direction_info
from omama.errors import OmamaError
from omama.metrics.pixels import (  # noqa: F401  (re-exported: the metrics' one public home)
    BOUND_TH,
    IOU_EPS,
    LOCATION_NORM,
    bbox_centre,
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    location_error,
    mask_iou,
    resize_for_eval,
)
from omama.metrics.runs import scores_chunk
from omama.metrics.validate import pair_key, schema_problems, split_cams
from omama.parallel import ordered_map

CONF_THRESHOLD = 0.5


def balanced_accuracy(pred_visible, gt_visible) -> float:
    """Mean per-class recall of the visibility decision (scikit-learn's balanced accuracy).

    Classes are those seen in either list; a class that never occurs in `gt_visible` has no
    recall and is dropped from the mean (scikit-learn warns and does the same), so with only
    visible GT samples the score is the recall of "visible". Empty input gives NaN (the
    official tool raises there).
    """
    pred = [bool(p) for p in pred_visible]
    gt = [bool(g) for g in gt_visible]
    if len(pred) != len(gt):
        raise OmamaError(f"balanced accuracy: {len(pred)} predictions for {len(gt)} GT labels")
    recalls = []
    for cls in (False, True):
        n_cls = sum(1 for g in gt if g == cls)
        if n_cls == 0:
            continue
        hits = sum(1 for p, g in zip(pred, gt, strict=True) if g == cls and p == cls)
        recalls.append(hits / n_cls)
    if not recalls:
        return float("nan")
    return float(np.mean(recalls))


# --------------------------------------------------------------------------------------------
# Whole-file evaluation


@dataclass
class Metrics:
    """Official metrics; the first four are the numbers `omama-eval` prints."""

    iou: float  # mean IoU over visible samples (higher is better)
    shape_acc: float  # mean contour accuracy (boundary F) over visible samples
    location_score: float  # mean normalised location error over visible samples (lower is better)
    balanced_acc: float  # balanced accuracy of confidence > 0.5 over all samples
    n: int  # visible samples scored for IoU / shape / location
    n_visibility: int = 0  # all samples scored for visibility (visible + invisible)

    def as_dict(self) -> dict:
        return asdict(self)


def _confidence(value, where: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise OmamaError(f"{where}: confidence must be a number, got {type(value).__name__}")


def evaluate(
    pred_json: dict, gt_json: dict, direction: str, strict: bool = True, workers: int = 0
) -> Metrics:
    """The official evaluator's numbers for `direction` ("exo2ego" or "ego2exo").

    Samples, in the tool's order: each take, each object that has exactly one ego camera
    (objects without one are skipped), each exo camera, each frame of the SOURCE camera's GT
    masks whose int index is in the DESTINATION camera's ``annotated_frames``. The object is
    visible when the destination camera has a GT mask for that frame.

    `strict` (default) refuses what the official tool refuses. For ego2exo the tool also wants
    a prediction for every (exo camera, ego frame) of an object, scored or not, which a subset
    of the pairs (e.g. every 10th) does not have; ``strict=False`` asks only for the frames
    that are scored. The numbers are the same either way.
    """
    problems = schema_problems(pred_json, gt_json, direction, strict)
    if problems:
        n = len(problems)
        raise OmamaError(f"predictions: {problems[0]} ({n} problem{'s' if n > 1 else ''} in all)")
    info = direction_info(direction)
    results, src_is_ego = pred_json[info.challenge_key]["results"], info.source_is_ego
    scored: list[tuple[dict, dict | None, str]] = []
    gt_vis: list[int] = []
    pred_vis: list[int] = []
    for take, gt_take in gt_json["annotations"].items():
        pred_masks = results[take]["masks"]
        for obj, cams in gt_take["masks"].items():
            ego, exo = split_cams(cams)
            if not ego:
                continue
            if len(ego) > 1:
                raise OmamaError(f"GT: take {take} object {obj!r} has several ego cameras {ego}")
            ego_cam = ego[0]
            for exo_cam in exo:
                src_cam, dst_cam = (ego_cam, exo_cam) if src_is_ego else (exo_cam, ego_cam)
                pair = pair_key(src_cam, dst_cam)
                try:
                    annotated = gt_take["annotated_frames"][obj][dst_cam]
                except (KeyError, TypeError):
                    raise OmamaError(
                        f"GT: take {take} object {obj!r} has no annotated_frames for {dst_cam}"
                    ) from None
                annotated = set(annotated)
                dst_masks = cams[dst_cam]
                pred_pair = pred_masks[obj].get(pair, {})
                for frame in cams[src_cam]:
                    if int(frame) not in annotated:
                        continue
                    where = f"take {take} object {obj!r} pair {pair} frame {frame}"
                    if frame not in pred_pair:
                        raise OmamaError(f"predictions: {where} missing")
                    entry = pred_pair[frame]
                    conf = _confidence(entry["confidence"], f"predictions: {where}")
                    visible = frame in dst_masks
                    dst_rle = dst_masks[frame] if visible else None
                    scored.append((entry["pred_mask"], dst_rle, where))
                    gt_vis.append(int(visible))
                    pred_vis.append(int(conf > CONF_THRESHOLD))
    if not gt_vis:
        raise OmamaError(
            "GT: no sample to evaluate (no source frame is annotated in its destination)"
        )

    triples = [t for t in ordered_map(scores_chunk, None, scored, workers) if t is not None]
    ious = [t[0] for t in triples]
    shapes = [t[1] for t in triples]
    locations = [t[2] for t in triples]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return Metrics(
        iou=mean(ious),
        shape_acc=mean(shapes),
        location_score=mean(locations),
        balanced_acc=balanced_accuracy(pred_vis, gt_vis),
        n=len(ious),
        n_visibility=len(gt_vis),
    )
