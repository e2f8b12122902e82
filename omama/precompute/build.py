"""The compute loop of one part: images read and decoded in workers, the backbone in batches of
one size, descriptors pooled, records written to shards.

    jobs -> (DataLoader workers) decode, crop, masks, adjacency, quarter-size masks
         -> (main thread) backbone -> stored tokens -> descriptors -> records
         -> (writer thread) ShardWriter: HDF5 writes, fsync, sha256, publish

The writer thread takes records in order and overlaps the next batch's backbone; the shards
are the same bytes as written inline.

Each published shard is handed to the caller's `publish`, which lists it (manifest.json or a
part manifest), so a killed run keeps every listed shard and resumes from there.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from omama import rle
from omama.backbones import backbone_info
from omama.cache.manifest import Manifest
from omama.cache.quant import StoredTokens, store_batch
from omama.cache.reader import Cache
from omama.cache.records import CandidateRecord, ImageRecord
from omama.cache.writer import ShardWriter
from omama.dataset.candidates import load_candidates
from omama.dataset.images import crop_size, preprocess_image, read_image, resize_mask
from omama.dataset.layout import Annotations, default_masks_dir, image_path
from omama.errors import OmamaError
from omama.masks import count_boxes, row_col_counts
from omama.precompute import adjacency, backbone, descriptors
from omama.precompute.jobs import Job
from omama.precompute.options import PrecomputeConfig
from omama.serial import SerialWrites

log = logging.getLogger(__name__)


@dataclass
class Built:
    """What one build computed, and the images it left out as bad (--skip-bad)."""

    images: int = 0
    candidate_sets: int = 0
    bad: list[dict] = field(default_factory=list)


class PrepareDataset(Dataset):
    """CPU side of one image, run in DataLoader workers to overlap with the backbone."""

    def __init__(
        self, jobs: list[Job], root: Path, masks_dir: Path, ann: Annotations, patch: int
    ) -> None:
        self.jobs, self.root, self.masks_dir, self.ann = jobs, root, masks_dir, ann
        self.patch = patch  # the backbone's: each crop side a multiple of it

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        job = self.jobs[i]
        try:
            return self._prepare(job)
        except OmamaError as exc:  # carried to the main process as data: one clean line
            return {"job": job, "error": str(exc)}

    def _prepare(self, job: Job) -> dict:
        path = image_path(self.root, job.take, job.cam, job.frame)
        raw = read_image(path)
        orig_hw = (int(raw.shape[0]), int(raw.shape[1]))
        image = preprocess_image(raw, self.patch)
        hw = (int(image.shape[0]), int(image.shape[1]))
        want = crop_size(*orig_hw, self.patch)
        if hw != want:
            raise OmamaError(f"{path}: preprocessing gave {hw}, expected {want}")
        out: dict = {"job": job, "image": image, "orig_hw": orig_hw, "hw": hw}
        obj_rle, obj_masks = [], []
        for obj in job.objects:
            r = self.ann.rle(job.take, obj, job.cam, job.frame)
            where = f"{self.ann.path(job.take)} [{obj}/{job.cam}/{job.frame}]"
            mask = rle.decode(r, where)
            rle.check_aspect(r, orig_hw, where, str(path))
            obj_masks.append(resize_mask(mask, hw))
            obj_rle.append(json.dumps(r))
        out["obj_rle"] = obj_rle
        objs = np.stack(obj_masks) if obj_masks else np.zeros((0, *hw), dtype=np.uint8)
        # what the main process needs of the masks: boxes, emptiness, the quarter-size masks
        out["obj_boxes"] = descriptors.tight_boxes(objs)
        out["obj_nonempty"] = objs.any(axis=(1, 2))
        out["obj_small"] = descriptors.quarter_masks(objs)
        if job.need_cands:
            masks, boxes = load_candidates(
                self.masks_dir, job.take, job.cam, job.frame, hw, orig_hw
            )
            out["cand_small"] = descriptors.quarter_masks(masks)
            out["cand_boxes"] = boxes
            counts = row_col_counts(masks)  # one pass: centroids and the RLEs' boxes
            out["cand_adj"] = adjacency.candidate_adjacency(masks, order=2, counts=counts)
            boxes = count_boxes(*counts)
            out["cand_rle"] = [
                json.dumps(rle.encode_boxed(m, b)) for m, b in zip(masks, boxes, strict=True)
            ]
        return out


def _as_is(item: dict) -> dict:
    """Keep prepared items as numpy; the default would turn tuples into lists."""
    return item


class TokenSource:
    """Patch tokens of prepared items: from the backbone (in the storage form `features`
    names) for new images, from the cache for images it already holds."""

    def __init__(
        self,
        model: torch.nn.Module | None,
        device: torch.device,
        features: str,
        cached: Callable[[str], np.ndarray],
    ) -> None:
        self.model, self.device, self.features, self.cached = model, device, features, cached

    def __call__(self, items: list[dict]) -> list[tuple[StoredTokens | None, torch.Tensor]]:
        """Per item: (what its image record stores, or None when the cache holds it already;
        the fp16 tokens its descriptors are pooled from, which every reader gets back)."""
        out: dict[str, tuple[StoredTokens | None, torch.Tensor]] = {}
        need = [it for it in items if it["job"].need_image]
        if need:
            batch = torch.from_numpy(np.stack([it["image"] for it in need])).to(self.device)
            toks = backbone.patch_tokens(self.model, batch).to(torch.float16)
            stored_all = store_batch(toks, self.features)  # one copy to the host per batch
            for it, stored in zip(need, stored_all, strict=True):
                out[it["job"].key] = (stored, stored.readback)
        for it in items:
            if not it["job"].need_image:  # tokens exist in the cache: reuse, no backbone
                key = it["job"].key
                out[key] = (None, torch.from_numpy(self.cached(key)).to(self.device))
        return [out[it["job"].key] for it in items]


def image_record(
    item: dict,
    stored: StoredTokens,
    dense: torch.Tensor,
    obj_boxes: np.ndarray,
    patch: int,
    to_host: bool = True,
) -> ImageRecord:
    """The image record of a prepared item: stored tokens, crop, object descriptors (left
    on the device when not `to_host`: `descriptors_to_host` copies a batch's at once)."""
    h, w = item["hw"]
    obj_desc = descriptors.mask_descriptors(
        dense,
        torch.from_numpy(item["obj_small"]).to(dense.device),
        torch.as_tensor(obj_boxes).to(dense.device),
        (h, w),
    )
    return ImageRecord(
        tokens=stored.tokens,
        token_scale=stored.token_scale,
        image=item["image"],
        grid=(h // patch, w // patch),
        orig_hw=item["orig_hw"],
        obj_names=list(item["job"].objects),
        obj_desc=obj_desc.cpu().numpy() if to_host else obj_desc,
        obj_box=np.asarray(obj_boxes, dtype=np.float32).reshape(-1, 4),
        obj_rle=item["obj_rle"],
    )


def candidate_record(
    item: dict, dense: torch.Tensor, obj_boxes: np.ndarray, to_host: bool = True
) -> CandidateRecord:
    """The candidate record of a prepared destination image (descriptors as in
    `image_record`)."""
    masks = torch.from_numpy(item["cand_small"]).to(dense.device)
    boxes = torch.from_numpy(item["cand_boxes"]).to(dense.device)
    cand_desc = descriptors.mask_descriptors(dense, masks, boxes, item["hw"])
    nonempty = item["obj_nonempty"]
    anchor = np.full(len(nonempty), -1, dtype=np.int32)
    for k in np.flatnonzero(nonempty):
        anchor[k] = descriptors.anchor_index(item["cand_boxes"], obj_boxes[k])
    return CandidateRecord(
        desc=cand_desc.cpu().numpy() if to_host else cand_desc,
        boxes=item["cand_boxes"],
        adj=item["cand_adj"],
        rle=item["cand_rle"],
        anchor=anchor,
    )


def descriptors_to_host(records: list[ImageRecord | CandidateRecord | None]) -> None:
    """The records' device descriptors (`obj_desc`, `desc`) to the host with one copy for
    the whole batch, in place (the same float32 values as one copy each)."""
    held = [(r, "obj_desc" if isinstance(r, ImageRecord) else "desc") for r in records if r]
    tensors = [getattr(r, f) for r, f in held]
    if not tensors:
        return
    host = torch.cat(tensors).cpu().numpy()  # all [n, 2C] float32
    start = 0
    for (rec, name), t in zip(held, tensors, strict=True):
        setattr(rec, name, host[start : start + len(t)])
        start += len(t)


def build(
    cfg: PrecomputeConfig,
    jobs: list[Job],
    work: Manifest,
    weights: Path,
    device: torch.device,
    ann: Annotations,
    prefix: str,
    publish: Callable[[Manifest, str, dict, list[str], list[tuple[str, str]]], None],
    on_publish: Callable[[str, list[str], list[tuple[str, str]]], None] | None = None,
) -> Built:
    """Compute `jobs` into shards `{prefix}-NNNNN.h5`, each listed by `publish(work, name,
    info, images, candidate sets)` (the split's listing) as it closes; `on_publish(shard,
    image keys, (direction, key) candidate sets)` runs just before the listing."""
    cache, root = Path(cfg.cache), Path(cfg.root)
    masks_dir = cfg.masks_dir or default_masks_dir(root, cfg.split, cfg.direction)
    spec = backbone_info(cfg.backbone)
    need_model = any(j.need_image for j in jobs)
    model = backbone.load_backbone(weights, device, spec) if need_model else None
    reader = Cache(cache, work)  # tokens already cached, as this run lists them
    tokens = TokenSource(model, device, cfg.features, reader.tokens)
    on_shard = functools.partial(_list_shard, work, publish, on_publish)
    writer = ShardWriter(cache, prefix, on_shard, max_records=cfg.shard_records, backbone=spec)
    loader = DataLoader(
        PrepareDataset(jobs, root=root, masks_dir=masks_dir, ann=ann, patch=spec.patch),
        batch_size=None,
        collate_fn=_as_is,
        num_workers=cfg.workers,
        prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False,
    )
    writes = SerialWrites()  # HDF5 writes, fsync and hashing overlap the next batch
    try:
        with tqdm(total=len(jobs), desc="precompute", unit="img", dynamic_ncols=True) as bar:
            batches = Batches(cfg, spec.patch, tokens, writer, writes, bar)
            for item in loader:
                if "error" in item:
                    if not cfg.skip_bad:
                        raise OmamaError(item["error"])
                    log.warning("skipping bad item: %s", item["error"])
                    batches.built.bad.append({"key": item["job"].key, "error": item["error"]})
                    bar.update(1)
                    continue
                batches.add(item)
            batches.flush_all()
            writes.drain()
        writer.close_shard()
    except BaseException:
        writes.stop()
        writer.abort()
        raise
    finally:
        reader.close()
    return batches.built


def _list_shard(
    work: Manifest,
    publish: Callable[[Manifest, str, dict, list[str], list[tuple[str, str]]], None],
    on_publish: Callable[[str, list[str], list[tuple[str, str]]], None] | None,
    name: str,
    info: dict,
    images: list[str],
    cands: list[tuple[str, str]],
) -> None:
    """A closed shard listed: `on_publish` first (e.g. the records' input fingerprints),
    then `publish`, the split's listing."""
    if on_publish is not None:
        on_publish(name, images, cands)
    publish(work, name, info, images, cands)


class Batches:
    """Prepared items gathered into batches of one crop size; a full batch goes through the
    backbone (or the cache's tokens) to its records, which the writer thread stores."""

    def __init__(
        self,
        cfg: PrecomputeConfig,
        patch: int,
        tokens: TokenSource,
        writer: ShardWriter,
        writes: SerialWrites,
        bar: tqdm,
    ) -> None:
        self.direction, self.batch_size, self.patch = cfg.direction, cfg.batch_size, patch
        self.tokens, self.writer, self.writes, self.bar = tokens, writer, writes, bar
        self.buckets: dict[tuple[int, int], list[dict]] = defaultdict(list)
        self.built = Built()

    def add(self, item: dict) -> None:
        """One prepared item; its batch computed once it holds --batch-size items."""
        bucket = self.buckets[item["hw"]]
        bucket.append(item)
        if len(bucket) >= self.batch_size:
            self.flush(item["hw"])

    def flush_all(self) -> None:
        """The last, partly filled batches."""
        for hw in list(self.buckets):
            self.flush(hw)

    def flush(self, hw: tuple[int, int]) -> None:
        """The records of the batch of crop size `hw`, handed to the writer thread."""
        items = self.buckets.pop(hw)
        patch = self.patch
        done: list[tuple[str, ImageRecord | None, CandidateRecord | None]] = []
        for item, (stored, toks) in zip(items, self.tokens(items), strict=True):
            # descriptors always come from the tokens as stored, so a candidate set added by
            # a later run matches one computed together with the image
            grid = (hw[0] // patch, hw[1] // patch)
            dense = descriptors.dense_map(toks, grid, patch)
            obj_boxes = item["obj_boxes"]
            job = item["job"]
            img = cand = None
            if stored is not None:
                img = image_record(item, stored, dense, obj_boxes, patch, to_host=False)
                self.built.images += 1
            if job.need_cands:
                cand = candidate_record(item, dense, obj_boxes, to_host=False)
                self.built.candidate_sets += 1
            done.append((job.key, img, cand))
        descriptors_to_host([r for _, img, cand in done for r in (img, cand)])  # one copy
        for key, img, cand in done:
            self.writes.submit(self.store, key, img, cand)

    def store(self, key: str, img: ImageRecord | None, cand: CandidateRecord | None) -> None:
        """On the writer thread: an image's records into the shard (publishing full ones)."""
        if img is not None:
            self.writer.add_image(key, img)
        if cand is not None:
            self.writer.add_candidates(self.direction, key, cand)
        self.bar.update(1)  # counted when written: computed and stored
