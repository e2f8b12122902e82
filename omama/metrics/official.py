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

import functools
import math
import numbers
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from omama import masks, rle_runs
from omama.constants import OFFICIAL_MAX_SIDE, direction_info
from omama.errors import OmamaError
from omama.metrics.validate import eval_size, pair_key, schema_problems, split_cams
from omama.parallel import ordered_map

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


@functools.lru_cache(maxsize=16)
def _disk(radius: float) -> np.ndarray:
    """Structuring element: offsets (dy, dx) on the grid -r..r with dx^2 + dy^2 <= r^2."""
    offsets = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    return (dx * dx + dy * dy <= radius * radius).astype(np.uint8)


def boundary_radius(h: int, w: int, bound_th: float = BOUND_TH) -> float:
    """Dilation radius of the contour accuracy: ``bound_th`` pixels when >= 1, else
    ``ceil(bound_th * diagonal)`` of the h x w image."""
    return bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """DAVIS contour accuracy F between the boundaries of `pred` and `gt`.

    Tolerance: ``bound_th`` pixels when >= 1, else ``ceil(bound_th * image diagonal)``.
    Edge cases as DAVIS: both boundaries empty -> 1; exactly one empty -> 0.
    """
    _check_same_shape(pred, gt)
    h, w = np.asarray(pred).shape[:2]
    return boundary_f_at_radius(pred, gt, boundary_radius(h, w, bound_th))


def boundary_f_at_radius(pred: np.ndarray, gt: np.ndarray, radius: float) -> float:
    """`boundary_f_measure` with the dilation radius given (that of the whole image when
    `pred` and `gt` are a window of it that holds every boundary pixel of both)."""
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
        return box_centre(None, *m.shape)
    cols = np.flatnonzero(m.any(axis=0))
    return box_centre((int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])), *m.shape)


def box_centre(box: tuple[int, int, int, int] | None, h: int, w: int) -> tuple[int, int]:
    """`bbox_centre` from the box (y_min, y_max, x_min, x_max) of an h x w mask, None: empty."""
    if box is None:
        return h // 2, w // 2
    y0, y1, x0, x1 = box
    return (x0 + x1) // 2, (y0 + y1) // 2


def centre_distance(p: tuple[int, int], g: tuple[int, int]) -> float:
    """The location error of two bbox centres: distance over sqrt(480^2 + 480^2)."""
    dx, dy = g[0] - p[0], g[1] - p[1]
    return float(math.sqrt(dx * dx + dy * dy) / LOCATION_NORM)


def location_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Distance of the bbox centres of pred and gt over sqrt(480^2 + 480^2); lower is better."""
    _check_same_shape(pred, gt)
    return centre_distance(bbox_centre(pred), bbox_centre(gt))


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
# The same per-sample metrics from RLEs (what `evaluate` runs)


def run_scores(pred_rle: dict, gt_rle: dict, where: str) -> tuple[float, float, float]:
    """(IoU, contour accuracy, location error) of one visible sample from its RLEs: the
    prediction at the official size, the GT at its own size. Equal to `mask_iou`,
    `boundary_f_measure` and `location_error` on the decoded prediction and
    `resize_for_eval` of the decoded GT, without ever building a full-size mask:

    - the GT is nearest-resized as runs (`omama.rle_runs.resize_intervals`, cv2's sampling);
    - the centres come from the bounding boxes of the runs;
    - IoU and contour accuracy are computed on the window of the union of both boxes grown
      by one pixel (clipped to the image): every boundary pixel of either mask lies inside
      it (a boundary pixel is in a mask or just above or left of one), a pixel of the
      window's last row or column that is not the image's is background with background
      neighbours as in the whole image, and the dilation radius is the whole image's.
    """
    ph, pw, pruns = rle_runs.runs_of(pred_rle, f"predictions: {where}")
    gh, gw, gruns = rle_runs.runs_of(gt_rle, f"GT: {where}")
    h, w = eval_size(gh, gw)
    if (ph, pw) != (h, w):
        raise OmamaError(
            f"predictions: {where}: mask is {(ph, pw)}, the official evaluator needs {(h, w)} "
            f"(GT resized to longest side {OFFICIAL_MAX_SIDE})"
        )
    pp = rle_runs.column_pieces(*rle_runs.intervals(pruns), h)
    gp = rle_runs.column_pieces(*rle_runs.intervals(gruns), gh)
    gp = rle_runs.resize_pieces(*gp, gh, gw, h, w)
    pbox, gbox = rle_runs.box(*pp), rle_runs.box(*gp)
    location = centre_distance(box_centre(pbox, h, w), box_centre(gbox, h, w))
    boxes = [b for b in (pbox, gbox) if b is not None]
    if not boxes:  # both empty: an empty union and no boundary
        return 1.0, 1.0, location
    window = (
        max(min(b[0] for b in boxes) - 1, 0),
        min(max(b[1] for b in boxes) + 2, h),
        max(min(b[2] for b in boxes) - 1, 0),
        min(max(b[3] for b in boxes) + 2, w),
    )
    pred = rle_runs.paint(*pp, window)
    gt = rle_runs.paint(*gp, window)
    iou = masks.mask_iou(pred, gt, eps=IOU_EPS)
    y0, _, x0, _ = window
    # each mask's boundary lies in its box grown by one pixel up and left (window coordinates)
    near = [
        None if b is None else (b[0] - 1 - y0, b[1] - y0, b[2] - 1 - x0, b[3] - x0)
        for b in (pbox, gbox)
    ]
    shape = _boundary_f_near(pred, gt, near[0], near[1], boundary_radius(h, w))
    return iou, shape, location


def _boundary_f_near(pred: np.ndarray, gt: np.ndarray, pbox, gbox, radius: float) -> float:
    """`boundary_f_at_radius`, each dilation done only where it is counted: the pixels of one
    boundary near the other are looked for in the box of the first that lies within the
    kernel's reach of the box of the second (boxes (y0, y1, x0, x1) inclusive that hold each
    boundary; none: no boundary). Far apart masks need no dilation at all."""
    pred_b = boundary_map(pred)
    gt_b = boundary_map(gt)
    n_pred = int(np.count_nonzero(pred_b))
    n_gt = int(np.count_nonzero(gt_b))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kernel = _disk(radius)
    precision = _hits(pred_b, pbox, gt_b, gbox, kernel) / float(n_pred)
    recall = _hits(gt_b, gbox, pred_b, pbox, kernel) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _hits(a: np.ndarray, abox, b: np.ndarray, bbox, kernel: np.ndarray) -> int:
    """count_nonzero(a & (cv2.dilate(b, kernel) > 0)), computed on the part of a's box within
    reach of b's box (reach: the kernel's size, more than its radius whatever its anchor)."""
    reach = kernel.shape[0]
    h, w = a.shape
    y0, y1 = max(abox[0], bbox[0] - reach, 0), min(abox[1], bbox[1] + reach, h - 1)
    x0, x1 = max(abox[2], bbox[2] - reach, 0), min(abox[3], bbox[3] + reach, w - 1)
    if y0 > y1 or x0 > x1:
        return 0
    cy0, cy1 = max(y0 - reach, 0), min(y1 + reach, h - 1)
    cx0, cx1 = max(x0 - reach, 0), min(x1 + reach, w - 1)
    crop = np.ascontiguousarray(b[cy0 : cy1 + 1, cx0 : cx1 + 1]).astype(np.uint8)
    near = cv2.dilate(crop, kernel)[y0 - cy0 : y1 - cy0 + 1, x0 - cx0 : x1 - cx0 + 1] > 0
    return int(np.count_nonzero(a[y0 : y1 + 1, x0 : x1 + 1] & near))


def _scores_chunk(_context: None, items: list[tuple[dict, dict | None, str]]) -> list:
    """`run_scores` of each visible item; an invisible one's prediction is only checked."""
    out = []
    for pred_rle, gt_rle, where in items:
        if gt_rle is None:
            rle_runs.runs_of(pred_rle, f"predictions: {where}")
            out.append(None)
        else:
            out.append(run_scores(pred_rle, gt_rle, where))
    return out


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

    triples = [t for t in ordered_map(_scores_chunk, None, scored, workers) if t is not None]
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
