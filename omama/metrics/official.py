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
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from omama import masks, rle
from omama.constants import OFFICIAL_MAX_SIDE, direction_info
from omama.errors import OmamaError
from omama.metrics.validate import eval_size, pair_key, schema_problems, split_cams

CONF_THRESHOLD = 0.5
BOUND_TH = 0.008
# The official location error divides by the diagonal of a fixed 480x480 frame.
LOCATION_NORM = math.sqrt(OFFICIAL_MAX_SIDE**2 + OFFICIAL_MAX_SIDE**2)
# db_eval_iou adds this to the union before dividing.
IOU_EPS = 1e-7

# --------------------------------------------------------------------------------------------
# Sizes


def resize_for_eval(mask: np.ndarray) -> np.ndarray:
    """Resize a (GT) mask to the evaluation size: cv2 nearest, as the official tool does."""
    m = np.ascontiguousarray(mask)
    if m.dtype == bool:
        m = m.astype(np.uint8)
    h, w = m.shape[:2]
    new_h, new_w = eval_size(h, w)
    return cv2.resize(m, (new_w, new_h), interpolation=cv2.INTER_NEAREST)


# --------------------------------------------------------------------------------------------
# Per-sample metrics


def _check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise OmamaError(f"prediction mask is {pred.shape[:2]}, GT mask is {gt.shape[:2]}")


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Jaccard index with the official epsilon: inter / (union + 1e-7); an empty union gives 1."""
    _check_same_shape(pred, gt)
    return masks.mask_iou(pred, gt, eps=IOU_EPS)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask (the DAVIS / Berkeley ``seg2bmap`` convention).

    A pixel is on the boundary when it differs from its right, lower or lower-right
    neighbour (pixels outside the image count as background). On the last row only the right
    neighbour is compared, on the last column only the lower one, and the bottom-right corner
    is never a boundary pixel.
    """
    m = np.asarray(mask).astype(bool)
    h, w = m.shape
    right = np.zeros_like(m)
    right[:, : w - 1] = m[:, 1:]
    down = np.zeros_like(m)
    down[: h - 1, :] = m[1:, :]
    diag = np.zeros_like(m)
    diag[: h - 1, : w - 1] = m[1:, 1:]
    bmap = (m != right) | (m != down) | (m != diag)
    bmap[h - 1, :] = m[h - 1, :] != right[h - 1, :]
    bmap[:, w - 1] = m[:, w - 1] != down[:, w - 1]
    bmap[h - 1, w - 1] = False
    return bmap


def _disk(radius: float) -> np.ndarray:
    """Structuring element: offsets (dy, dx) on the grid -r..r with dx^2 + dy^2 <= r^2."""
    offsets = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (dx * dx + dy * dy <= radius * radius).astype(np.uint8)


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """DAVIS contour accuracy F between the boundaries of `pred` and `gt`.

    Tolerance: ``bound_th`` pixels when >= 1, else ``ceil(bound_th * image diagonal)``.
    Edge cases as DAVIS: both boundaries empty -> 1; exactly one empty -> 0.
    """
    _check_same_shape(pred, gt)
    h, w = np.asarray(pred).shape[:2]
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))
    pred_b = boundary_map(pred)
    gt_b = boundary_map(gt)
    n_pred = int(np.count_nonzero(pred_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kernel = _disk(radius)
    pred_near = cv2.dilate(pred_b.astype(np.uint8), kernel) > 0
    gt_near = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    precision = np.count_nonzero(pred_b & gt_near) / float(n_pred)
    recall = np.count_nonzero(gt_b & pred_near) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def bbox_centre(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) integer centre of the mask's bounding box, as the official location score has it.

    Non-empty: ((x_min + x_max) // 2, (y_min + y_max) // 2). Empty: (H // 2, W // 2) with H the
    height and W the width (sic: the official code's padded-image trick swaps them).
    """
    m = np.asarray(mask).astype(bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        h, w = m.shape
        return h // 2, w // 2
    cols = np.flatnonzero(m.any(axis=0))
    return (int(cols[0]) + int(cols[-1])) // 2, (int(rows[0]) + int(rows[-1])) // 2


def location_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Distance of the bbox centres of pred and gt over sqrt(480^2 + 480^2); lower is better."""
    _check_same_shape(pred, gt)
    px, py = bbox_centre(pred)
    gx, gy = bbox_centre(gt)
    dx, dy = gx - px, gy - py
    return float(math.sqrt(dx * dx + dy * dy) / LOCATION_NORM)


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


def evaluate(pred_json: dict, gt_json: dict, direction: str, strict: bool = True) -> Metrics:
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
    ious: list[float] = []
    shapes: list[float] = []
    locations: list[float] = []
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
                dst_masks = cams[dst_cam]
                pred_pair = pred_masks[obj].get(pair, {})
                for frame in cams[src_cam]:
                    if int(frame) not in annotated:
                        continue
                    where = f"take {take} object {obj!r} pair {pair} frame {frame}"
                    if frame not in pred_pair:
                        raise OmamaError(f"predictions: {where} missing")
                    entry = pred_pair[frame]
                    pred_mask = rle.decode(entry["pred_mask"], f"predictions: {where}")
                    conf = _confidence(entry["confidence"], f"predictions: {where}")
                    visible = frame in dst_masks
                    if visible:
                        gt_mask = resize_for_eval(rle.decode(dst_masks[frame], f"GT: {where}"))
                        if pred_mask.shape != gt_mask.shape:
                            raise OmamaError(
                                f"predictions: {where}: mask is {pred_mask.shape}, the official "
                                f"evaluator needs {gt_mask.shape} (GT resized to longest side "
                                f"{OFFICIAL_MAX_SIDE})"
                            )
                        ious.append(mask_iou(pred_mask, gt_mask))
                        shapes.append(boundary_f_measure(pred_mask, gt_mask))
                        locations.append(location_error(pred_mask, gt_mask))
                    gt_vis.append(int(visible))
                    pred_vis.append(int(conf > CONF_THRESHOLD))
    if not gt_vis:
        raise OmamaError(
            "GT: no sample to evaluate (no source frame is annotated in its destination)"
        )

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
