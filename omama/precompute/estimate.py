"""`omama-precompute --dry-run`: what a split will put in the cache, before any work.

Reads only file headers: each frame's size from its JPEG header (Pillow opens lazily and does
not decode), each candidate file's mask count from the `.npy` header inside the npz (numpy's
`read_magic` / `read_array_header_*` on the zip member: only its first bytes are inflated),
and the small boxes `.npy` files. Byte counts are exact for the arrays (tokens, images,
descriptors, adjacency, boxes; sized from `omama.cache.schema`) and for the objects' RLE
strings; candidate RLE strings and HDF5 bookkeeping are estimated (see `RLE_*` and `HDF5_*`).
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from omama.backbones import DEFAULT_BACKBONE, Backbone, backbone_info
from omama.cache import schema
from omama.cache.manifest import load_manifest
from omama.config import require
from omama.dataset.candidates import candidate_paths
from omama.dataset.images import crop_size
from omama.dataset.layout import Annotations, default_masks_dir, image_path
from omama.precompute.jobs import SplitImages, table_images
from omama.precompute.options import PrecomputeConfig
from omama.precompute.parts import Part, assign
from omama.precompute.plan import make_plan

log = logging.getLogger(__name__)

# A compact mask's column-major COCO RLE has about two runs per column it spans, about
# 1.5 characters each; plus the JSON around the counts string.
RLE_PER_COLUMN = 3
RLE_FIXED = 40
# HDF5 object headers and group indices, per dataset (measured: ~470 B with libver=latest).
HDF5_PER_DATASET = 512
KINDS = ("tokens", "images", "descriptors", "adjacency", "rle", "other")


@dataclass
class CachePlan:
    direction: str
    split: str
    pairs: int = 0
    images: int = 0
    dest_images: int = 0
    candidates: int = 0  # candidate masks over all destination images
    objects: int = 0  # annotated object masks over all images
    cached_images: int = 0
    cached_cand_sets: int = 0
    bytes: dict[str, int] = field(default_factory=dict)  # the whole split, by kind
    new_bytes: int = 0  # what is not in the cache yet
    missing: list[str] = field(default_factory=list)
    parts: list[tuple[int, int, int]] = field(default_factory=list)  # (images, dest, candidates)
    backbone: str = ""  # named in the first line when not the default

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def jpeg_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header alone."""
    with Image.open(path) as im:
        w, h = im.size
    return int(h), int(w)


def npz_mask_count(path: Path) -> tuple[int, tuple[int, int] | None]:
    """(candidates stored, mask H x W) from the header of `arr_0.npy` in the npz."""
    with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(f)
    if len(shape) == 2:
        return 1, (int(shape[0]), int(shape[1]))
    if len(shape) != 3 or shape[0] == 0:
        return 1, None  # no proposal: one empty candidate stands in
    return int(shape[0]), (int(shape[1]), int(shape[2]))


def array_bytes(fields: tuple[schema.Field, ...], sizes: dict[str, int]) -> dict[str, int]:
    """Bytes of a record's arrays by kind, plus the HDF5 headers of its datasets and group."""
    out = dict.fromkeys(KINDS, 0)
    for f in fields:
        out[f.kind] += f.nbytes(sizes)
    out["other"] = (len(fields) + 1) * HDF5_PER_DATASET
    return out


def estimate_cache(
    images: SplitImages,
    ann: Annotations,
    root: Path,
    masks_dir: Path | None,
    cache: Path | None,
    direction: str,
    split: str,
    pairs: int,
    features: str = "fp16",
    parts: int = 1,
    backbone: Backbone = DEFAULT_BACKBONE,
) -> CachePlan:
    """Count images, candidates and bytes of the split's records from file headers, for the
    crop and widths of `backbone`."""
    masks_dir = masks_dir or default_masks_dir(root, split, direction)
    manifest = load_manifest(cache) if cache is not None and Path(cache).exists() else None
    have_img = manifest.images if manifest else {}
    have_cand = manifest.candidates.get(direction, {}) if manifest else {}
    plan = CachePlan(direction, split, pairs=pairs)
    plan.backbone = "" if backbone == DEFAULT_BACKBONE else f"backbone {backbone.name}"
    plan.images, plan.dest_images = len(images.where), len(images.dest)
    total = dict.fromkeys(KINDS, 0)
    n_cands: dict[str, int] = {}
    for key, (take, cam, frame) in images.where.items():
        try:
            hw = crop_size(*jpeg_size(image_path(root, take, cam, frame)), backbone.patch)
        except Exception as exc:  # any unreadable header: report it, keep planning
            plan.missing.append(f"{image_path(root, take, cam, frame)} ({type(exc).__name__})")
            continue
        objs = ann.objects_at(take, cam, frame)
        plan.objects += len(objs)
        grid = (hw[0] // backbone.patch, hw[1] // backbone.patch)
        rec = array_bytes(
            schema.image_fields(quantized=features == "int8"),
            schema.image_sizes(grid, len(objs), backbone),
        )
        rec["rle"] += sum(len(json.dumps(ann.rle(take, o, cam, frame))) + len(o) for o in objs)
        records = [(rec, key in have_img)]
        if key in images.dest:
            cand = _candidate_bytes(masks_dir, take, cam, frame, hw, len(objs), plan, backbone)
            if cand is not None:
                n_cands[key] = cand.pop("n")
                records.append((cand, key in have_cand))
        plan.cached_images += records[0][1]
        plan.cached_cand_sets += len(records) > 1 and records[1][1]
        for rec, done in records:
            for kind, n in rec.items():
                total[kind] += n
            plan.new_bytes += 0 if done else sum(rec.values())
    plan.candidates = sum(n_cands.values())
    plan.bytes = total
    if parts > 1:
        for i in range(parts):
            mine = assign(images.where, images.dest, Part(i, parts))
            dest = mine & images.dest
            plan.parts.append((len(mine), len(dest), sum(n_cands.get(k, 0) for k in mine)))
    return plan


def _candidate_bytes(
    masks_dir: Path,
    take: str,
    cam: str,
    frame: str,
    hw: tuple[int, int],
    k: int,
    plan: CachePlan,
    backbone: Backbone,
) -> dict | None:
    masks_path, boxes_path = candidate_paths(masks_dir, take, cam, frame)
    try:
        n, mask_hw = npz_mask_count(masks_path)
        boxes = np.load(boxes_path, allow_pickle=False).reshape(-1, 4).astype(np.float64)
    except Exception as exc:  # any unreadable file: report it, keep planning
        plan.missing.append(f"{masks_path} ({type(exc).__name__})")
        return None
    scale = hw[1] / mask_hw[1] if mask_hw else 1.0
    widths = np.clip(boxes[:, 2] * scale, 0, hw[1]) if len(boxes) else np.zeros(n)
    rec = array_bytes(schema.CAND_FIELDS, schema.cand_sizes(n, k, backbone))
    rec["rle"] += int(np.sum(RLE_PER_COLUMN * np.ceil(widths) + RLE_FIXED))
    return {"n": n, **rec}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_plan(plan: CachePlan, pairs_in_file: int | None = None) -> str:
    """The plan as the lines `--dry-run` prints."""
    pairs = f"{plan.pairs} pairs" + (
        f" (of {pairs_in_file} in the file)" if pairs_in_file not in (None, plan.pairs) else ""
    )
    lines = [
        f"{plan.direction} {plan.split}: {pairs}" + (f", {plan.backbone}" if plan.backbone else ""),
        f"  unique images      {plan.images} ({plan.dest_images} destination images, "
        f"{plan.objects} annotated object masks)",
        f"  candidate masks    {plan.candidates}",
        f"  already cached     {plan.cached_images} images, {plan.cached_cand_sets} candidate sets",
    ]
    for kind, n in plan.bytes.items():
        lines.append(f"  {kind:18s} {_size(n)}")
    lines.append(f"  total              {_size(plan.total_bytes)} ({plan.total_bytes} bytes)")
    lines.append(f"  still to write     {_size(plan.new_bytes)}")
    for i, (n_img, n_dst, n_cand) in enumerate(plan.parts):
        lines.append(
            f"  part {i} of {len(plan.parts)}       "
            f"{n_img} images, {n_dst} destination, {n_cand} candidates"
        )
    if plan.missing:
        lines.append(f"  unreadable files   {len(plan.missing)}, first: {plan.missing[0]}")
    return "\n".join(lines)


def dry_run(cfg: PrecomputeConfig) -> str:
    """`--dry-run`: the plan's text; nothing is written."""
    require(cfg, "root")
    root = Path(cfg.root)
    ann = Annotations(root)
    chosen = make_plan(cfg, ann)
    plan = estimate_cache(
        table_images(chosen.samples),
        ann,
        root,
        cfg.masks_dir,
        cfg.cache,
        cfg.direction,
        cfg.split,
        len(chosen.samples),
        cfg.features,
        cfg.parts,
        backbone_info(cfg.backbone),
    )
    return format_plan(plan, chosen.subset["pairs_in_file"] if chosen.subset else None)
