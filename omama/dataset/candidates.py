"""Candidate masks (FastSAM proposals) of a destination image, brought to its crop size.

Files: `{masks_dir}/{take}/{cam}/{frame}_masks.npz` (array `arr_0`, N x H x W of 0/1) and
`{frame}_boxes.npy` (N x 4: x, y, w, h in the masks' pixel frame). A file may hold one 2-D
mask (read as N = 1; the reference zeroes it instead) or no mask at all (one all-zero mask and
a zero box stand in, as in the reference). Masks at another size than the crop are resized
with torch's nearest rule, as the reference does, and their boxes scaled to match; a portrait
camera's portrait masks are thereby stretched to its landscape crop (see `images`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omama.errors import bad_file

log = logging.getLogger(__name__)

ASPECT_TOLERANCE = 0.02


def _why(exc: Exception) -> str:
    """An exception as one short line (library messages may span lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def candidate_paths(
    masks_dir: str | Path, take: str, cam: str, frame: str | int
) -> tuple[Path, Path]:
    """The (masks .npz, boxes .npy) files of one destination image."""
    base = Path(masks_dir) / take / cam
    return base / f"{int(frame)}_masks.npz", base / f"{int(frame)}_boxes.npy"


def _load_mask_array(path: Path) -> np.ndarray:
    """Read `arr_0` from an npz, turning any failure into a one-line error."""
    if not path.is_file():
        raise bad_file(path, "candidate masks file missing")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # BadZipFile, ValueError (pickled data), OSError, EOFError...
        raise bad_file(path, f"unreadable npz ({_why(exc)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise bad_file(path, "not an npz archive (a bare .npy array?)")
    with loaded as archive:
        if "arr_0" not in archive.files:
            have = ", ".join(archive.files) or "nothing"
            raise bad_file(path, f"no array 'arr_0' in the npz (holds {have})")
        try:
            return archive["arr_0"]
        except Exception as exc:  # BadZipFile (CRC), zlib.error, ValueError from a damaged member
            raise bad_file(path, f"unreadable npz ({_why(exc)})") from None


def _load_boxes(path: Path) -> np.ndarray:
    """Read the boxes .npy, turning any failure into a one-line error."""
    if not path.is_file():
        raise bad_file(path, "candidate boxes file missing")
    try:
        boxes = np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError, EOFError, OSError, UnpicklingError...
        raise bad_file(path, f"unreadable npy ({_why(exc)})") from None
    if not isinstance(boxes, np.ndarray) or boxes.dtype.kind not in "biuf":
        raise bad_file(path, "boxes are not a numeric array")
    return boxes


def _as_binary_uint8(masks: np.ndarray, path: Path) -> np.ndarray:
    """View or convert 0/1 masks to uint8 without a float copy; other values are an error."""
    kind = masks.dtype.kind
    if kind == "b":
        return masks.view(np.uint8)
    if kind not in "iuf":
        raise bad_file(path, f"masks of dtype {masks.dtype}, expected 0/1 integers or booleans")
    if kind == "u":  # unsigned: one pass for the maximum, no minimum to check
        bad = masks.size > 0 and masks.max() > 1
    elif kind == "i":
        bad = masks.size > 0 and (masks.min() < 0 or masks.max() > 1)
    else:
        bad = bool(np.any((masks != 0) & (masks != 1)))
    if bad:
        raise bad_file(path, "masks hold values other than 0 and 1")
    return masks.astype(np.uint8, copy=False)


def _aspect_ok(hw: tuple[int, int], crop_hw: tuple[int, int], orig_hw: tuple[int, int]) -> bool:
    """Whether masks of size hw look like this image (original or crop, either orientation)."""
    ratio = hw[1] / hw[0]
    for h, w in (orig_hw, crop_hw):
        for ref in (w / h, h / w):
            if abs(ratio / ref - 1.0) <= ASPECT_TOLERANCE:
                return True
    return False


def _resize_nearest(masks: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """torch nearest resize of an N x H x W uint8 stack, staying uint8 (no float copy)."""
    stack = torch.from_numpy(np.ascontiguousarray(masks)).unsqueeze(0)
    out = F.interpolate(stack, size=size_hw, mode="nearest")
    return out.squeeze(0).numpy()


def load_candidates(
    masks_dir: str | Path,
    take: str,
    cam: str,
    frame: str | int,
    crop_hw: tuple[int, int],
    orig_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Load one image's candidates: masks uint8 [N, *crop_hw] and boxes float32 [N, 4].

    `orig_hw` is the size of the image file, used only to reject masks that belong to
    another image; `crop_hw` is its preprocessed size.
    """
    masks_path, boxes_path = candidate_paths(masks_dir, take, cam, frame)
    masks = _load_mask_array(masks_path)
    boxes = _load_boxes(boxes_path)
    crop_h, crop_w = (int(s) for s in crop_hw)

    if masks.size == 0:  # no proposal: one empty candidate keeps the image scorable
        if boxes.size != 0:
            raise bad_file(boxes_path, f"{len(boxes)} boxes for 0 masks in {masks_path.name}")
        return np.zeros((1, crop_h, crop_w), np.uint8), np.zeros((1, 4), np.float32)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise bad_file(masks_path, f"masks of shape {masks.shape}, expected N x H x W")
    masks = _as_binary_uint8(masks, masks_path)
    n, mask_h, mask_w = masks.shape

    if boxes.shape == (4,) and n == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise bad_file(boxes_path, f"boxes of shape {boxes.shape}, expected N x 4")
    if boxes.shape[0] != n:
        raise bad_file(boxes_path, f"{boxes.shape[0]} boxes for {n} masks in {masks_path.name}")
    boxes = boxes.astype(np.float32)
    if not np.isfinite(boxes).all():
        raise bad_file(boxes_path, "boxes hold NaN or infinite values")

    if (mask_h, mask_w) != (crop_h, crop_w):
        if not _aspect_ok((mask_h, mask_w), (crop_h, crop_w), orig_hw):
            h, w = orig_hw
            raise bad_file(
                masks_path, f"masks of an unexpected size {mask_h}x{mask_w} for an image of {h}x{w}"
            )
        masks = _resize_nearest(masks, (crop_h, crop_w))
        boxes[:, [0, 2]] *= crop_w / mask_w
        boxes[:, [1, 3]] *= crop_h / mask_h
    return masks, boxes
