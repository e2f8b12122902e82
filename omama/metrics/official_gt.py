"""The official ground-truth file of a split, as the Ego-Exo4D builder writes it.

The official evaluator (EGO4D/ego-exo4d-relation, ``correspondence/evaluation``) reads a GT
file made by that repository's ``process_annotations.py``. Read from its source, the builder:

1. reads the list of takes of the split from ``{data_path}/split_checking.json``
   (``{split: [take ids]}``) and the relations file's top-level ``annotations`` object
   (``relations_{split}.json`` of the Ego-Exo4D download);
2. writes ``{"version": "xx", "challenge": "xx", "annotations": {...}}``, with one entry per
   take, in the split's order (a take listed twice is written once, its key's first place);
3. each entry is the take's ``{data_path}/{take}/annotation.json`` object, kept whole (every
   key, ``masks`` and ``subsample_idx`` included, in the file's order), with an
   ``annotated_frames`` key set after them (or replaced in place, if the file had one);
4. ``annotated_frames[obj][cam]`` is copied verbatim from the relations file's
   ``annotations[take]["object_masks"][obj][cam]["annotated_frames"]``, for every object of the
   annotation's ``masks`` and every camera under it, and for nothing else: objects and cameras
   that only the relations file has are left out; nothing is filtered (an object without an
   ego camera, or whose camera has no frames, stays); frame keys under ``masks`` stay strings
   and ``annotated_frames`` stays what the relations file holds (lists of int frame indices);
5. a take, object or camera missing from the relations file stops the script (a KeyError).

The evaluator then visits, per object and exo camera, each frame of the SOURCE camera's masks
whose int index is in the DESTINATION camera's ``annotated_frames``; a frame the destination
camera never annotated is skipped, not counted as "not visible". The builder of
``omama.metrics.groundtruth`` (used when neither this file nor a GT file is given) cannot know
which frames were annotated and lists every evaluated frame, so its balanced accuracy may
differ from the official one; IoU, contour accuracy and location error do not (they are
taken over visible frames only, and a visible frame is annotated).

Differences from the official script, all outside the file it writes:

- the takes come from ``ROOT/processed/split.json`` (same layout ``{split: [takes]}``) or a
  file given instead (``split_checking.json`` is not shipped with the official repository);
  annotation files are read from ``ROOT/processed/{take}/annotation.json``;
- a missing take, object or camera, or a relations entry that is not the documented shape
  (``annotated_frames`` not a list of ints), is a one-line ``"<file>: <problem>"`` error
  instead of a traceback, and nothing is written; the official script would write a file
  whose frames never match (string frames) or crash later.

For valid input the dict built here, written with ``omama.files.write_json``, is byte for byte
the file the official script writes (same key order, ``json.dumps`` defaults).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omama.errors import OmamaError, bad_file
from omama.files import read_json

log = logging.getLogger(__name__)

VERSION = "xx"  # what the official builder writes in both fields
CHALLENGE = "xx"
RELATIONS = "relations"  # GTInputError.where for a problem of the relations file


class GTInputError(OmamaError):
    """A problem of one input: `where` is RELATIONS or the take whose annotation is bad."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(problem)
        self.where = where
        self.problem = problem


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def relation_takes(relations: Any) -> dict[str, Any]:
    """The relations file's ``annotations`` object (take id -> entry); GTInputError if absent."""
    if not isinstance(relations, dict):
        kind = type(relations).__name__
        raise GTInputError(RELATIONS, f"expected a JSON object with 'annotations', found {kind}")
    takes = relations.get("annotations")
    if not isinstance(takes, dict):
        problem = "no 'annotations' key" if takes is None else "'annotations' is not an object"
        raise GTInputError(RELATIONS, f"{problem} (not an Ego-Exo4D relations file?)")
    return takes


def check_takes(takes: Sequence[str], relations: Any) -> dict[str, Any]:
    """`relation_takes(relations)`, after checking that it holds every take of `takes`."""
    rel_takes = relation_takes(relations)
    missing = [t for t in dict.fromkeys(takes) if t not in rel_takes]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise GTInputError(RELATIONS, f"take {missing[0]} of the split is missing{more}")
    return rel_takes


def _annotated_frames(object_masks: dict, take: str, obj: str, cam: str) -> list[int]:
    where = f"take {take} object {_show(obj)} camera {cam!r}"
    cams = object_masks.get(obj)
    if not isinstance(cams, dict):
        problem = "missing" if cams is None else "not an object of cameras"
        raise GTInputError(RELATIONS, f"take {take} object {_show(obj)}: {problem}")
    entry = cams.get(cam)
    if not isinstance(entry, dict):
        problem = "missing" if entry is None else "not an object"
        raise GTInputError(RELATIONS, f"{where}: {problem}")
    frames = entry.get("annotated_frames")
    if frames is None:
        raise GTInputError(RELATIONS, f"{where}: no 'annotated_frames'")
    if not isinstance(frames, list) or not all(
        isinstance(f, int) and not isinstance(f, bool) for f in frames
    ):
        raise GTInputError(
            RELATIONS, f"{where}: 'annotated_frames' is {_show(frames)}, not a list of ints"
        )
    return frames


def _masks(annotation: Any, take: str) -> dict:
    if not isinstance(annotation, dict):
        raise GTInputError(take, f"expected a JSON object, found {type(annotation).__name__}")
    masks = annotation.get("masks")
    if not isinstance(masks, dict):
        raise GTInputError(take, "no 'masks' key" if masks is None else "'masks' not an object")
    for obj, cams in masks.items():
        if not isinstance(cams, dict):
            raise GTInputError(take, f"masks[{_show(obj)}] is not an object of cameras")
    return masks


def build_official_gt(takes: Sequence[str], annotations: Mapping[str, Any], relations: Any) -> dict:
    """The official GT dict of `takes` (module docstring, rules 2-5).

    `annotations` maps each take to its annotation.json content; `relations` is the whole
    relations file. The result shares the annotation's nested objects (nothing is copied
    deeply). Raises GTInputError naming the input at fault.
    """
    rel_takes = check_takes(takes, relations)
    out: dict[str, Any] = {}
    for take in takes:
        masks = _masks(annotations[take], take)
        rel = rel_takes[take]
        object_masks = rel.get("object_masks") if isinstance(rel, dict) else None
        if not isinstance(object_masks, dict):
            raise GTInputError(RELATIONS, f"take {take}: no 'object_masks' object")
        entry = dict(annotations[take])
        entry["annotated_frames"] = {
            obj: {cam: _annotated_frames(object_masks, take, obj, cam) for cam in cams}
            for obj, cams in masks.items()
        }
        out[take] = entry
    return {"version": VERSION, "challenge": CHALLENGE, "annotations": out}


# ---------------------------------------------------------------------------- file edges


def annotation_path(root: str | Path, take: str) -> Path:
    """`ROOT/processed/{take}/annotation.json`."""
    return Path(root) / "processed" / take / "annotation.json"


def default_split_file(root: str | Path) -> Path:
    """`ROOT/processed/split.json`."""
    return Path(root) / "processed" / "split.json"


def read_split_takes(path: str | Path, split: str) -> list[str]:
    """The take ids of `split` in a `{split: [take ids]}` file (split.json's layout)."""
    data = read_json(path, "split file")
    if not isinstance(data, dict):
        raise bad_file(path, f"expected a JSON object of splits, found {type(data).__name__}")
    if split not in data:
        have = ", ".join(sorted(map(str, data))) or "none"
        raise bad_file(path, f"no split {split!r} (splits present: {have})")
    takes = data[split]
    if not isinstance(takes, list) or not all(isinstance(t, str) for t in takes):
        raise bad_file(path, f"split {split!r} is not a list of take ids")
    return takes


def load_official_gt(
    root: str | Path,
    split: str,
    relations_path: str | Path,
    split_file: str | Path | None = None,
) -> dict:
    """Read the split's takes, the relations file and each take's annotation.json, and build
    the official GT; every problem is one `"<file>: <problem>"` line."""
    split_file = Path(split_file) if split_file is not None else default_split_file(root)
    takes = read_split_takes(split_file, split)
    if not takes:
        raise bad_file(split_file, f"split {split!r} has no takes")
    relations = read_json(relations_path, "relations file")
    try:
        check_takes(takes, relations)  # a bad relations file fails before the big reads
        annotations = {t: read_json(annotation_path(root, t), "annotation file") for t in takes}
        gt = build_official_gt(takes, annotations, relations)
    except GTInputError as exc:
        at = relations_path if exc.where == RELATIONS else annotation_path(root, exc.where)
        raise bad_file(at, exc.problem) from None
    log.info(
        "official GT of %s: %d takes from %s and %s", split, len(takes), split_file, relations_path
    )
    return gt
