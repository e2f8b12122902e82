"""The Ego-Exo4D correspondence layout on disk: pair lists, splits and annotation files.

A dataset root ROOT holds `processed/split.json`, `processed/{take}/annotation.json`, the
frames `processed/{take}/{cam}/{frame}.jpg`, pair lists under `dataset_jsons/` and candidate
masks under `Masks_{SPLIT}_{DIRECTION}/`. Every bad input raises `OmamaError` with one line
`"<file>: <problem>"`, so a user sees which file to fix instead of a traceback.

Pair strings look like `ROOT//take//cam//obj//rgb//frame`. They are parsed from the right, so
the ROOT prefix (which may contain `//` and usually points where the data used to live) is
ignored, and object names may hold spaces and single slashes.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omama.constants import direction_info
from omama.errors import bad_file
from omama.files import read_json

log = logging.getLogger(__name__)

# The four strings of a pair, in file order (the ego path is always first).
_SLOTS = (("ego", "rgb"), ("ego", "mask"), ("exo", "rgb"), ("exo", "mask"))
_FRAME_RE = re.compile(r"[0-9]+")
_SHOW = 120  # longest quoted string in an error message


@dataclass(frozen=True)
class Pair:
    """One (source mask, destination image) sample; `frame` is the string used in the files."""

    take: str
    obj: str
    ego_cam: str
    exo_cam: str
    frame: str
    direction: str

    @property
    def src_cam(self) -> str:
        """The camera whose mask is given (exo for exo2ego, ego for ego2exo)."""
        return self.exo_cam if self.direction == "exo2ego" else self.ego_cam

    @property
    def dst_cam(self) -> str:
        """The camera where the object is searched (ego for exo2ego, exo for ego2exo)."""
        return self.ego_cam if self.direction == "exo2ego" else self.exo_cam


def setting(direction: str) -> str:
    """The pair-file name part of a direction: exo2ego -> "exoego", ego2exo -> "egoexo"."""
    return direction_info(direction).pair_setting


def default_pairs_path(root: str | Path, split: str, direction: str) -> Path:
    """`ROOT/dataset_jsons/{split}_{setting}_pairs.json`."""
    return Path(root) / "dataset_jsons" / f"{split}_{setting(direction)}_pairs.json"


# The names O-MaMa's reference trains and validates on: a 20 % train subset and a 10 % val
# subset (its test file has the plain name).
_REFERENCE_PAIR_NAMES = {
    "train": "train_{setting}_20percent_pairs.json",
    "val": "custom_val_{setting}_pairs_10.json",
}


def reference_pairs_path(root: str | Path, split: str, direction: str) -> Path | None:
    """The reference's pair file name for a split (None where it uses the plain name)."""
    name = _REFERENCE_PAIR_NAMES.get(split)
    if name is None:
        return None
    return Path(root) / "dataset_jsons" / name.format(setting=setting(direction))


def find_pairs_file(root: str | Path, split: str, direction: str) -> Path:
    """The split's pair file: `{split}_{setting}_pairs.json` when present, else the file under
    the reference's name (`train_*_20percent_pairs.json`, `custom_val_*_pairs_10.json`); the
    log says which was taken and which was ignored. Neither: one line listing what is there."""
    plain = default_pairs_path(root, split, direction)
    ref = reference_pairs_path(root, split, direction)
    if plain.is_file():
        if ref is not None and ref.is_file():
            log.info(
                "%s: pairs from this file; %s (the reference's subset) ignored", plain, ref.name
            )
        return plain
    if ref is not None and ref.is_file():
        log.info("%s: pairs from the reference's file (no %s)", ref, plain.name)
        return ref
    folder = plain.parent
    present = sorted(q.name for q in folder.glob("*pairs*.json")) if folder.is_dir() else []
    have = f"pair files present: {', '.join(present)}" if present else f"no pair files in {folder}"
    wanted = plain.name + (f" or {ref.name}" if ref is not None else "")
    raise bad_file(plain, f"pairs file missing (looked for {wanted}; {have}); or pass --pairs")


def default_masks_dir(root: str | Path, split: str, direction: str) -> Path:
    """`ROOT/Masks_{SPLIT}_{EXO2EGO|EGO2EXO}`: the destination images' candidate masks."""
    return Path(root) / f"Masks_{split.upper()}_{direction_info(direction).masks_part}"


def image_path(root: str | Path, take: str, cam: str, frame: str | int) -> Path:
    """`ROOT/processed/{take}/{cam}/{int(frame)}.jpg` (frame files carry no leading zeros)."""
    return Path(root) / "processed" / take / cam / f"{int(frame)}.jpg"


def _show(value: Any) -> str:
    """A short one-line repr of a value for error messages."""
    text = repr(value)
    return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


def _parse_part(text: Any, slot: int) -> tuple[str, str, str, str]:
    """Split one pair string into (take, cam, obj, frame); ValueError says why it is bad."""
    side, kind = _SLOTS[slot]
    where = f"element {slot} ({side} {kind})"
    if not isinstance(text, str):
        raise ValueError(f"{where} is {type(text).__name__}, not a string")
    parts = text.rsplit("//", 5)
    if len(parts) != 6:
        raise ValueError(f"{where} {_show(text)} is not ROOT//take//cam//obj//{kind}//frame")
    _, take, cam, obj, found_kind, frame = parts
    if found_kind != kind:
        raise ValueError(f"{where} {_show(text)} has {_show(found_kind)} where {kind!r} belongs")
    for name, value in (("take", take), ("camera", cam), ("object", obj)):
        if not value:
            raise ValueError(f"{where} {_show(text)} has an empty {name}")
    if not _FRAME_RE.fullmatch(frame):
        raise ValueError(f"{where} {_show(text)} has frame {_show(frame)}, not an integer")
    return take, cam, obj, frame


def _parse_entry(entry: Any, direction: str) -> Pair:
    """Turn one `[ego_rgb, ego_mask, exo_rgb, exo_mask]` entry into a Pair (ValueError if bad)."""
    if not isinstance(entry, list | tuple) or len(entry) != 4:
        kind = (
            f"a list of {len(entry)}" if isinstance(entry, list | tuple) else type(entry).__name__
        )
        raise ValueError(f"is {kind}, expected 4 strings [ego_rgb, ego_mask, exo_rgb, exo_mask]")
    parsed = [_parse_part(text, slot) for slot, text in enumerate(entry)]
    (take, ego_cam, obj, frame), ego_mask = parsed[0], parsed[1]
    exo_rgb, exo_mask = parsed[2], parsed[3]
    exo_cam = exo_rgb[1]
    for slot, (p_take, _, p_obj, p_frame) in enumerate(parsed[1:], start=1):
        for name, ego_value, value in (
            ("take", take, p_take),
            ("object", obj, p_obj),
            ("frame", frame, p_frame),
        ):
            if value != ego_value:
                raise ValueError(
                    f"element {slot} names {name} {_show(value)} but element 0 names "
                    f"{_show(ego_value)}"
                )
    if ego_mask[1] != ego_cam:
        raise ValueError(f"ego rgb camera {ego_cam!r} differs from ego mask camera {ego_mask[1]!r}")
    if exo_mask[1] != exo_cam:
        raise ValueError(f"exo rgb camera {exo_cam!r} differs from exo mask camera {exo_mask[1]!r}")
    if ego_cam == exo_cam:
        raise ValueError(f"ego and exo camera are both {ego_cam!r}")
    return Pair(take, obj, ego_cam, exo_cam, frame, direction)


def load_pairs(path: str | Path, direction: str) -> list[Pair]:
    """Read a pair list; identical pairs are dropped (first kept) so no sample counts twice."""
    direction = direction_info(direction).name
    path = Path(path)
    data = read_json(path, "pairs file")
    if not isinstance(data, list):
        raise bad_file(path, f"expected a JSON list of pairs, found {type(data).__name__}")
    if not data:
        raise bad_file(path, "the pair list is empty")
    pairs: dict[Pair, None] = {}
    for index, entry in enumerate(data):
        try:
            pair = _parse_entry(entry, direction)
        except ValueError as exc:
            raise bad_file(path, f"entry {index} {exc}") from None
        pairs.setdefault(pair, None)
    if len(pairs) < len(data):
        log.warning(
            "%s: %d of %d pairs repeat an earlier one; each is kept once",
            path,
            len(data) - len(pairs),
            len(data),
        )
    return list(pairs)


def split_path(root: str | Path) -> Path:
    """`ROOT/processed/split.json`."""
    return Path(root) / "processed" / "split.json"


def load_split(root: str | Path) -> dict[str, list[str]]:
    """Read `processed/split.json`: `{split name: [take ids]}`."""
    path = split_path(root)
    data = read_json(path, "split file")
    if not isinstance(data, dict):
        raise bad_file(path, f"expected a JSON object of splits, found {type(data).__name__}")
    for name, takes in data.items():
        if not isinstance(takes, list) or not all(isinstance(t, str) for t in takes):
            raise bad_file(path, f"split {name!r} is not a list of take ids")
    return data


def split_takes(root: str | Path, split: str) -> list[str]:
    """The take ids of one split; an absent split is an error, not an empty list."""
    splits = load_split(root)
    if split not in splits:
        have = ", ".join(sorted(splits)) or "none"
        raise bad_file(split_path(root), f"no split {split!r} (splits present: {have})")
    return splits[split]


def _check_annotation(path: Path, data: Any) -> dict:
    """Check the `masks` tree's shape once at load so lookups can trust it."""
    if not isinstance(data, dict):
        raise bad_file(path, f"expected a JSON object, found {type(data).__name__}")
    masks = data.get("masks")
    if not isinstance(masks, dict):
        problem = "no 'masks' key" if masks is None else "'masks' is not an object"
        raise bad_file(path, problem)
    for obj, cams in masks.items():
        if not isinstance(cams, dict):
            raise bad_file(path, f"masks[{_show(obj)}] is not an object of cameras")
        for cam, frames in cams.items():
            if not isinstance(frames, dict):
                raise bad_file(path, f"masks[{_show(obj)}][{cam!r}] is not an object of frames")
            for frame, rle in frames.items():
                if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                    raise bad_file(
                        path, f"masks[{_show(obj)}][{cam!r}][{frame!r}] is not an RLE object"
                    )
    return masks


_TREES = 4  # takes whose parsed annotation files are kept (the RLE texts: MBs per take)


@dataclass(frozen=True)
class _TakeIndex:
    """What planning asks of a take, kept for every take read: its objects, and the sorted
    objects annotated in each (camera, frame) (a few names per image)."""

    objects: frozenset[str]
    at: dict[tuple[str, str], tuple[str, ...]]


def _index(masks: dict) -> _TakeIndex:
    at: dict[tuple[str, str], list[str]] = {}
    for obj in sorted(masks):
        for cam, frames in masks[obj].items():
            for frame in frames:
                at.setdefault((cam, frame), []).append(obj)
    return _TakeIndex(frozenset(masks), {k: tuple(v) for k, v in at.items()})


class Annotations:
    """Lazily read `processed/{take}/annotation.json` files, one cache per instance: each
    take's object index is kept once read, its RLEs only while it is among the last `_TREES`
    takes used (a take's file is read again when its RLEs are asked for later), so a split's
    annotations are never all in memory at once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._trees: OrderedDict[str, dict] = OrderedDict()
        self._index: dict[str, _TakeIndex] = {}

    def __getstate__(self) -> dict:
        """A copy (a worker process) starts with the indexes and no RLE trees."""
        return {"root": self.root, "_trees": OrderedDict(), "_index": self._index}

    def path(self, take: str) -> Path:
        """Where the take's annotation file lives."""
        return self.root / "processed" / take / "annotation.json"

    def masks(self, take: str) -> dict:
        """The take's `{obj: {cam: {frame: RLE}}}` tree."""
        cached = self._trees.get(take)
        if cached is not None:
            self._trees.move_to_end(take)
            return cached
        path = self.path(take)
        cached = _check_annotation(path, read_json(path, "annotation file"))
        self._trees[take] = cached
        if len(self._trees) > _TREES:
            self._trees.popitem(last=False)
        if take not in self._index:
            self._index[take] = _index(cached)
        return cached

    def _take(self, take: str) -> _TakeIndex:
        index = self._index.get(take)
        if index is None:
            self.masks(take)
            index = self._index[take]
        return index

    def has_object(self, take: str, obj: str) -> bool:
        """Whether the take's annotation file names the object."""
        return obj in self._take(take).objects

    def rle(self, take: str, obj: str, cam: str, frame: str | int) -> dict | None:
        """The object's RLE at (cam, frame), or None when it is not visible there."""
        if not self.has_object(take, obj):
            raise bad_file(self.path(take), f"object {_show(obj)} absent from annotation.json")
        return self.masks(take)[obj].get(cam, {}).get(str(frame))

    def annotated(self, take: str, obj: str, cam: str, frame: str | int) -> bool:
        """Whether the object has a mask in that image."""
        return obj in self._take(take).at.get((cam, str(frame)), ())

    def objects_at(self, take: str, cam: str, frame: str | int) -> list[str]:
        """Sorted names of the objects annotated in one image."""
        return list(self._take(take).at.get((cam, str(frame)), ()))


def validate_pairs(pairs: list[Pair], annotations: Annotations, path: str | Path) -> None:
    """Fail early (naming the pairs file `path`) on pairs that cannot become samples."""
    have: set[str] = set()  # takes whose annotation file is there
    for pair in pairs:
        if pair.take not in have:
            ann_path = annotations.path(pair.take)
            if not ann_path.is_file():
                raise bad_file(
                    path, f"{_name(pair)}: take {pair.take!r} has no annotation file {ann_path}"
                )
            have.add(pair.take)
        if not annotations.has_object(pair.take, pair.obj):
            raise bad_file(
                path,
                f"{_name(pair)}: pair names object {_show(pair.obj)} absent from annotation.json",
            )
        if not annotations.annotated(pair.take, pair.obj, pair.src_cam, pair.frame):
            raise bad_file(
                path,
                f"{_name(pair)}: source mask absent from annotation.json (camera "
                f"{pair.src_cam!r}, frame {pair.frame}); a pair needs an annotated source mask",
            )


def _name(pair: Pair) -> str:
    return f"pair {pair.take}/{pair.obj}/{pair.src_cam}->{pair.dst_cam}/{pair.frame}"
