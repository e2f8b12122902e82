"""What bf16 and fp16 change: the matcher's scores in bf16 against fp32, and the backbone's
tokens and descriptors in fp16 against fp32, on a cache `make demo` built.

Matcher: every pair of a split scored in fp32 and in bf16 with the same weights: the best
score's error, how many pairs per 1,000 choose another candidate, and the official metrics
of each. Backbone: the destination images of the first pairs run through the backbone in
fp32 and under fp16 autocast: relative error of the tokens and of the candidates'
descriptors. Prints one JSON object (also written to --out).

    python scripts/precision_effect.py --root demo_out/data --cache demo_out/cache \
        --checkpoint demo_out/run/best.pt --out precision.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from omama import rle
from omama.cache.reader import Cache
from omama.dataset.images import preprocess_image, read_image
from omama.dataset.layout import image_path
from omama.matcher.checkpoint import build_matcher
from omama.precompute.backbone import load_backbone, patch_tokens, save_random_init
from omama.precompute.descriptors import dense_map, mask_descriptors, tight_boxes
from omama.predict.evaluate import measure
from omama.predict.scoring import score_samples

CPU = torch.device("cpu")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def matcher_effect(cache: Cache, ckpt: Path, direction: str, split: str, device) -> dict:
    samples = cache.samples(direction, split)
    model = build_matcher(*cache.role_grids(samples), ckpt).to(device)
    runs = {
        p: score_samples(cache, model, direction, samples, device, 16, progress=False, precision=p)
        for p in ("fp32", "bf16")
    }
    err = [abs(a.features[0] - b.features[0]) for a, b in zip(*runs.values(), strict=True)]
    flips = sum(a.best != b.best for a, b in zip(*runs.values(), strict=True))
    out = {
        "pairs": len(samples),
        "best_score_abs_err_max": max(err),
        "best_score_abs_err_mean": sum(err) / len(err),
        "argmax_flips_per_1000": 1000 * flips / len(samples),
    }
    for p, scored in runs.items():
        out[f"{p}_metrics"] = measure(cache, direction, samples, scored)[2].as_dict()
    return out


def backbone_effect(root: Path, cache: Cache, direction: str, split: str, n_images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:  # the demo's backbone: random init, seed 0
        model = load_backbone(save_random_init(Path(tmp) / "vitb14_reg4.pth", seed=0), CPU)
    tok_err, desc_err, seen = [], [], set()
    for s in cache.samples(direction, split):
        if s.dst in seen or len(seen) == n_images:
            continue
        seen.add(s.dst)
        img = preprocess_image(read_image(image_path(root, s.take, s.dst_cam, s.frame)))
        batch = torch.from_numpy(img)[None]
        toks = {fp16: patch_tokens(model, batch, fp16=fp16)[0] for fp16 in (False, True)}
        tok_err.append(rel(toks[True], toks[False]))
        n = cache.cand_count(direction, s.dst)
        masks = np.stack(
            [rle.decode(cache.cand_rle(direction, s.dst, i), "cache") for i in range(n)]
        )
        masks = torch.from_numpy(masks)
        boxes = torch.from_numpy(tight_boxes(masks.numpy())).float()
        grid = cache.grid(s.dst)
        desc = {k: mask_descriptors(dense_map(t, grid), masks, boxes) for k, t in toks.items()}
        desc_err.append(rel(desc[True], desc[False]))
    return {
        "images": len(seen),
        "token_rel_err_max": max(tok_err),
        "descriptor_rel_err_max": max(desc_err),
        "token_rel_err_mean": sum(tok_err) / len(tok_err),
        "descriptor_rel_err_mean": sum(desc_err) / len(desc_err),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="dataset root (for the frames)")
    p.add_argument("--cache", type=Path, required=True, help="cache folder")
    p.add_argument("--checkpoint", type=Path, required=True, help="matcher weights")
    p.add_argument("--direction", default="exo2ego", help="exo2ego or ego2exo")
    p.add_argument("--split", default="test", help="split to score")
    p.add_argument("--images", type=int, default=8, help="images through the backbone")
    p.add_argument("--device", default="cpu", help="cpu or cuda (matcher scoring)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = Cache(args.cache)
    result = {
        "matcher_bf16_vs_fp32": matcher_effect(
            cache, args.checkpoint, args.direction, args.split, torch.device(args.device)
        ),
        "backbone_fp16_vs_fp32": backbone_effect(
            args.root, cache, args.direction, args.split, args.images
        ),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
