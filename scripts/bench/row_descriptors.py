"""Row 1: descriptor pooling of all candidates of one image vs the per-mask Python loop
(docs/reference.md, Descriptors), timed interleaved; the two must agree within 1e-5."""

from __future__ import annotations

import numpy as np
import torch
from oracles import loop_descriptors

from bench.common import Ctx, Row, fmt_ms, interleaved
from omama.backbones import DEFAULT_BACKBONE
from omama.precompute.descriptors import dense_map, mask_descriptors, tight_boxes

TARGET = 20.0  # times faster than the loop, on a CPU


def random_candidates(
    gen: np.random.Generator, n: int, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate-like masks (ellipses and rectangles of many sizes, a few empty) and their
    tight boxes, as FastSAM would hand them over at the crop size."""
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        cy, cx = gen.uniform(0, h), gen.uniform(0, w)
        ry, rx = gen.uniform(3, h / 3), gen.uniform(3, w / 3)
        if i % 10 == 9:
            continue  # empty
        if i % 2:
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            masks[i, int(max(cy - ry, 0)) : int(cy + ry), int(max(cx - rx, 0)) : int(cx + rx)] = 1
    return torch.from_numpy(masks), torch.from_numpy(tight_boxes(masks))


def run(ctx: Ctx) -> list[Row]:
    p, dev = ctx.plan, ctx.device
    grid = (16, 16) if p.small else (50, 50)
    h, w = grid[0] * DEFAULT_BACKBONE.patch, grid[1] * DEFAULT_BACKBONE.patch
    gen = np.random.default_rng(1)
    tokens = torch.from_numpy(
        gen.standard_normal((grid[0] * grid[1], DEFAULT_BACKBONE.width), dtype=np.float32)
    )
    dense = dense_map(tokens.to(dev), grid)
    masks, boxes = random_candidates(gen, p.desc_cands, h, w)
    masks, boxes = masks.to(dev), boxes.to(dev)
    got = mask_descriptors(dense, masks, boxes)
    want = loop_descriptors(dense, masks, boxes)
    err = float((got - want).abs().max())
    t = interleaved(
        {
            "project": lambda: mask_descriptors(dense, masks, boxes),
            "loop": lambda: loop_descriptors(dense, masks, boxes),
        },
        {"project": p.desc_reps, "loop": p.loop_reps},
        ctx.sync,
        warm={"loop": lambda: loop_descriptors(dense, masks[:4], boxes[:4])},
    )
    ratio = t["loop"] / t["project"]
    return [
        Row(
            row="1",
            what=f"descriptor pooling, {p.desc_cands} candidates of one {h}x{w} image "
            f"({grid[0]}x{grid[1]} patches), {dev.type}",
            project=fmt_ms(t["project"]),
            baseline=f"{fmt_ms(t['loop'])} (per-mask loop)",
            ratio=ratio,
            target=f">= {TARGET:.0f}x on CPU, max |diff| <= 1e-5",
            met=(ratio >= TARGET or dev.type != "cpu") and err <= 1e-5,
            command=ctx.command("1"),
            note=f"max |project - loop| = {err:.1e}; dense map built once outside both timings",
            details={"seconds": t["_all"], "max_abs_diff": err, "n": p.desc_cands},
        )
    ]
