"""FastSAM through the optional `ultralytics` package (AGPL-3.0), imported here only.

No download is ever attempted: ultralytics is told it is offline and must not install
anything, a weights file is loaded only from the path given, and a missing file is one line
that says where to get it. `save_random_init` writes a seeded YOLOv8-seg model with one class
(FastSAM's own architecture: FastSAM-x is YOLOv8x-seg, FastSAM-s YOLOv8s-seg) as an
ultralytics checkpoint whose task is 'segment', so the real loading and inference code runs
where the released weights cannot be had.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from omama.errors import OmamaError, bad_file
from omama.files import write_torch

log = logging.getLogger(__name__)

INSTALL = "pip install -e '.[proposals]'"
WHERE = (
    "get FastSAM-x.pt (or FastSAM-s.pt) from the FastSAM release (github CASIA-IVA-Lab/FastSAM, "
    "'Model Checkpoints') or ultralytics' assets release and pass its path; "
    "or --random-init for a seeded random model"
)


def ultralytics() -> ModuleType:
    """The ultralytics package, told to stay offline; absent: one line saying how to install."""
    os.environ["YOLO_OFFLINE"] = "1"  # no version checks, no hub, no telemetry
    os.environ["YOLO_AUTOINSTALL"] = "false"  # never pip-install a missing requirement
    os.environ.setdefault("YOLO_VERBOSE", "false")
    try:
        import ultralytics as ul
    except ImportError as exc:
        raise OmamaError(
            f"omama-proposals needs the optional package ultralytics (AGPL-3.0), which could "
            f"not be imported ({exc}): {INSTALL}"
        ) from None
    return ul


def random_init_name(arch: str, seed: int) -> str:
    return f"FastSAM-{arch}-random-init-seed{seed}.pt"


def save_random_init(path: Path, seed: int, arch: str = "x") -> Path:
    """A seeded random FastSAM-`arch` checkpoint at `path` (fp16, as ultralytics saves; the
    same seed writes the same bytes)."""
    ul = ultralytics()
    from ultralytics.nn.tasks import SegmentationModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SegmentationModel(f"yolov8{arch}-seg.yaml", nc=1, verbose=False)
    model.names = {0: "object"}
    ckpt = {
        "model": model.half(),
        "train_args": {"task": "segment", "imgsz": 1024, "single_cls": True},
        "version": ul.__version__,
        "omama": f"random-init FastSAM-{arch} seed {seed}",
    }
    write_torch(ckpt, path)
    return path


def check_weights(weights: Path) -> Path:
    """The weights file as given; missing, it is one line saying where to get it."""
    weights = Path(weights)
    if not weights.is_file():
        raise bad_file(weights, f"FastSAM weights file missing ({WHERE})")
    if weights.suffix != ".pt":
        raise bad_file(weights, "expected an ultralytics .pt checkpoint (FastSAM-x.pt)")
    return weights


def _names(model: Any) -> dict:
    return getattr(getattr(model, "model", None), "names", None) or {}


class Segmenter:
    """FastSAM in "everything" mode: the masks of a batch of images, on the device."""

    def __init__(self, weights: Path, device: torch.device, settings: dict[str, Any]) -> None:
        weights = check_weights(weights)
        ul = ultralytics()
        try:
            self.model = ul.FastSAM(str(weights.resolve()))
        except Exception as exc:  # unpickling, a foreign file, an old format
            text = " ".join(str(exc).split())[:200]
            raise bad_file(
                weights, f"not a loadable FastSAM checkpoint ({type(exc).__name__}: {text})"
            ) from None
        from ultralytics.nn.tasks import SegmentationModel

        if not isinstance(self.model.model, SegmentationModel):
            kind = type(self.model.model).__name__
            raise bad_file(weights, f"a {kind}, not a segmentation model like FastSAM")
        classes = len(_names(self.model))
        if classes != 1:
            raise bad_file(
                weights, f"a segmentation model of {classes} classes, not FastSAM (one class)"
            )
        self.device = device
        self.kwargs = dict(settings, device=device, verbose=False, save=False)

    def __call__(self, images: list[np.ndarray]) -> list[torch.Tensor | None]:
        """BGR uint8 images -> per image its masks [N, H, W] at the image's size on the device
        (None: nothing found), in the segmenter's order (most confident first)."""
        results = self.model.predict(images, **self.kwargs)
        out: list[torch.Tensor | None] = []
        for image, result in zip(images, results, strict=True):
            masks = None if result.masks is None else result.masks.data
            if masks is not None and tuple(masks.shape[1:]) != image.shape[:2]:
                masks = self._unpad(masks, image.shape[:2])  # --no-retina-masks
            out.append(masks)
        return out

    @staticmethod
    def _unpad(masks: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
        """Masks at the letterboxed input size -> the image's size, as FastSAM's prompts do."""
        from ultralytics.utils.ops import scale_masks

        return scale_masks(masks[None].float(), size_hw)[0] > 0.5
