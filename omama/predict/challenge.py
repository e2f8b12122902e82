"""The Ego-Exo4D correspondence challenge output: prediction records into the challenge JSON.

This is the write side only; files written here are checked by ``omama.metrics.validate``,
the one validator, which ``omama.metrics.official.evaluate`` runs before scoring.

Layout (exo2ego; ego2exo uses "ego-exo" and "{ego_cam}_{exo_cam}"):
``{"exo-ego": {"version", "challenge", "results": {take: {"masks": {obj: {"{exo}_{ego}":
{frame: {"pred_mask": RLE, "confidence": float}}}}, "subsample_idx": [int frames]}}}}``.
The official evaluator compares each predicted mask pixel for pixel with the GT mask resized
to longest side 480 (see ``omama.metrics.official.eval_size``), so masks must be written at
that size.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

from omama.constants import direction_info, is_ego
from omama.errors import OmamaError
from omama.metrics.validate import pair_key


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
    info = direction_info(direction)
    results: dict = {}
    frames_of: dict[str, set[int]] = {}
    for r in records:
        frame = str(r.frame)
        where = f"prediction take {r.take} object {r.obj!r} {r.src_cam}->{r.dst_cam} frame {frame}"
        if is_ego(r.src_cam) != info.source_is_ego or is_ego(r.dst_cam) == info.source_is_ego:
            raise OmamaError(f"{where}: cameras do not fit direction {direction}")
        try:
            frame_int = int(frame)
        except ValueError:
            raise OmamaError(f"{where}: frame is not an integer index") from None
        take = results.setdefault(r.take, {"masks": {}, "subsample_idx": []})
        pair = take["masks"].setdefault(r.obj, {}).setdefault(pair_key(r.src_cam, r.dst_cam), {})
        if frame in pair:
            raise OmamaError(f"{where}: predicted twice")
        pair[frame] = {
            "pred_mask": _plain_rle(r.pred_rle, where),
            "confidence": _plain_confidence(r.confidence, where),
        }
        frames_of.setdefault(r.take, set()).add(frame_int)
    for take, frames in frames_of.items():
        results[take]["subsample_idx"] = sorted(frames)
    return {info.challenge_key: {"version": version, "challenge": challenge, "results": results}}
