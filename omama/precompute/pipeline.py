"""omama-precompute: every unique image through the backbone once, everything else derived once.

Flow: pairs -> unique images -> (workers) decode, crop, masks, adjacency -> (main) backbone
in batches of one size -> descriptors -> HDF5 shards -> manifest -> the split's sample list.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from omama import dist, rle
from omama.files import write_json
from omama.cache import quant
from omama.cache.manifest import (
    Manifest,
    cache_lock,
    check_settings,
    load_manifest,
    save_manifest,
    save_samples,
)
from omama.cache.reader import read_tokens
from omama.cache.records import CandidateRecord, ImageRecord, Sample, image_key
from omama.cache.shards import ShardReader, ShardWriter
from omama.config import default_device, default_workers, opt
from omama.dataset.candidates import load_candidates
from omama.dataset.images import crop_size, preprocess_image, read_image, resize_mask
from omama.dataset.layout import (
    DIRECTIONS,
    Annotations,
    Pair,
    default_masks_dir,
    default_pairs_path,
    image_path,
    load_pairs,
    split_takes,
    validate_pairs,
)
from omama.errors import OmamaError
from omama.precompute import adjacency, backbone, descriptors
from omama.precompute.subset import select_fraction, subset_record

log = logging.getLogger(__name__)

PATCH = 14


@dataclass
class PrecomputeConfig:
    root: Path | None = opt(None, "dataset root (holds processed/, dataset_jsons/, Masks_*)")
    direction: str = opt("exo2ego", "exo2ego (source exo, destination ego) or ego2exo", DIRECTIONS)
    split: str = opt("train", "which split's pairs to cache", ("train", "val", "test"))
    cache: Path | None = opt(None, "cache folder; several runs (splits, directions) share it")
    pairs: Path | None = opt(
        None, "pair file (default ROOT/dataset_jsons/{split}_{set}_pairs.json)"
    )
    masks_dir: Path | None = opt(None, "candidate masks (default ROOT/Masks_{SPLIT}_{DIRECTION})")
    weights: Path | None = opt(None, "DINOv2 ViT-B/14 reg4 weights file (Meta .pth or timm)")
    random_init: bool = opt(False, "use a seeded random-init backbone instead of --weights")
    seed: int = opt(0, "seed of the --pairs-fraction subset and of the random-init backbone")
    device: str = opt(default_device(), "cpu or cuda", ("cpu", "cuda"))
    batch_size: int = opt(16, "images per backbone batch", low=1)
    workers: int = opt(default_workers(), "CPU workers decoding images and masks", low=0)
    skip_bad: bool = opt(False, "log bad items to CACHE/reports/ and carry on instead of stopping")
    shard_records: int = opt(256, "records per HDF5 shard before a new shard starts", low=1)
    features: str = opt(
        "fp16", "token storage: fp16, or int8 with one fp16 scale per token", ("fp16", "int8")
    )
    pairs_fraction: float = opt(
        1.0, "cache a seeded fraction of the pairs (the reference trains on 0.2); see --seed", low=0
    )
    shard_index: int | None = opt(
        None, "job arrays: compute part I of --num-shards; the last part done merges", low=0
    )
    num_shards: int = opt(1, "job arrays: number of parts (torchrun: the world size)", low=1)
    merge: bool = opt(False, "only merge the finished parts of this split into manifest.json")
    dry_run: bool = opt(False, "only print the images, candidates and bytes the cache will take")
    verify: bool = opt(False, "only check --cache (shard sha256, records, samples); exit 0 or 2")


@dataclass
class PrecomputeReport:
    images_computed: int = 0
    candidate_sets_computed: int = 0
    images_reused: int = 0
    samples: int = 0
    bad: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    part: str = ""  # "i-of-n" for one part of a sharded run
    merged: bool = False  # a sharded run: this process merged the parts into manifest.json


def cache_settings(weights_sha: str, features: str = "fp16") -> dict:
    """Everything that changes cached bytes; a cache built otherwise is refused."""
    return {
        "backbone": "vit_base_patch14_reg4_dinov2",
        "weights_sha256": weights_sha,
        "patch": PATCH,
        "portrait_policy": "stretch-to-landscape",
        "features": "float16" if features == "fp16" else "int8+float16-scale-per-token",
        "descriptor": "mask-mean+context100-mean@1/4",
        "adjacency_order": 2,
    }


@dataclass(frozen=True)
class Job:
    key: str
    take: str
    cam: str
    frame: str
    objects: tuple[str, ...]
    need_image: bool  # backbone + object descriptors
    need_cands: bool  # candidate descriptors, adjacency, anchors


class PrepareDataset(Dataset):
    """CPU side of one image, run in DataLoader workers to overlap with the backbone."""

    def __init__(self, jobs: list[Job], root: Path, masks_dir: Path, ann: Annotations) -> None:
        self.jobs, self.root, self.masks_dir, self.ann = jobs, root, masks_dir, ann

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
        image = preprocess_image(raw)
        hw = (int(image.shape[0]), int(image.shape[1]))
        if hw != crop_size(*orig_hw):
            raise OmamaError(f"{path}: preprocessing gave {hw}, expected {crop_size(*orig_hw)}")
        out: dict = {"job": job, "image": image, "orig_hw": orig_hw, "hw": hw}
        obj_rle, obj_masks = [], []
        for obj in job.objects:
            r = self.ann.rle(job.take, obj, job.cam, job.frame)
            where = f"{self.ann.path(job.take)} [{obj}/{job.cam}/{job.frame}]"
            obj_masks.append(resize_mask(rle.decode(r, where), hw))
            obj_rle.append(json.dumps(r))
        out["obj_rle"] = obj_rle
        out["obj_masks"] = np.stack(obj_masks) if obj_masks else np.zeros((0, *hw), dtype=np.uint8)
        if job.need_cands:
            masks, boxes = load_candidates(
                self.masks_dir, job.take, job.cam, job.frame, hw, orig_hw
            )
            out["cand_masks"] = masks
            out["cand_boxes"] = boxes
            out["cand_adj"] = adjacency.candidate_adjacency(masks, order=2)
            out["cand_rle"] = [json.dumps(rle.encode(m)) for m in masks]
        return out


def _as_is(item: dict) -> dict:
    """Keep prepared items as numpy; the default would turn tuples into lists."""
    return item


def _resolve_weights(cfg: PrecomputeConfig, cache: Path) -> Path:
    if cfg.random_init == (cfg.weights is not None):
        raise OmamaError("give exactly one of --weights FILE or --random-init")
    if cfg.weights is not None:
        return cfg.weights
    path = cache / f"backbone-random-init-seed{cfg.seed}.pth"
    if not path.exists():
        log.warning(
            "RANDOM-INIT backbone (seed %d): features are not DINOv2's; for tests and demos only",
            cfg.seed,
        )
        backbone.save_random_init(path, cfg.seed)
    return path


def plan_jobs(
    pairs: list[Pair], ann: Annotations, manifest: Manifest, direction: str
) -> tuple[list[Job], int]:
    """Unique images of the pairs, minus what the cache already holds."""
    want: dict[str, tuple[str, str, str]] = {}
    dst_keys: set[str] = set()
    for p in pairs:
        for cam in (p.source_cam, p.dest_cam):
            want[image_key(p.take, cam, p.frame)] = (p.take, cam, p.frame)
        dst_keys.add(image_key(p.take, p.dest_cam, p.frame))
    have_cands = manifest.candidates.get(direction, {})
    jobs, reused = [], 0
    for key in sorted(want):
        take, cam, frame = want[key]
        need_image = key not in manifest.images
        need_cands = key in dst_keys and key not in have_cands
        if need_image or need_cands:
            objects = tuple(ann.objects_at(take, cam, frame))
            jobs.append(Job(key, take, cam, frame, objects, need_image, need_cands))
        else:
            reused += 1
    return jobs, reused


def build_samples(pairs: list[Pair], ann: Annotations) -> list[Sample]:
    samples = []
    for p in pairs:
        src_objs = ann.objects_at(p.take, p.source_cam, p.frame)
        dst_objs = ann.objects_at(p.take, p.dest_cam, p.frame)
        samples.append(
            Sample(
                take=p.take,
                obj=p.obj,
                src_cam=p.source_cam,
                dst_cam=p.dest_cam,
                frame=p.frame,
                src=image_key(p.take, p.source_cam, p.frame),
                dst=image_key(p.take, p.dest_cam, p.frame),
                src_k=src_objs.index(p.obj),
                dst_k=dst_objs.index(p.obj) if p.obj in dst_objs else -1,
            )
        )
    return samples


class _Computer:
    """GPU/CPU math for prepared items: backbone in same-size batches, then pooling."""

    def __init__(self, model: torch.nn.Module | None, device: torch.device, cache_reader) -> None:
        self.model, self.device, self.reader = model, device, cache_reader

    def tokens(self, items: list[dict]) -> list[torch.Tensor]:
        need = [it for it in items if it["job"].need_image]
        out: dict[str, torch.Tensor] = {}
        if need:
            batch = torch.from_numpy(np.stack([it["image"] for it in need])).to(self.device)
            toks = backbone.patch_tokens(self.model, batch).to(torch.float16)
            for it, t in zip(need, toks, strict=True):
                out[it["job"].key] = t
        for it in items:
            if not it["job"].need_image:  # tokens exist in the cache: reuse, no backbone
                out[it["job"].key] = torch.from_numpy(self.reader(it["job"].key)).to(self.device)
        return [out[it["job"].key] for it in items]

    def records(
        self, item: dict, tokens: torch.Tensor, direction: str
    ) -> tuple[ImageRecord | None, CandidateRecord | None]:
        h, w = item["hw"]
        grid = (h // PATCH, w // PATCH)
        # Descriptors always come from the stored fp16 tokens, so a candidate set added by a
        # later run matches one computed together with the image.
        dense = descriptors.dense_map(tokens, grid)
        obj_masks = torch.from_numpy(item["obj_masks"])
        obj_boxes = descriptors.tight_boxes(obj_masks)
        img_rec = cand_rec = None
        if item["job"].need_image:
            obj_desc = descriptors.mask_descriptors(
                dense, obj_masks.to(self.device), torch.as_tensor(obj_boxes).to(self.device)
            )
            img_rec = ImageRecord(
                tokens=tokens.cpu().numpy(),
                image=item["image"],
                grid=grid,
                orig_hw=item["orig_hw"],
                obj_names=list(item["job"].objects),
                obj_desc=obj_desc.cpu().numpy(),
                obj_box=np.asarray(obj_boxes, dtype=np.float32).reshape(-1, 4),
                obj_rle=item["obj_rle"],
            )
        if item["job"].need_cands:
            masks = torch.from_numpy(item["cand_masks"]).to(self.device)
            boxes = torch.from_numpy(item["cand_boxes"]).to(self.device)
            cand_desc = descriptors.mask_descriptors(dense, masks, boxes)
            nonempty = item["obj_masks"].any(axis=(1, 2))
            anchor = np.full(len(nonempty), -1, dtype=np.int32)
            for k in np.flatnonzero(nonempty):
                anchor[k] = descriptors.anchor_index(item["cand_boxes"], obj_boxes[k])
            cand_rec = CandidateRecord(
                desc=cand_desc.cpu().numpy(),
                boxes=item["cand_boxes"],
                adj=item["cand_adj"],
                rle=item["cand_rle"],
                anchor=anchor,
            )
        return img_rec, cand_rec


def run_precompute(cfg: PrecomputeConfig) -> PrecomputeReport:
    """Build (or extend) the cache for one split and direction; resumable and idempotent."""
    if cfg.root is None or cfg.cache is None:
        raise OmamaError("--root and --cache are required")
    if cfg.shard_index is not None or cfg.num_shards > 1 or cfg.merge or dist.from_env():
        from omama.precompute import sharded  # builds on this module

        return sharded.run_sharded(cfg)
    t0 = time.perf_counter()
    root, cache = Path(cfg.root), Path(cfg.cache)
    masks_dir = cfg.masks_dir or default_masks_dir(root, cfg.split, cfg.direction)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OmamaError("--device cuda: no CUDA device is available here")
    report = PrecomputeReport()

    ann = Annotations(root)
    pairs, subset = selected_pairs(cfg, ann, report)

    with cache_lock(cache):
        weights = _resolve_weights(cfg, cache)
        settings = cache_settings(backbone.weights_fingerprint(weights), cfg.features)
        manifest = load_manifest(cache)
        if manifest is None:
            manifest = Manifest(settings=settings)
        check_settings(cache, manifest.settings, settings)
        jobs, report.images_reused = plan_jobs(pairs, ann, manifest, cfg.direction)
        log.info(
            "%s %s: %d pairs, %d images to compute, %d already cached",
            cfg.direction,
            cfg.split,
            len(pairs),
            len(jobs),
            report.images_reused,
        )
        if jobs:
            _compute(cfg, cache, manifest, jobs, weights, masks_dir, ann, device, report)
        # pairs of bad images stay listed: the cache reader skips them and says how many
        samples = build_samples(pairs, ann)
        save_samples(cache, cfg.direction, cfg.split, samples)
        manifest.splits[f"{cfg.direction}/{cfg.split}"] = len(samples)
        record_subset(manifest, f"{cfg.direction}/{cfg.split}", subset)
        save_manifest(cache, manifest)
        report.samples = len(samples)
        bad_path = cache / "reports" / f"bad_{cfg.direction}_{cfg.split}.json"
        if report.bad:
            write_json(report.bad, bad_path, 1)
        else:  # a report from an earlier run whose bad files are fixed now
            bad_path.unlink(missing_ok=True)
    report.seconds = time.perf_counter() - t0
    return report


def selected_pairs(
    cfg: PrecomputeConfig, ann: Annotations, report: PrecomputeReport
) -> tuple[list[Pair], dict | None]:
    """The split's pairs (the file, its --pairs-fraction subset, bad ones handled) and, for a
    subset, what the manifest records about it."""
    path = cfg.pairs or default_pairs_path(Path(cfg.root), cfg.split, cfg.direction)
    split_takes(Path(cfg.root), cfg.split)  # a split absent from split.json is a typo: refuse
    pairs = load_pairs(path, cfg.direction)
    subset = None
    if cfg.pairs_fraction != 1.0:
        n_all = len(pairs)
        pairs = select_fraction(pairs, cfg.pairs_fraction, cfg.seed)
        subset = subset_record(cfg.pairs_fraction, cfg.seed, n_all, len(pairs))
        log.info("%s: kept %d of %d pairs (seed %d)", path, len(pairs), n_all, cfg.seed)
    return _checked_pairs(pairs, ann, path, cfg.skip_bad, report), subset


def record_subset(manifest: Manifest, split_key: str, subset: dict | None) -> None:
    if subset is None:
        manifest.subsets.pop(split_key, None)
    else:
        manifest.subsets[split_key] = subset


def _checked_pairs(
    pairs: list[Pair], ann: Annotations, path: Path, skip_bad: bool, report: PrecomputeReport
) -> list[Pair]:
    if not skip_bad:
        validate_pairs(pairs, ann, path)
        return pairs
    good = []
    for p in pairs:
        try:
            validate_pairs([p], ann, path)
            good.append(p)
        except OmamaError as exc:
            log.warning("skipping bad pair: %s", exc)
            report.bad.append({"pair": [p.take, p.obj, p.source_cam, p.frame], "error": str(exc)})
    if not good:
        raise OmamaError(f"{path}: every pair is bad (see the warnings above)")
    return good


@dataclass(frozen=True)
class Target:
    """Where `_compute` puts its work: shard file prefix, and how the listing is saved
    (manifest.json for a plain run, the part's own fragment for a sharded one)."""

    prefix: str
    save: Callable[[Manifest], None]


def _compute(
    cfg: PrecomputeConfig,
    cache: Path,
    manifest: Manifest,
    jobs: list[Job],
    weights: Path,
    masks_dir: Path,
    ann: Annotations,
    device: torch.device,
    report: PrecomputeReport,
    target: Target | None = None,
) -> None:
    model = backbone.load_backbone(weights, device) if any(j.need_image for j in jobs) else None
    reader = ShardReader(cache)
    if target is None:
        target = Target(f"{cfg.direction}-{cfg.split}", lambda m: save_manifest(cache, m))

    def cached_tokens(key: str) -> np.ndarray:
        return read_tokens(reader.file(manifest.images[key])[f"img/{key}"])

    computer = _Computer(model, device, cached_tokens)

    def publish(name: str, info: dict, images: list[str], cands: list[tuple[str, str]]) -> None:
        manifest.shards[name] = info
        for key in images:
            manifest.images[key] = name
        for direction, key in cands:
            manifest.candidates.setdefault(direction, {})[key] = name
        target.save(manifest)

    writer = ShardWriter(cache, target.prefix, publish, max_records=cfg.shard_records)
    loader = DataLoader(
        PrepareDataset(jobs, root=Path(cfg.root), masks_dir=masks_dir, ann=ann),
        batch_size=None,
        collate_fn=_as_is,
        num_workers=cfg.workers,
        prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False,
    )
    buckets: dict[tuple[int, int], list[dict]] = defaultdict(list)

    def flush(hw: tuple[int, int]) -> None:
        items = buckets.pop(hw, [])
        if not items:
            return
        for item, toks in zip(items, computer.tokens(items), strict=True):
            stored = None
            if cfg.features == "int8" and item["job"].need_image:
                toks, stored = quant.roundtrip(toks)  # descriptors from what is stored
            img_rec, cand_rec = computer.records(item, toks, cfg.direction)
            if img_rec is not None:
                if stored is not None:
                    img_rec.tokens, img_rec.token_scale = stored
                writer.add_image(item["job"].key, img_rec)
                report.images_computed += 1
            if cand_rec is not None:
                writer.add_candidates(cfg.direction, item["job"].key, cand_rec)
                report.candidate_sets_computed += 1

    try:
        with tqdm(total=len(jobs), desc="precompute", unit="img", dynamic_ncols=True) as bar:
            for item in loader:
                bar.update(1)
                if "error" in item:
                    if not cfg.skip_bad:
                        raise OmamaError(item["error"])
                    log.warning("skipping bad item: %s", item["error"])
                    report.bad.append({"key": item["job"].key, "error": item["error"]})
                    continue
                buckets[item["hw"]].append(item)
                if len(buckets[item["hw"]]) >= cfg.batch_size:
                    flush(item["hw"])
            for hw in list(buckets):
                flush(hw)
        writer.close_shard()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
