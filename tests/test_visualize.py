"""The --visualize pictures: caption strip above the panels, three named outline colours, a
readable size, and a contact sheet ordered worst IoU first."""

from __future__ import annotations

import cv2
import numpy as np

from omama import rle
from omama.cache.reader import Cache
from omama.predict import visualize as vis
from omama.predict.scoring import random_scores


def test_worst_first_orders_by_iou_with_invisible_pairs_last():
    assert vis.worst_first([0.5, None, 0.1, 0.9, None, 0.1]) == [2, 5, 0, 3, 1, 4]
    assert vis.worst_first([]) == []
    assert vis.worst_first([None, None]) == [0, 1]


def _outline_pixels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours])
    return pts[:, 1], pts[:, 0]  # rows, cols


def _share(image: np.ndarray, rows, cols, colour) -> float:
    return float(np.all(image[rows, cols] == np.array(colour), axis=-1).mean())


def test_pair_picture_has_strip_legend_colours_and_size(cache_dir, tmp_path):
    cache = Cache(cache_dir)
    samples = [s for s in cache.samples("exo2ego", "test") if s.visible]
    s = random_scores(cache, "exo2ego", samples[:1], seed=0)[0]
    x = s.sample
    pic = vis.render(cache, "exo2ego", s)
    assert pic.shape[0] >= 360 and pic.shape[0] == vis.CAPTION_H + vis.PANEL_H

    # the strip: background except the text and the legend's swatches; no image pixel in it
    strip = pic[: vis.CAPTION_H]
    bg = np.all(strip == np.array(vis.STRIP_BG), axis=-1)
    assert bg.mean() > 0.8
    assert bg[:2].all() and bg[-2:].all() and bg[:, :4].all()  # clear margins
    ink = strip[~bg]
    grey = (ink == ink[:, :1]).all(axis=-1)  # the anti-aliased dark text
    swatch = np.array([c for _, c in vis.LEGEND] + [(0, 0, 0)])
    assert (ink[~grey][:, None] == swatch[None]).all(-1).any(-1).all()  # or a legend swatch
    for _, colour in vis.LEGEND:  # each colour has its swatch in the legend line
        assert np.all(strip[vis.LINE_H :] == np.array(colour), axis=-1).sum() >= 100

    # the outlines: query on the source panel, prediction and ground truth on the destination
    body = pic[vis.CAPTION_H :]
    h = vis.PANEL_H
    src_img, dst_img = cache.pixels(x.src), cache.pixels(x.dst)
    src_w = round(src_img.shape[1] * h / src_img.shape[0])
    dst_w = round(dst_img.shape[1] * h / dst_img.shape[0])
    assert body.shape[1] == src_w + vis.GAP + dst_w
    src, dst = body[:, :src_w], body[:, src_w + vis.GAP :]

    def at(mask_rle, w):
        m = rle.decode(mask_rle)
        return cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)

    query = at(cache.obj_rle(x.src, x.src_k), src_w)
    assert _share(src, *_outline_pixels(query), vis.QUERY) > 0.9
    gt = at(cache.obj_rle(x.dst, x.dst_k), dst_w)
    assert _share(dst, *_outline_pixels(gt), vis.GROUND_TRUTH) > 0.9
    pred = at(cache.cand_rle("exo2ego", x.dst, s.best), dst_w)
    rows, cols = _outline_pixels(pred)
    near = np.zeros(dst.shape[:2], bool)  # the prediction's wide outline around its contour
    near[rows, cols] = True
    near = cv2.dilate(near.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.all(dst[near] == np.array(vis.PREDICTION), axis=-1).sum() >= len(rows) // 2
    # each colour only where its outline (or the legend) is: not on the other panel
    assert not np.all(src == np.array(vis.GROUND_TRUTH), axis=-1).any()
    assert not np.all(dst == np.array(vis.QUERY), axis=-1).any()


def test_write_visualizations_writes_pairs_and_a_contact_sheet(cache_dir, tmp_path):
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", "test")[:6]
    scored = random_scores(cache, "exo2ego", samples, seed=1)
    paths = vis.write_visualizations(cache, "exo2ego", scored, tmp_path / "vis")
    sheet_path = tmp_path / "vis" / "contact_sheet.png"
    assert paths[-1] == sheet_path and len(paths) == len(scored) + 1
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    pair = cv2.imread(str(paths[0]))
    assert pair.shape[0] >= 360
    sheet = cv2.imread(str(sheet_path))
    assert sheet.shape[0] > vis.CAPTION_H + vis.TILE_H and sheet.shape[1] > 2 * vis.TILE_H

    ious = [vis.pair_iou(cache, "exo2ego", s) for s in scored]
    assert any(v is not None for v in ious)
    order = vis.worst_first(ious)
    seen = [ious[i] for i in order if ious[i] is not None]
    assert seen == sorted(seen)
    assert all(ious[i] is None for i in order[len(seen) :])
    # the sheet's tiles follow that order: the first tile is the worst pair's picture
    want = vis.contact_sheet(cache, "exo2ego", scored, ious)
    assert np.array_equal(cv2.cvtColor(want, cv2.COLOR_RGB2BGR), sheet)
    first = vis.panels(cache, "exo2ego", scored[order[0]], vis.TILE_H)
    top = vis.CAPTION_H + 10 + 28  # legend strip, padding, the tile's one-line caption strip
    got = want[top : top + vis.TILE_H, 10 : 10 + first.shape[1]]
    assert np.array_equal(got, first)


def test_worst_k_are_the_lowest_iou_pairs_of_the_whole_split(cache_dir, tmp_path):
    """--visualize K draws the K pairs of lowest IoU among all pairs, not the first K."""
    cache = Cache(cache_dir)
    samples = cache.samples("exo2ego", "test")
    scored = random_scores(cache, "exo2ego", samples, seed=3)
    ious = [vis.pair_iou(cache, "exo2ego", s) for s in scored]
    seen = sorted(v for v in ious if v is not None)
    k = 3
    paths = vis.write_visualizations(cache, "exo2ego", scored, tmp_path / "vis", worst=k)
    assert len(paths) == k + 1
    # each picture is the render of the pair of that rank, plainly sorted here
    ranked = sorted((v, i) for i, v in enumerate(ious) if v is not None)[:k]
    assert [v for v, _ in ranked] == seen[:k]
    for path, (v, i) in zip(paths[:k], ranked, strict=True):
        want = cv2.cvtColor(vis.render(cache, "exo2ego", scored[i], v), cv2.COLOR_RGB2BGR)
        assert np.array_equal(cv2.imread(str(path)), want)
    # on this split the worst pairs are not its first ones, so the test tells the two apart
    assert [i for _, i in ranked] != list(range(k))
