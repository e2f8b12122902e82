"""Writing a synthetic dataset to disk in the Ego-Exo4D correspondence layout; `generate`.

Per take: `processed/{take}/{cam}/{frame}.jpg`, `processed/{take}/annotation.json` (COCO RLE
at the annotation size) and, for every destination image that a pair points at,
`Masks_{SPLIT}_{DIRECTION}/{take}/{cam}/{frame}_masks.npz` and `..._boxes.npy`. Then
`processed/split.json`, `takes.json`, `dataset_jsons/` (full, 20 percent and every-tenth pair
lists per split and setting) and `synth_meta.json`. Last, the Ego-Exo4D relations file of
each split, `annotations/relations_{split}.json` (where the Ego-Exo4D download puts it, under
the dataset root here): `{"annotations": {take: {"object_masks": {obj: {cam:
{"annotated_frames": [int frames]}}}}}}` for every object and camera of the take's
annotation.json. Every camera of a synthetic take is annotated at every frame (an object it
does not see has no mask there), so `annotated_frames` lists all of the take's frames; the
official GT (`omama-gt`) and omama-eval's own GT then agree. The relations file holds only
what the official GT builder reads (no masks, no other metadata of the real file).

Everything follows from `SynthConfig.seed`: the same seed writes byte-identical files (JSON
with sorted keys, fixed JPEG quality, zip members with a fixed timestamp). Pair strings start
with the absolute output path, so two runs compare equal only when written to the same path.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from omama import rle
from omama.constants import DIRECTION_TABLE, SPLITS, Direction
from omama.dataset.images import resize_mask
from omama.errors import OmamaError
from omama.files import save_npz_deterministic, write_json
from omama.masks import tight_boxes
from omama.prepare.download import relations_path
from omama.synth.config import EGO_CAM, GENERATOR, META_FILE, SynthConfig, SynthSummary
from omama.synth.proposals import make_candidates
from omama.synth.scene import Take, build_take

log = logging.getLogger(__name__)

SETTINGS = tuple(d.pair_setting for d in DIRECTION_TABLE.values())  # exoego, egoexo
JPEG_QUALITY = 90


def _sorted_keys(obj: Any) -> Any:
    """`obj` with every mapping's keys in sorted order, so its JSON bytes depend on data only."""
    if isinstance(obj, dict):
        return {k: _sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list | tuple):
        return [_sorted_keys(v) for v in obj]
    return obj


def _write_json(obj: Any, path: Path) -> None:
    write_json(_sorted_keys(obj), path)


# ---------------------------------------------------------------------------- pair lists


def _dest_slot(direction: Direction) -> int:
    """Index of the destination image in a pair `[ego_rgb, ego_mask, exo_rgb, exo_mask]`."""
    return 2 if direction.source_is_ego else 0


def _fields(entry: str) -> list[str]:
    """`ROOT//take//cam//obj//kind//frame` -> [ROOT, take, cam, obj, kind, frame]."""
    return entry.rsplit("//", 5)


def pair_entry(root: str, take: str, ego: str, exo: str, obj: str, frame: int) -> list[str]:
    """`[ego_rgb, ego_mask, exo_rgb, exo_mask]`, each `ROOT//take//cam//obj//kind//frame`."""
    return [
        f"{root}//{take}//{cam}//{obj}//{kind}//{frame}"
        for cam, kind in ((ego, "rgb"), (ego, "mask"), (exo, "rgb"), (exo, "mask"))
    ]


def make_pairs(
    root: str, take: str, masks: dict, ego: str, exos: list[str], direction: Direction
) -> list[list[str]]:
    """Pairs of one take in one direction: one per frame where the source camera sees the
    object (the exo camera for exo2ego, the ego camera for ego2exo)."""
    pairs = []
    for obj in sorted(masks):
        for exo in exos:
            source = masks[obj].get(ego if direction.source_is_ego else exo, {})
            for frame in sorted(source, key=int):
                pairs.append(pair_entry(root, take, ego, exo, obj, int(frame)))
    return pairs


# ---------------------------------------------------------------------------- one take


def _write_take(
    take: Take, cfg: SynthConfig, out: Path, root_str: str, rng: np.random.Generator
) -> tuple[dict[str, list[list[str]]], dict, int, int]:
    """Write frames, annotation.json and candidate files.

    Returns the pairs per setting, the annotation's masks, and the numbers of frames and
    candidate files written.
    """
    frames = cfg.frame_numbers()
    proc = out / "processed" / take.uid
    masks: dict[str, dict[str, dict[str, dict]]] = {o: {} for o in sorted(take.objects)}
    crop_gts: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    n_images = 0
    for cam in take.cams:
        (proc / cam.name).mkdir(parents=True, exist_ok=True)
        for f, view in enumerate(take.views[cam.name]):
            ok = cv2.imwrite(
                str(proc / cam.name / f"{frames[f]}.jpg"),
                view.image,
                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
            )
            if not ok:
                raise OmamaError(f"{proc / cam.name}: cannot write frame {frames[f]}.jpg")
            n_images += 1
            crop_gts[(cam.name, f)] = {}
            for obj in sorted(take.objects):
                masks[obj].setdefault(cam.name, {})
                if obj not in view.masks:
                    continue
                orig = resize_mask(view.masks[obj], cam.orig_hw)
                masks[obj][cam.name][str(frames[f])] = rle.encode(orig)
                crop_gts[(cam.name, f)][obj] = resize_mask(orig, cam.crop_hw)
    _write_json({"masks": masks, "subsample_idx": frames}, proc / "annotation.json")

    exos = [c.name for c in take.cams if not c.is_ego]
    pairs = {
        d.pair_setting: make_pairs(root_str, take.uid, masks, EGO_CAM, exos, d)
        for d in DIRECTION_TABLE.values()
    }

    # candidates for every destination image that a pair of this split points at
    n_files = 0
    cams = {c.name: c for c in take.cams}
    lo_hi = cfg.resolved_n_candidates()
    for direction in DIRECTION_TABLE.values():
        slot = _dest_slot(direction)
        dests = {
            (_fields(p[slot])[2], int(_fields(p[slot])[5])) for p in pairs[direction.pair_setting]
        }
        base = out / f"Masks_{take.split.upper()}_{direction.masks_part}" / take.uid
        for cam_name, frame in sorted(dests):
            f = frames.index(frame)
            cam = cams[cam_name]
            view = take.views[cam_name][f]
            chw = cam.crop_hw
            gts = [crop_gts[(cam_name, f)][o] for o in sorted(crop_gts[(cam_name, f)])]
            any_obj = np.zeros(chw, np.uint8)
            for m in view.masks.values():
                any_obj |= resize_mask(m, chw)
            cands = make_candidates(
                rng,
                gts,
                any_obj,
                resize_mask(view.labels, chw),
                [resize_mask(o, chw) for o in view.occluders],
                lo_hi,
            )
            (base / cam_name).mkdir(parents=True, exist_ok=True)
            save_npz_deterministic(base / cam_name / f"{frame}_masks.npz", cands)
            np.save(base / cam_name / f"{frame}_boxes.npy", tight_boxes(cands))
            n_files += 1
    return pairs, masks, n_images, n_files


# ---------------------------------------------------------------------------- the dataset


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OmamaError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OmamaError(f"{out}: directory is not empty (pass --overwrite to replace it)")
        if not (out / META_FILE).is_file():
            raise OmamaError(
                f"{out}: not empty and not a synthetic dataset ({META_FILE} missing); "
                "refusing to delete it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _annotated(annotations: dict[str, dict], entry: str) -> bool:
    """Whether the image of a pair entry has a mask of the entry's object."""
    _, take, cam, obj, _, frame = _fields(entry)
    return frame in annotations[take][obj][cam]


def relations_json(annotations: dict[str, dict], takes: list[str], frames: list[int]) -> dict:
    """The relations file of `takes`: every camera of every object annotated at `frames`."""
    return {
        "annotations": {
            take: {
                "object_masks": {
                    obj: {cam: {"annotated_frames": list(frames)} for cam in cams}
                    for obj, cams in annotations[take].items()
                }
            }
            for take in takes
        }
    }


def build_takes(
    cfg: SynthConfig, take_seeds: list[np.random.SeedSequence]
) -> Iterator[tuple[int, str, Take, np.random.Generator, bool]]:
    """Each take in order: (index, split, take, its candidate generator, whether it holds the
    portrait camera). The one order of draws, for the root and for the download alike."""
    sizes = cfg.split_sizes()
    split_of = [s for s in SPLITS for _ in range(sizes[s])]
    portrait_idx = split_of.index(cfg.portrait_split) if cfg.portrait else -1
    for i, split in enumerate(split_of):
        scene_rng, cand_rng = (np.random.default_rng(s) for s in take_seeds[i].spawn(2))
        take = build_take(scene_rng, cfg, i, split, portrait=i == portrait_idx)
        yield i, split, take, cand_rng, i == portrait_idx


def takes_meta_of(takes: list[Take]) -> list[dict[str, str]]:
    """takes.json: each take's uid and name."""
    return [{"take_uid": t.uid, "take_name": t.name} for t in takes]


def generate(
    cfg: SynthConfig, out: Path | str | None = None, overwrite: bool | None = None
) -> SynthSummary:
    """Write the whole dataset under `out` (default `cfg.out`).

    `out` must be absent or empty; with `overwrite` (default `cfg.overwrite`) it may instead
    hold an earlier synthetic dataset, which is replaced.
    """
    cfg.validate()
    out = out if out is not None else cfg.out
    if out is None:
        raise OmamaError("missing required option --out")
    overwrite = cfg.overwrite if overwrite is None else overwrite
    out = Path(out).absolute()
    _prepare_out(out, overwrite)
    root_str = str(out)
    seq = np.random.SeedSequence(cfg.seed)
    take_seeds = seq.spawn(cfg.takes)
    subset_rng = np.random.default_rng(seq.spawn(1)[0])

    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    pairs: dict[str, dict[str, list]] = {s: {t: [] for t in SETTINGS} for s in SPLITS}
    annotations: dict[str, dict] = {}
    takes_meta = []
    n_images = n_files = 0
    portrait = None
    for i, split, take, cand_rng, is_portrait in build_takes(cfg, take_seeds):
        if is_portrait:
            portrait = (take.uid, take.cams[-1].name)
        take_pairs, annotations[take.uid], n_img, n_f = _write_take(
            take, cfg, out, root_str, cand_rng
        )
        n_images += n_img
        n_files += n_f
        splits[split].append(take.uid)
        takes_meta += takes_meta_of([take])
        for s in SETTINGS:
            pairs[split][s] += take_pairs[s]
        log.info(
            "take %d/%d %s (%s): %d exoego, %d egoexo pairs",
            i + 1,
            cfg.takes,
            take.uid,
            split,
            *(len(take_pairs[s]) for s in SETTINGS),
        )

    _write_json(splits, out / "processed" / "split.json")
    _write_json(takes_meta, out / "takes.json")
    jsons = out / "dataset_jsons"
    invisible: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for split in SPLITS:
        for direction in DIRECTION_TABLE.values():
            s = direction.pair_setting
            full = pairs[split][s]
            if cfg.pair_names != "reference" or split == "test":
                _write_json(full, jsons / f"{split}_{s}_pairs.json")
            slot = _dest_slot(direction)
            invisible[split][s] = sum(1 for p in full if not _annotated(annotations, p[slot]))
    for s in SETTINGS if cfg.pair_names != "plain" else ():
        train = pairs["train"][s]
        k = max(1, round(0.2 * len(train))) if train else 0
        keep = np.sort(subset_rng.choice(len(train), size=k, replace=False)) if k else []
        _write_json([train[int(j)] for j in keep], jsons / f"train_{s}_20percent_pairs.json")
        _write_json(pairs["val"][s][::10], jsons / f"custom_val_{s}_pairs_10.json")

    counts = {split: {s: len(pairs[split][s]) for s in SETTINGS} for split in SPLITS}
    meta = {
        "generator": GENERATOR,
        "config": cfg.meta(),
        "pairs": counts,
        "invisible": invisible,
        "portrait": list(portrait) if portrait else None,
    }
    _write_json(meta, out / META_FILE)
    for split in SPLITS:  # written last: every file above stays as it was before this one
        relations = relations_json(annotations, splits[split], cfg.frame_numbers())
        _write_json(relations, relations_path(out, split))
    return SynthSummary(out, splits, counts, invisible, n_images, n_files, portrait)
