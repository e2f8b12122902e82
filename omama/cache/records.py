"""What one cached image and one cached candidate set hold, and what a training sample names.

The records as Python objects; how they are laid out in a shard is `omama.cache.schema`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def image_key(take: str, cam: str, frame: str) -> str:
    """Unique image id; also its HDF5 group path below `img/`."""
    return f"{take}/{cam}/{int(frame)}"


@dataclass
class ImageRecord:
    """Backbone output and annotated-object descriptors of one image."""

    tokens: np.ndarray  # float16 [gh*gw, C], row-major patch grid (int8 with token_scale)
    image: np.ndarray  # uint8 [H, W, 3] RGB at the crop size
    grid: tuple[int, int]
    orig_hw: tuple[int, int]  # the JPEG's size before the portrait policy and crop
    obj_names: list[str]
    obj_desc: np.ndarray  # float32 [K, 2C] descriptor of each annotated object's mask
    obj_box: np.ndarray  # float32 [K, 4] tight box (x, y, w, h) in the crop frame
    obj_rle: list[str]  # JSON of each object's RLE at annotation resolution (ground truth)
    # 8-bit storage (--features int8, omama.cache.quant): one fp16 scale per token
    token_scale: np.ndarray | None = None


@dataclass
class CandidateRecord:
    """Everything the trainer and evaluator need about one image's candidate masks."""

    desc: np.ndarray  # float32 [N, 2C] (C: the backbone's token width)
    boxes: np.ndarray  # float32 [N, 4] in the crop frame
    adj: np.ndarray  # bool [N, N] order-2 Delaunay adjacency
    rle: list[str]  # JSON RLE of each candidate at the crop size (the predicted mask)
    anchor: np.ndarray  # int32 [K]: best-box-IoU candidate per object of the image, -1 if absent


@dataclass(frozen=True)
class Sample:
    """One pair of a split, resolved to cached images and object rows."""

    take: str
    obj: str
    src_cam: str
    dst_cam: str
    frame: str
    src: str  # image key of the source image
    dst: str  # image key of the destination image
    src_k: int  # row of the object in the source image's objects
    dst_k: int  # row in the destination image's objects, -1 when not visible there

    @property
    def visible(self) -> bool:
        return self.dst_k >= 0

    def to_json(self) -> dict:
        return asdict(self)
