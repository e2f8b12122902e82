"""The candidate files of one image, in O-MaMa's format, written so that a killed run never
leaves a file that is read as good.

`{frame}_masks.npz`: one member `arr_0`, uint8 [N, H, W] of 0/1 (deflated, fixed zip
timestamp: the same masks give the same bytes); `{frame}_boxes.npy`: float32 [N, 4]. Each is
written to a temp name beside it and renamed; the masks first, so an image counts as done
only when its boxes file, the last one renamed, is there and both headers agree.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from omama.errors import OmamaError, bad_file
from omama.files import atomic_path, read_json, save_npz_deterministic, write_json

log = logging.getLogger(__name__)

SETTINGS_FILE = "omama-proposals.json"


def _npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return shape, dtype


def is_done(masks_path: Path, boxes_path: Path) -> bool:
    """Whether both files are there and hold what this command writes (headers only: N >= 1
    uint8 masks, N float32 boxes); anything else is written again."""
    if not (masks_path.is_file() and boxes_path.is_file()):
        return False
    try:
        with zipfile.ZipFile(masks_path) as z, z.open("arr_0.npy") as fh:
            m_shape, m_dtype = _npy_header(fh)
        with open(boxes_path, "rb") as fh:
            b_shape, b_dtype = _npy_header(fh)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return False
    return (
        len(m_shape) == 3
        and m_shape[0] >= 1
        and m_dtype == np.uint8
        and b_shape == (m_shape[0], 4)
        and b_dtype == np.float32
    )


def write_candidates(
    masks_path: Path, boxes_path: Path, masks: np.ndarray, boxes: np.ndarray
) -> None:
    """Write one image's files (masks, then boxes), each atomically."""
    with atomic_path(masks_path) as tmp:
        save_npz_deterministic(tmp, masks.astype(np.uint8, copy=False))
    with atomic_path(boxes_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, boxes.astype(np.float32, copy=False), allow_pickle=False)


def read_back(masks_path: Path, boxes_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(masks, boxes) of one image's files, as written."""
    with np.load(masks_path, allow_pickle=False) as z:
        masks = z["arr_0"]
    return masks, np.load(boxes_path, allow_pickle=False)


def check_settings(masks_dir: Path, settings: dict) -> None:
    """Record the settings in `masks_dir/omama-proposals.json`, or refuse a folder whose
    candidates were made with other ones (files made with two settings never mix)."""
    path = masks_dir / SETTINGS_FILE
    if path.exists():
        old = read_json(path, "proposals settings file")
        if not isinstance(old, dict):
            raise bad_file(path, "not a settings object")
        for key, value in settings.items():
            if old.get(key) != value:
                raise OmamaError(
                    f"{path}: candidates here were made with {key}={old.get(key)!r}, this run "
                    f"asks {value!r}; use another --masks-dir or delete this folder"
                )
        return
    write_json(settings, path, indent=1)
    log.info("%s: settings recorded", path)
