"""Read candidate files with O-MaMa's own loader, unmodified, and compare with the files.

O-MaMa's `Masks_Dataset` (a local clone of github Maria-SanVil/O-MaMa, imported from its
folder as it is; nothing of it is copied here) is built for one split and direction of a
dataset root, and every item is loaded. For validation and test items, its candidate masks
and boxes (`DEST_SAM_masks`, `DEST_SAM_bbox`) must equal the files read plainly (nearest
resize to the image's crop when the sizes differ, as `tests/oracles.py` reads them); for
training items, the sampled candidates must come out as the loader's batch expects. Every
destination image must have at least one non-empty candidate.

    python scripts/check_omama_loader.py --omama /path/to/O-MaMa --root ROOT \
        --direction exo2ego --split val

The reference reads its own pair files (`train_{set}_20percent_pairs.json`,
`custom_val_{set}_pairs_10.json`, `test_{set}_pairs.json`) and `ROOT/takes.json`; its
dependencies (torch, torchvision, OpenCV, pycocotools, scipy, matplotlib) are omama's.
Exit status: 0 when every item agrees, 1 when one differs, 2 when the loader fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from oracles import reference_box, reference_reads_candidates  # noqa: E402


def load_reference(omama: Path):
    """O-MaMa's Masks_Dataset class, imported from the clone (it imports its own siblings)."""
    sys.path.insert(0, str(omama.resolve()))
    from dataset.dataset_masks import Masks_Dataset

    return Masks_Dataset


def check(omama: Path, root: Path, direction: str, split: str, limit: int | None) -> int:
    masks_dataset = load_reference(omama)
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints as it loads
        ds = masks_dataset(
            str(root),
            patch_size=14,
            reverse=direction == "exo2ego",
            N_masks_per_batch=32,
            order=2,
            train=split == "train",
            test=split == "test",
        )
    bad, n = 0, len(ds) if limit is None else min(limit, len(ds))
    for i in range(n):
        item = ds[i]
        pair = ds.pairs[i]
        dst = pair[0] if direction == "exo2ego" else pair[2]
        _, take, cam, _, _, frame = dst.split("//")[-6:]
        masks, boxes = item["DEST_SAM_masks"], item["DEST_SAM_bbox"]
        h2, w2 = (int(v) for v in item["DEST_img_size"])
        problems = []
        if masks.shape[0] < 1 or masks.shape[1:] != (h2, w2):
            problems.append(f"masks of shape {tuple(masks.shape)} for an image of {h2}x{w2}")
        if split != "train":
            want_m, want_b = reference_reads_candidates(ds.masks_dir, take, cam, int(frame), h2, w2)
            if not torch.equal(masks.to(torch.uint8), want_m):
                problems.append("masks differ from the file's")
            if not torch.equal(boxes, want_b):
                problems.append("boxes differ from the file's")
            if not bool(want_m.flatten(1).any(dim=1).all()):
                problems.append("an empty candidate")
            if want_m.shape[1:] == (h2, w2) and boxes.tolist() != [
                reference_box(m.numpy()) for m in want_m
            ]:
                problems.append("boxes are not bbox_from_mask of the masks")
        if problems:
            bad += 1
            print(f"item {i} {take}/{cam}/{frame}: " + "; ".join(problems))
    print(
        f"O-MaMa's Masks_Dataset ({direction} {split}): {n} items read, {n - bad} agree, "
        f"{bad} differ"
    )
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--omama", type=Path, required=True, help="local clone of O-MaMa")
    ap.add_argument("--root", type=Path, required=True, help="dataset root with Masks_*")
    ap.add_argument("--direction", choices=("exo2ego", "ego2exo"), default="exo2ego")
    ap.add_argument("--split", choices=("train", "val", "test"), default="val")
    ap.add_argument("--limit", type=int, default=None, help="read only the first N items")
    args = ap.parse_args(argv)
    np.random.seed(0)
    try:
        return check(args.omama, args.root, args.direction, args.split, args.limit)
    except Exception as exc:  # the reference's own failure, e.g. an empty candidate file
        print(f"O-MaMa's loader failed: {type(exc).__name__}: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
