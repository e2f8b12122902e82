"""The Ego-Exo4D download as its downloader lays it out, and what omama-prepare reads of it.

    DL/takes.json                                        take metadata (copied to ROOT)
    DL/annotations/relations_{split}.json                masks and annotated frames
    DL/takes/{take_name}/frame_aligned_videos/{cam}.mp4  ego 1408x1408, exo 3840x2160, 30 fps

In a relations file, `annotations[take_uid]` holds `take_name` and
`object_masks[obj][cam]`, whose `annotation[frame]` is `{width, height, encodedMask}` (the
mask: LZString `compressToEncodedURIComponent` of a COCO RLE counts string at the camera's
original size) and whose `annotated_frames` lists the frames annotated. The one definition
of these paths and of the ego camera rule; `omama-synth --download` writes by it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omama.constants import is_ego
from omama.errors import bad_file
from omama.files import read_json

FRAME_STEP = 30  # frames between two sampled frames: 1 fps of a 30 fps video
EGO_SCALE, EXO_SCALE = 2, 4  # the official resize: ego halved, exo quartered
FULL_HEIGHT = 1408  # a frame less high ends the official script's camera without a word


def relations_path(dl: str | Path, split: str) -> Path:
    """`DL/annotations/relations_{split}.json`."""
    return Path(dl) / "annotations" / f"relations_{split}.json"


def takes_json_path(dl: str | Path) -> Path:
    """`DL/takes.json`."""
    return Path(dl) / "takes.json"


def video_path(dl: str | Path, take_name: str, cam: str) -> Path:
    """`DL/takes/{take_name}/frame_aligned_videos/{cam}.mp4`."""
    return Path(dl) / "takes" / take_name / "frame_aligned_videos" / f"{cam}.mp4"


def scale_of(cam: str) -> int:
    """The official downscale of a camera's frames: 2 for the ego camera, 4 for an exo one."""
    return EGO_SCALE if is_ego(cam) else EXO_SCALE


def read_relations(path: Path) -> dict[str, Any]:
    """The relations file's `annotations` (take uid -> entry), each entry checked for
    `take_name` and `object_masks`; a file of another shape is one line naming it."""
    data = read_json(path, "relations file")
    takes = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(takes, dict):
        raise bad_file(path, "no 'annotations' mapping (not an Ego-Exo4D relations file?)")
    for take, entry in takes.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("object_masks"), dict):
            raise bad_file(path, f"take {take}: no 'object_masks' mapping")
        if not isinstance(entry.get("take_name"), str) or not entry["take_name"]:
            raise bad_file(path, f"take {take}: no 'take_name'")
    return takes


def cameras(entry: dict[str, Any]) -> list[str]:
    """Every camera under the take's `object_masks`, in order of first appearance (the
    official script takes a set: its order is arbitrary, and nothing depends on it)."""
    seen: dict[str, None] = {}
    for cams in entry["object_masks"].values():
        for cam in cams:
            seen.setdefault(cam, None)
    return list(seen)
