"""Frame reading and the crop policy that makes images fit the backbone's patches (DINOv2's
14 pixels by default; DINOv3's are 16: read 16 for 14 below).

Portrait policy (the same at training and at evaluation): an image taller than wide is
stretched to landscape with a nearest resize to height = old width and width = old height
(the pixels are resampled, not rotated), as the reference does at training time so that a
batch stacks. The reference keeps portrait images portrait at evaluation while adding the
landscape position embeddings; we do not, so a portrait camera is seen the same way in both
phases and the matcher's landscape position grid fits its tokens.

After that, each side is cut to a multiple of 14 (`14 * floor(side / 14)`) with a second
nearest resize: 704x704 -> 700x700, 540x960 -> 532x952, portrait 960x540 -> 532x952. The
reference only resizes when the height is not a multiple of 14; we resize whenever either side
is not. Annotation and candidate masks are resized (nearest) straight to the crop size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from omama.backbones import DEFAULT_BACKBONE
from omama.errors import OmamaError, bad_file

log = logging.getLogger(__name__)

PATCH = DEFAULT_BACKBONE.patch
_SOI = b"\xff\xd8"


def _jpeg_problem(data: bytes) -> str | None:
    """Walk a JPEG's markers to its end-of-image marker (0xFFD9).

    cv2 decodes a truncated JPEG without failing (the missing rows come out gray), so the
    bytes are checked first. Entropy-coded data escapes 0xFF as 0xFF00, so a marker found
    there is real; an EOI inside an embedded EXIF thumbnail is skipped with its segment.
    Returns None for a complete file (trailing bytes after EOI are allowed) or a problem.
    """
    truncated = "truncated JPEG (the file ends before its end-of-image marker 0xFFD9)"
    n = len(data)
    i = 2
    while True:
        if i >= n:
            return truncated
        if data[i] != 0xFF:
            return f"corrupt JPEG (no marker at byte {i})"
        while i < n and data[i] == 0xFF:  # fill bytes may pad a marker
            i += 1
        if i >= n:
            return truncated
        marker = data[i]
        i += 1
        if marker == 0xD9:
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            continue
        if i + 2 > n:
            return truncated
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2:
            return f"corrupt JPEG (segment of length {length} at byte {i})"
        i += length
        if i > n:
            return truncated
        if marker == 0xDA:  # start of scan: skip the entropy-coded data to the next marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return truncated
                follower = data[j + 1]
                if follower == 0x00 or 0xD0 <= follower <= 0xD7:
                    i = j + 2
                elif follower == 0xFF:
                    i = j + 1
                else:
                    i = j
                    break


def read_image(path: str | Path, bgr: bool = False) -> np.ndarray:
    """Read an image file as an HxWx3 RGB (or, with `bgr`, OpenCV's BGR) uint8 array,
    refusing missing, corrupt or cut files."""
    path = Path(path)
    if not path.exists():
        raise bad_file(path, "image file missing")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise bad_file(path, f"cannot read image ({exc.strerror or exc})") from None
    if not data:
        raise bad_file(path, "image file is empty")
    if data.startswith(_SOI):
        problem = _jpeg_problem(data)
        if problem is not None:
            raise bad_file(path, problem)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise bad_file(path, "not a readable image (corrupt or unsupported format)")
    return image if bgr else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def crop_size(h: int, w: int, patch: int = PATCH) -> tuple[int, int]:
    """The (height, width) an h x w image becomes: landscape, each side a multiple of `patch`."""
    short, long = min(h, w), max(h, w)
    new_h, new_w = patch * (short // patch), patch * (long // patch)
    if new_h == 0 or new_w == 0:
        raise OmamaError(f"image of {h}x{w}: smaller than one {patch}x{patch} patch")
    return new_h, new_w


def preprocess_image(img: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Apply the portrait policy and the multiple-of-`patch` crop (both nearest resizes)."""
    h, w = img.shape[:2]
    new_h, new_w = crop_size(h, w, patch)
    if h > w:  # stretch to landscape first, as the reference's training does
        img = cv2.resize(img, (h, w), interpolation=cv2.INTER_NEAREST)
        h, w = w, h
    if (h, w) != (new_h, new_w):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return img


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a 0/1 mask (nearest) to (height, width) as uint8.

    A column-major mask (what pycocotools decodes an RLE to) is resized as its transpose,
    which is row-major without a copy: OpenCV's nearest rule picks rows and columns
    independently, so this gives the same pixels while sparing OpenCV a full-size copy of
    the source (2160x3840 for an exo annotation: ~14x faster).
    """
    mask = mask.astype(np.uint8, copy=False)
    h, w = size_hw
    if mask.shape[:2] == (h, w):
        return mask
    if mask.ndim == 2 and mask.flags.f_contiguous and not mask.flags.c_contiguous:
        small = cv2.resize(mask.T, (h, w), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(small.T)
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
