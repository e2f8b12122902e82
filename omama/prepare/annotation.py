"""A take's annotation.json and its pairs, by the official rules (EGO4D/ego-exo4d-relation,
`correspondence/SegSwap/data`: `process_data.py` and `create_pairs.py`).

annotation.json is `{"masks": {obj: {cam: {frame: {"size": [h, w], "counts": str}}}},
"subsample_idx": [...]}`, objects, cameras and frames in the relations file's order, each
mask's counts the LZString-decoded `encodedMask`, written with `json.dump`'s defaults: the
same bytes as the official script's. Each mask is also checked (its runs must cover h x w
pixels), which the official script does not do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omama import rle
from omama.constants import is_ego
from omama.prepare.lzstring import LZStringError, decompress_uri

SETTINGS = ("egoexo", "exoego")  # create_pairs' settings: source ego, source exo

# what a problem takes away with --skip-bad
MASK, CAMERA, TAKE = "mask", "camera", "take"


@dataclass(frozen=True)
class Problem:
    """One bad input: the file, where in it, what is wrong, and what --skip-bad drops."""

    file: str
    take: str
    what: str
    scope: str  # MASK, CAMERA or TAKE
    cam: str | None = None
    obj: str | None = None
    frame: str | None = None

    def line(self) -> str:
        """`<file>: take T [object O] [camera C] [frame F]: <problem>`."""
        where = [f"take {self.take}"]
        where += [f"object {self.obj}"] if self.obj is not None else []
        where += [f"camera {self.cam}"] if self.cam is not None else []
        where += [f"frame {self.frame}"] if self.frame is not None else []
        return f"{self.file}: {' '.join(where)}: {self.what}"


def _decode_one(mask: Any) -> tuple[dict | None, str]:
    """`({"size": [h, w], "counts": str}, "")` of one relations mask, or `(None, why)`."""
    if not isinstance(mask, dict) or not {"width", "height", "encodedMask"} <= set(mask):
        return None, "annotation is not {width, height, encodedMask}"
    width, height, encoded = mask["width"], mask["height"], mask["encodedMask"]
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        return None, f"mask size {width!r}x{height!r} is not two positive integers"
    if not isinstance(encoded, str):
        return None, f"encodedMask is {type(encoded).__name__}, not a string"
    try:
        counts = decompress_uri(encoded)
        raw = counts.encode("ascii")
    except LZStringError as exc:
        return None, f"encodedMask does not decode as LZString: it {exc}"
    except UnicodeEncodeError:
        return None, "encodedMask decodes to text that is not a COCO RLE (not ASCII)"
    total = rle.run_total(raw)
    if total != width * height:
        got = "unreadable runs" if total is None else f"runs covering {total} pixels"
        return None, f"encodedMask decodes to a COCO RLE with {got}, not {height}x{width}"
    return {"size": [height, width], "counts": counts}, ""


def take_masks(entry: dict[str, Any], take: str, file: str) -> tuple[dict, list[Problem]]:
    """`annotation.json["masks"]` of a relations entry, and the masks that do not decode
    (left out of the result)."""
    masks: dict[str, dict[str, dict[str, dict]]] = {}
    problems = []
    for obj, cams in entry["object_masks"].items():
        masks[obj] = {}
        for cam, cam_entry in cams.items():
            masks[obj][cam] = {}
            annotation = cam_entry.get("annotation", {}) if isinstance(cam_entry, dict) else None
            if not isinstance(annotation, dict):
                problems.append(Problem(file, take, "no 'annotation' mapping", MASK, cam, obj))
                continue
            for frame, mask in annotation.items():
                decoded, why = _decode_one(mask)
                if decoded is None:
                    problems.append(Problem(file, take, why, MASK, cam, obj, frame))
                else:
                    masks[obj][cam][frame] = decoded
    return masks, problems


def without_cameras(masks: dict, cams: Iterable[str]) -> dict:
    """`masks` less the cameras `cams` (--skip-bad: a camera without frames)."""
    drop = set(cams)
    return {
        obj: {cam: frames for cam, frames in by_cam.items() if cam not in drop}
        for obj, by_cam in masks.items()
    }


def entry(data_dir: str, take: str, cam: str, obj: str, kind: str, idx: str) -> str:
    """One path of a pair: `{data_dir}//{take}//{cam}//{obj}//{kind}//{idx}`."""
    return f"{data_dir}//{take}//{cam}//{obj}//{kind}//{idx}"


def take_pairs(data_dir: str, take: str, masks: dict, setting: str) -> list[list[str]]:
    """`create_pairs.make_pairs` for one take: per object that has an ego camera (the last
    one, when several), per exo camera, per frame annotated in the source camera (ego for
    egoexo, that exo camera for exoego), `[ego_rgb, ego_mask, exo_rgb, exo_mask]`."""
    if setting not in SETTINGS:
        raise ValueError(f"setting {setting!r} is not one of {SETTINGS}")
    pairs = []
    for obj, by_cam in masks.items():
        egos = [cam for cam in by_cam if is_ego(cam)]
        if not egos:
            continue
        ego = egos[-1]
        for cam in by_cam:
            if is_ego(cam):
                continue
            for idx in by_cam[ego if setting == "egoexo" else cam]:
                pairs.append(
                    [
                        entry(data_dir, take, ego, obj, "rgb", idx),
                        entry(data_dir, take, ego, obj, "mask", idx),
                        entry(data_dir, take, cam, obj, "rgb", idx),
                        entry(data_dir, take, cam, obj, "mask", idx),
                    ]
                )
    return pairs


def used_frames(masks: dict) -> dict[str, set[int]]:
    """Per camera, the frames some pair of either setting shows (`--frames used`)."""
    used: dict[str, set[int]] = {}
    for setting in SETTINGS:
        for pair in take_pairs("", "", masks, setting):
            for path in (pair[0], pair[2]):
                _, _, cam, _, _, idx = path.rsplit("//", 5)
                if idx.isdigit():
                    used.setdefault(cam, set()).add(int(idx))
    return used
