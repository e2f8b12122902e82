"""Descriptors vs a plain per-mask loop transcribing the method (docs/reference.md, Descriptors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracles import loop_descriptors  # the plain per-mask loop (docs/reference.md, Descriptors)

from omama.precompute.descriptors import (
    _context_part,
    _context_part_fp32,
    anchor_index,
    box_iou,
    context_windows,
    dense_map,
    mask_descriptors,
    quarter_masks,
    tight_box,
    tight_boxes,
)

# ---------------------------------------------------------------- oracle (plain loops)


# ---------------------------------------------------------------- random inputs


def random_masks(gen: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Blobs, speckle, single pixels, full and empty masks, in random order."""
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    yy = torch.arange(h).view(h, 1).float()
    xx = torch.arange(w).view(1, w).float()
    for i in range(n):
        kind = i % 6
        if kind == 0:  # ellipse
            cy, cx = torch.rand(2, generator=gen) * torch.tensor([h, w])
            ry, rx = 1 + torch.rand(2, generator=gen) * torch.tensor([h / 3, w / 3])
            masks[i] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).to(torch.uint8)
        elif kind == 1:  # rectangle, sometimes touching a border
            y0 = int(torch.randint(0, h, (1,), generator=gen))
            x0 = int(torch.randint(0, w, (1,), generator=gen))
            y1 = int(torch.randint(y0 + 1, h + 1, (1,), generator=gen))
            x1 = int(torch.randint(x0 + 1, w + 1, (1,), generator=gen))
            masks[i, y0:y1, x0:x1] = 1
        elif kind == 2:  # speckle
            masks[i] = (torch.rand(h, w, generator=gen) < 0.02).to(torch.uint8)
        elif kind == 3:  # a single pixel (often lost by the nearest resize -> empty)
            y0 = int(torch.randint(0, h, (1,), generator=gen))
            x0 = int(torch.randint(0, w, (1,), generator=gen))
            masks[i, y0, x0] = 1
        elif kind == 4:  # empty
            pass
        else:  # full
            masks[i] = 1
    return masks[torch.randperm(n, generator=gen)]


def random_boxes(gen: torch.Generator, n: int, h: int, w: int) -> torch.Tensor:
    """Boxes inside, across borders, fully outside, tiny, negative, fractional."""
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 1.6, h * 1.6]) - torch.tensor(
        [w * 0.3, h * 0.3]
    )
    wh = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.8, h * 0.8])
    boxes = torch.cat([xy, wh], dim=1)
    boxes[::5, 2:] = torch.rand(len(boxes[::5]), 2, generator=gen) * 3  # tiny
    boxes[1::7, :2] = torch.tensor([w + 150.0, h + 250.0])  # far outside (bottom right)
    boxes[2::7, :2] = torch.tensor([-400.0, -300.5])  # far outside (top left)
    boxes[3::7] = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0])  # the whole crop
    boxes[4::7, :2] = torch.tensor([-0.7, -1.9])  # negative fractions truncate toward zero
    return boxes.float()


def make_case(seed: int, grid: tuple[int, int], n: int):
    gen = torch.Generator().manual_seed(seed)
    gh, gw = grid
    tokens = torch.randn(gh * gw, 768, generator=gen)
    dense = dense_map(tokens, grid)
    h, w = gh * 14, gw * 14
    return dense, random_masks(gen, n, h, w), random_boxes(gen, n, h, w)


# ---------------------------------------------------------------- dense_map


@pytest.mark.parametrize(
    "grid, size", [((50, 50), (175, 175)), ((38, 68), (133, 238)), ((16, 16), (56, 56))]
)
def test_dense_map_vs_plain_interpolate(grid, size, seed):
    gh, gw = grid
    tokens = torch.randn(gh * gw, 768, generator=torch.Generator().manual_seed(seed))
    fmap = torch.zeros(1, 768, gh, gw)
    for r in range(gh):  # row-major token order, spelled out
        for c in range(gw):
            fmap[0, :, r, c] = tokens[r * gw + c]
    want = F.interpolate(fmap, size=size, mode="bilinear", align_corners=False)[0]
    got = dense_map(tokens, grid)
    assert got.dtype == torch.float32 and got.shape == (768, *size)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_dense_map_accepts_fp16():
    tokens = torch.randn(3 * 5, 768).half()
    got = dense_map(tokens, (3, 5))
    want = dense_map(tokens.float(), (3, 5))
    assert got.dtype == torch.float32 and got.shape == (768, 10, 17)
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------- mask_descriptors


def test_descriptors_small_random(seed):
    dense, masks, boxes = make_case(seed, (16, 16), 36)
    got = mask_descriptors(dense, masks, boxes)
    assert got.shape == (36, 1536) and got.dtype == torch.float32
    torch.testing.assert_close(got, loop_descriptors(dense, masks, boxes), atol=1e-5, rtol=0)


def test_descriptors_chunk_boundaries(seed):
    dense, masks, boxes = make_case(seed, (8, 12), 150)  # more masks than one chunk
    got = mask_descriptors(dense, masks.bool(), boxes)
    torch.testing.assert_close(got, loop_descriptors(dense, masks, boxes), atol=1e-5, rtol=0)


def test_descriptors_real_size_ego(seed):
    dense, masks, boxes = make_case(seed, (50, 50), 40)
    assert dense.shape == (768, 175, 175) and masks.shape == (40, 700, 700)
    got = mask_descriptors(dense, masks, boxes)
    torch.testing.assert_close(got, loop_descriptors(dense, masks, boxes), atol=1e-5, rtol=0)


def test_descriptors_real_size_exo(seed):
    dense, masks, boxes = make_case(seed, (38, 68), 16)
    assert dense.shape == (768, 133, 238) and masks.shape == (16, 532, 952)
    got = mask_descriptors(dense, masks, boxes)
    torch.testing.assert_close(got, loop_descriptors(dense, masks, boxes), atol=1e-5, rtol=0)


def test_descriptors_odd_grid(seed):
    # 37 * 14 / 4 = 129.5: the map and the context clamps both floor to 129.
    dense, masks, boxes = make_case(seed, (37, 9), 18)
    assert dense.shape == (768, 129, 31)
    got = mask_descriptors(dense, masks, boxes)
    torch.testing.assert_close(got, loop_descriptors(dense, masks, boxes), atol=1e-5, rtol=0)


def test_descriptors_hand_case():
    # A 2-channel map: channel 0 = column index, channel 1 = 1.
    h, w = 14, 14  # crop 56x56
    dense = torch.stack([torch.arange(w).float().expand(h, w), torch.ones(h, w)])
    masks = torch.zeros(3, 56, 56, dtype=torch.bool)
    masks[0, :, 8:16] = True  # map columns 2, 3 -> mean 2.5
    # masks[1] empty -> zeros
    masks[2, 0, 0] = True  # map cell (0, 0)
    boxes = torch.tensor([[8.0, 0.0, 7.0, 55.0], [0.0, 0.0, 0.0, 0.0], [200.0, 200.0, 5.0, 5.0]])
    got = mask_descriptors(dense, masks, boxes)
    assert got.shape == (3, 4)
    # mask parts
    torch.testing.assert_close(got[0, :2], torch.tensor([2.5, 1.0]))
    torch.testing.assert_close(got[1, :2], torch.zeros(2))
    torch.testing.assert_close(got[2, :2], torch.tensor([0.0, 1.0]))
    # context: box 0 grows to the whole crop -> mean column (0..13) = 6.5
    torch.testing.assert_close(got[0, 2:], torch.tensor([6.5, 1.0]))
    # box 1 (0,0,0,0) -> x 0..100 clamped to 56 -> all columns
    torch.testing.assert_close(got[1, 2:], torch.tensor([6.5, 1.0]))
    # box 2 far outside: x1 = x2 = 56 -> 14, 15 -> clamped to the last column (13)
    torch.testing.assert_close(got[2, 2:], torch.tensor([13.0, 1.0]))


def test_descriptors_explicit_crop_size_and_empty_input():
    dense = torch.randn(5, 14, 14)
    masks = torch.ones(2, 56, 56, dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 10.0, 10.0]])
    a = mask_descriptors(dense, masks, boxes)
    b = mask_descriptors(dense, masks, boxes, crop_hw=(56, 56))
    torch.testing.assert_close(a, b)
    empty = mask_descriptors(dense, masks[:0], boxes[:0])
    assert empty.shape == (0, 10)
    with pytest.raises(ValueError):
        mask_descriptors(dense, torch.ones(2, 60, 60), boxes)  # 60 // 4 != 14
    with pytest.raises(ValueError):
        mask_descriptors(dense, masks, boxes[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_descriptors_cuda_matches_loop(seed):
    dense, masks, boxes = make_case(seed, (38, 68), 30)
    got = mask_descriptors(dense.cuda(), masks, boxes).cpu()
    torch.testing.assert_close(got, loop_descriptors(dense, masks, boxes), atol=1e-5, rtol=0)


@pytest.mark.parametrize("grid", [(50, 50), (38, 68), (16, 16)])
def test_cuda_context_sums_in_fp32_stay_within_16_ulps_of_fp64(grid, seed):
    """What CUDA runs for the context part (direct fp32 window sums, no fp64), run on the
    CPU: against the fp64 summed-area table, within 16 float32 ulps of max(1, |value|)
    (measured: at most 7 on these maps, 1.5 on unit-variance maps with 200 boxes; 1e-5 is
    the descriptors' tolerance against the reference), and against the loop."""
    dense, _, boxes = make_case(seed, grid, 60)
    dense = dense * 3 + 0.5  # an offset and a spread larger than LayerNorm's output
    win = context_windows(boxes, (grid[0] * 14, grid[1] * 14))
    want = _context_part(dense, win)  # float64 sums
    got = _context_part_fp32(dense, win)
    ulp = torch.finfo(torch.float32).eps * want.abs().clamp_min(1.0)
    assert ((got - want).abs() <= 16 * ulp).all()
    masks = torch.zeros(len(boxes), grid[0] * 14, grid[1] * 14, dtype=torch.uint8)
    loop = loop_descriptors(dense, masks, boxes)[:, 768:]
    torch.testing.assert_close(got, loop, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- boxes


def test_tight_box_hand_cases():
    m = np.zeros((10, 12), dtype=np.uint8)
    m[2:5, 3:9] = 1  # rows 2..4, cols 3..8
    np.testing.assert_array_equal(tight_box(m), np.array([3, 2, 5, 2], dtype=np.float32))
    assert tight_box(m).dtype == np.float32
    single = np.zeros((4, 4), dtype=bool)
    single[3, 1] = True
    np.testing.assert_array_equal(tight_box(single), [1, 3, 0, 0])
    np.testing.assert_array_equal(tight_box(np.zeros((4, 4))), [0, 0, 0, 0])
    np.testing.assert_array_equal(tight_box(torch.from_numpy(m)), [3, 2, 5, 2])
    full = np.ones((7, 9))
    np.testing.assert_array_equal(tight_box(full), [0, 0, 8, 6])


def test_tight_boxes_vs_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    masks = random_masks(gen, 30, 40, 50).numpy()
    want = np.zeros((30, 4), dtype=np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys):
            want[i] = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
    np.testing.assert_array_equal(tight_boxes(masks), want)
    np.testing.assert_array_equal(tight_boxes(torch.from_numpy(masks)), want)


def test_box_iou_hand_cases():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # the same box -> 1
            [5, 5, 10, 10],  # overlap 25, union 175
            [20, 20, 5, 5],  # disjoint -> 0
            [10, 0, 10, 10],  # touching edge -> 0
            [2, 2, 4, 4],  # inside: 16 / 100
        ],
        dtype=np.float32,
    )
    got = box_iou(boxes, np.array([0, 0, 10, 10], dtype=np.float32))
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, [1.0, 25 / 175, 0.0, 0.0, 0.16], rtol=1e-6)
    # zero-area boxes: zero union gives 0, not NaN (the reference gives NaN)
    z = box_iou(torch.zeros(2, 4), torch.zeros(4))
    assert isinstance(z, torch.Tensor)
    assert torch.equal(z, torch.zeros(2))


def test_anchor_index_first_max_on_ties():
    gt = np.array([0, 0, 10, 10], dtype=np.float32)
    cands = np.array([[50, 50, 1, 1], [5, 0, 10, 10], [0, 5, 10, 10], [0, 0, 9, 9]], np.float32)
    # IoUs: 0, 50/150, 50/150, 81/100 -> 3
    assert anchor_index(cands, gt) == 3
    assert anchor_index(cands[:3], gt) == 1  # tie between 1 and 2 -> first
    assert anchor_index(torch.from_numpy(cands[:1]), torch.from_numpy(gt)) == 0
    assert anchor_index(np.zeros((3, 4), np.float32), np.zeros(4, np.float32)) == 0


def test_quarter_masks_from_the_worker_give_the_same_descriptors(seed):
    """The loader worker sends masks already resized to the dense map: same bits."""
    rng = np.random.default_rng(seed)
    for crop in ((70, 98), (126, 224), (56, 56)):
        h, w = crop[0] // 4, crop[1] // 4
        dense = torch.from_numpy(rng.standard_normal((8, h, w)).astype(np.float32))
        masks = (rng.random((5, *crop)) < 0.2).astype(np.uint8)
        masks[1] = 0  # an empty mask
        boxes = torch.from_numpy(tight_boxes(masks))
        small = quarter_masks(masks)
        assert small.shape == (5, h, w) and small.dtype == np.uint8
        want = mask_descriptors(dense, torch.from_numpy(masks), boxes)
        got = mask_descriptors(dense, torch.from_numpy(small), boxes, crop)
        assert torch.equal(got, want)
