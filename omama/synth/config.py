"""The generator's settings and the summary of what it wrote.

`SynthConfig` is one dataclass of `opt(...)` fields: it is omama-synth's flags (`--takes`,
`--no-portrait`, ...), the keys of a config file's `synth:` section, and the Python API.
`SynthSummary` is what `generate` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omama.backbones import DEFAULT_BACKBONE
from omama.config import opt
from omama.constants import SPLITS
from omama.errors import OmamaError
from omama.synth.world import MAX_OBJECTS

EGO_CAM = "aria01"
META_FILE = "synth_meta.json"
# synth_meta.json keeps the names it had when the generator was omama.dataset.synth, so that
# the same seed still writes byte-identical files
GENERATOR = "omama.dataset.synth"
_META_NAMES = {
    "takes": "n_takes",
    "frames": "n_frames",
    "objects": "n_objects",
    "exo_cams": "n_exo_cams",
}
_NOT_IN_META = ("out", "download", "overwrite")  # where and how to write, not what
# the options written as A{sep}B, with their (real, --small) values when unset
_PAIRS = {
    "ego_hw": ("x", (704, 704), (230, 230)),
    "exo_hw": ("x", (540, 960), (200, 350)),
    "n_candidates": ("-", (60, 120), (12, 40)),
}


def _unset(name: str) -> str:
    """Help text for an A{sep}B option left unset: its real and --small values."""
    sep, real, small = _PAIRS[name]
    return f"unset: {sep.join(map(str, real))}, or {sep.join(map(str, small))} with --small"


def _parse_pair(text: str | None, sep: str, what: str) -> tuple[int, int] | None:
    """'230x230' (sep 'x') or '12-40' (sep '-') -> (230, 230) / (12, 40); None stays None."""
    if text is None:
        return None
    parts = str(text).lower().split(sep)
    try:
        if len(parts) == 2:
            return (int(parts[0]), int(parts[1]))
    except ValueError:
        pass
    raise OmamaError(f"synth config: {what} must look like A{sep}B with integers, got {text!r}")


@dataclass
class SynthConfig:
    """Every knob of the generator; `small` picks the test-sized images."""

    out: Path | None = opt(None, "dataset root to create (ROOT); this or --download is required")
    download: Path | None = opt(
        None,
        "also (or instead) write the same takes as an Ego-Exo4D download DL (H.264 videos at "
        "the annotation size, 30 fps; relations files with LZString masks; takes.json), from "
        "which omama-prepare makes the --out root again",
    )
    seed: int = opt(0, "random seed: the same seed writes byte-identical files")
    small: bool = opt(
        False, "test-sized images and fewer candidates (see --ego-hw, --exo-hw and --n-candidates)"
    )
    takes: int = opt(
        6, "number of takes, at least 3; val and test get about a sixth each (6: 4/1/1)"
    )
    frames: int = opt(4, "annotated frames per take, numbered 0, FRAME_STEP, 2*FRAME_STEP, ...")
    frame_step: int = opt(30, "frame number step between annotated frames")
    objects: int = opt(4, f"objects per take, 1 to {MAX_OBJECTS}")
    exo_cams: int = opt(2, "exo cameras per take, named cam01, cam02, ... (1 to 99)")
    portrait: bool = opt(
        True,
        "make the last exo camera of one take (the first take of --portrait-split) portrait; "
        "--no-portrait keeps every exo camera landscape",
    )
    portrait_split: str = opt(
        "train", "the split of the take with the portrait camera", choices=SPLITS
    )
    ego_hw: str | None = opt(None, f"ego jpg size HxW; {_unset('ego_hw')}")
    exo_hw: str | None = opt(None, f"exo jpg size HxW; {_unset('exo_hw')}")
    ego_scale: int = opt(2, "annotation (original) size of the ego camera = jpg size * this")
    exo_scale: int = opt(4, "annotation (original) size of an exo camera = jpg size * this")
    n_candidates: str | None = opt(
        None, f"candidate masks per destination image, LO-HI inclusive; {_unset('n_candidates')}"
    )
    hand_prob: float = opt(0.5, "chance per ego frame that a hand covers part of the view")
    pillar_prob: float = opt(0.6, "chance per exo camera of a static pillar in front")
    max_retries: int = opt(20, "scene redraws per take until every visibility case occurs")
    pair_names: str = opt(
        "both",
        "pair files to write: 'plain' {split}_{set}_pairs.json; 'reference' O-MaMa's names for "
        "its train and val subsets (train_{set}_20percent_pairs.json, "
        "custom_val_{set}_pairs_10.json; test keeps the plain name); or 'both'",
        choices=("both", "plain", "reference"),
    )
    overwrite: bool = opt(
        False, "replace --out if it already holds a synthetic dataset (never deletes other data)"
    )

    def _pair(self, name: str) -> tuple[int, int] | None:
        return _parse_pair(getattr(self, name), _PAIRS[name][0], name)

    def _resolved(self, name: str) -> tuple[int, int]:
        pair = self._pair(name)
        return pair if pair is not None else _PAIRS[name][2 if self.small else 1]

    def resolved_ego_hw(self) -> tuple[int, int]:
        return self._resolved("ego_hw")

    def resolved_exo_hw(self) -> tuple[int, int]:
        return self._resolved("exo_hw")

    def resolved_n_candidates(self) -> tuple[int, int]:
        return self._resolved("n_candidates")

    def exo_names(self) -> list[str]:
        return [f"cam{i + 1:02d}" for i in range(self.exo_cams)]

    def frame_numbers(self) -> list[int]:
        return [i * self.frame_step for i in range(self.frames)]

    def split_sizes(self) -> dict[str, int]:
        """4/1/1 for six takes; val and test get about a sixth each, at least one."""
        n_eval = max(1, round(self.takes / 6))
        return {"train": self.takes - 2 * n_eval, "val": n_eval, "test": n_eval}

    def meta(self) -> dict[str, Any]:
        """The settings as synth_meta.json records them (sizes as [a, b] lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _NOT_IN_META:
                continue
            value = self._pair(f.name) if f.name in _PAIRS else getattr(self, f.name)
            out[_META_NAMES.get(f.name, f.name)] = (
                list(value) if isinstance(value, tuple) else value
            )
        return out

    def validate(self) -> None:
        """Raise OmamaError for a configuration the generator cannot honour."""
        problems = []
        if self.takes < 3:
            problems.append(f"takes must be at least 3 (one per split), got {self.takes}")
        if self.frames < 1:
            problems.append(f"frames must be at least 1, got {self.frames}")
        if self.frame_step < 1:
            problems.append(f"frame step must be at least 1, got {self.frame_step}")
        if not 1 <= self.objects <= MAX_OBJECTS:
            problems.append(f"objects must be between 1 and {MAX_OBJECTS}, got {self.objects}")
        if not 1 <= self.exo_cams <= 99:
            problems.append(f"exo cameras must be between 1 and 99, got {self.exo_cams}")
        if self.ego_scale < 1 or self.exo_scale < 1:
            problems.append("annotation scales must be at least 1")
        for name, hw in (("ego", self.resolved_ego_hw()), ("exo", self.resolved_exo_hw())):
            if min(hw) < 2 * (patch := DEFAULT_BACKBONE.patch):
                problems.append(f"{name} image {hw[0]}x{hw[1]} is smaller than {2 * patch} pixels")
        lo, hi = self.resolved_n_candidates()
        if not 1 <= lo <= hi:
            problems.append(f"candidate range {lo}-{hi} is empty")
        if self.portrait_split not in SPLITS:
            problems.append(f"portrait split {self.portrait_split!r} is not one of {SPLITS}")
        if problems:
            raise OmamaError("synth config: " + "; ".join(problems))


@dataclass
class SynthSummary:
    """What was written: split membership and pair counts per split and setting."""

    out: Path
    splits: dict[str, list[str]]
    pairs: dict[str, dict[str, int]]  # split -> setting -> number of pairs
    invisible: dict[str, dict[str, int]]  # split -> setting -> pairs whose destination is empty
    n_images: int = 0
    n_candidate_files: int = 0
    portrait: tuple[str, str] | None = None  # (take, cam) of the portrait camera
