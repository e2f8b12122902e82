"""The cache's record format, defined once: every dataset of a record, its dtype and shape.

Two record kinds live in a shard:

    img/{take}/{cam}/{frame}/               one image: tokens, crop, annotated objects
    cand/{direction}/{take}/{cam}/{frame}/  one destination image's candidate masks

Shapes are written in symbols: T patch tokens (grid rows x columns), H x W the crop size
(the grid times the backbone's patch P), K annotated objects of the image, N candidates, C the
backbone's token width and D = 2C a descriptor's (`omama.backbones`; the cache's settings
record the backbone). `readers` says which
stage reads a dataset (train, eval, precompute, verify), so the loader's field lists and the
verifier's checks follow the format. The shard writer creates datasets from these fields, the
verifier checks shapes and dtypes against them and `--dry-run` sizes array bytes from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from omama.backbones import DEFAULT_BACKBONE, Backbone

STR = "str"  # variable-length UTF-8 strings (JSON RLE, object names)
Dim = int | str  # a fixed length or a symbol (T, H, W, K, N, C, D)


@dataclass(frozen=True)
class Field:
    """One dataset of a record."""

    name: str
    dtype: str  # numpy dtype name, or STR
    shape: tuple[Dim, ...]
    kind: str  # what `--dry-run` counts it as: tokens, images, descriptors, adjacency, rle
    readers: tuple[str, ...]  # stages that read it; verify reads every field

    def resolve(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """The concrete shape for the symbols' `sizes` (-1 for an unknown symbol)."""
        return tuple(d if isinstance(d, int) else sizes.get(d, -1) for d in self.shape)

    def nbytes(self, sizes: dict[str, int]) -> int:
        """Bytes of the array (0 for strings, whose length depends on their text)."""
        if self.dtype == STR:
            return 0
        return prod(self.resolve(sizes)) * np.dtype(self.dtype).itemsize


def _field(name: str, dtype: str, shape: tuple[Dim, ...], kind: str, *readers: str) -> Field:
    return Field(name, dtype, shape, kind, (*readers, "verify"))


_TOKEN_READERS = ("train", "eval", "precompute")
TOKENS_FP16 = _field("tokens", "float16", ("T", "C"), "tokens", *_TOKEN_READERS)
# --features int8 (omama.cache.quant): int8 values and one fp16 scale per token
TOKENS_INT8 = _field("tokens", "int8", ("T", "C"), "tokens", *_TOKEN_READERS)
TOKEN_SCALE = _field("token_scale", "float16", ("T",), "tokens", *_TOKEN_READERS)

_OBJECT_FIELDS = (
    _field("image", "uint8", ("H", "W", 3), "images", "eval"),  # the crop, RGB
    _field("obj_desc", "float32", ("K", "D"), "descriptors", "train", "eval"),
    _field("obj_box", "float32", ("K", 4), "descriptors"),  # tight xywh, crop frame
    _field("obj_names", STR, ("K",), "rle"),
    _field("obj_rle", STR, ("K",), "rle", "eval"),  # JSON RLE at annotation resolution
)
IMAGE_FIELDS = (TOKENS_FP16, *_OBJECT_FIELDS)
IMAGE_FIELDS_INT8 = (TOKENS_INT8, TOKEN_SCALE, *_OBJECT_FIELDS)
# attributes of an image record: `grid` (patch rows, cols; train, eval) and `orig_hw` (the
# JPEG's height, width before the portrait policy and crop; eval)
IMAGE_ATTRS = ("grid", "orig_hw")

CAND_FIELDS = (
    _field("desc", "float32", ("N", "D"), "descriptors", "train", "eval"),
    _field("boxes", "float32", ("N", 4), "descriptors"),  # xywh, crop frame
    _field("adj", "uint8", ("N", "N"), "adjacency", "train"),  # order-2 Delaunay
    _field("rle", STR, ("N",), "rle", "eval"),  # JSON RLE at the crop size
    _field("anchor", "int32", ("K",), "descriptors", "train"),  # best box IoU; -1: absent
)


def image_fields(quantized: bool) -> tuple[Field, ...]:
    """An image record's datasets: fp16 tokens, or int8 tokens with their scales."""
    return IMAGE_FIELDS_INT8 if quantized else IMAGE_FIELDS


def widths(backbone: Backbone) -> dict[str, int]:
    """The width symbols of a cache of this backbone."""
    return {"C": backbone.width, "D": backbone.desc_dim}


def image_sizes(
    grid: tuple[int, int], objects: int, backbone: Backbone = DEFAULT_BACKBONE
) -> dict[str, int]:
    """The symbols of an image record with this patch grid and object count."""
    p = backbone.patch
    return {"T": grid[0] * grid[1], "H": grid[0] * p, "W": grid[1] * p, "K": objects} | widths(
        backbone
    )


def cand_sizes(
    candidates: int, objects: int, backbone: Backbone = DEFAULT_BACKBONE
) -> dict[str, int]:
    """The symbols of a candidate record."""
    return {"N": candidates, "K": objects} | widths(backbone)


def read_by(stage: str, fields: tuple[Field, ...]) -> tuple[str, ...]:
    """Names of the fields `stage` reads, in record order."""
    return tuple(f.name for f in fields if stage in f.readers)


# What a training read touches (tokens with their scales when int8, and the descriptor rows).
TRAIN_IMAGE_FIELDS = read_by("train", IMAGE_FIELDS_INT8)  # tokens, token_scale, obj_desc
TRAIN_CAND_FIELDS = read_by("train", CAND_FIELDS)  # desc, adj, anchor
EVAL_IMAGE_FIELDS = read_by("eval", IMAGE_FIELDS_INT8)
EVAL_CAND_FIELDS = read_by("eval", CAND_FIELDS)
