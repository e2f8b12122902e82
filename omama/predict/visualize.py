"""PNGs a person reads at a glance: one per pair, and one contact sheet of them, worst first.

Each pair's picture is a light caption strip (what the pair is, the confidence, the IoU and a
colour legend) above two panels at a readable height: the source image with the query mask,
and the destination image with the prediction and the ground truth. The three outlines have
three colours, each with a dark halo so it reads on bright and dark frames alike; the text is
never drawn over an image. `contact_sheet.png` tiles every pair, lowest IoU first.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from omama import rle
from omama.cache.reader import Cache
from omama.files import atomic_path
from omama.masks import mask_iou
from omama.predict.scoring import Scored

# outline colours (RGB), named in the legend line
QUERY = (255, 160, 0)  # orange: the source mask
PREDICTION = (0, 190, 255)  # sky blue: the chosen candidate
GROUND_TRUTH = (255, 0, 200)  # magenta: the annotated destination mask
LEGEND = (("query", QUERY), ("prediction", PREDICTION), ("ground truth", GROUND_TRUTH))

STRIP_BG = (245, 245, 245)  # caption strip background
INK = (20, 20, 20)  # caption text
GAP = 8  # white columns between the two panels
PANEL_H = 384  # panel height in a pair's picture
TILE_H = 160  # panel height in the contact sheet
SHEET_COLS = 4
FONT = cv2.FONT_HERSHEY_SIMPLEX
LINE_H = 26  # caption line height at scale 0.6
CAPTION_H = 2 * LINE_H + 8  # the strip above a pair's picture: caption line and legend line


def pair_iou(cache: Cache, direction: str, s: Scored) -> float | None:
    """IoU of the predicted candidate with the ground truth at the crop size; None when the
    object is not visible in the destination."""
    x = s.sample
    if x.dst_k < 0:
        return None
    pred = rle.decode(cache.cand_rle(direction, x.dst, s.best), x.dst)
    return mask_iou(pred, _at(cache.obj_rle(x.dst, x.dst_k), pred.shape[:2], x.dst))


def worst_first(ious: list[float | None]) -> list[int]:
    """Indices ordered by IoU, lowest first; pairs without an IoU (not visible) last, each group
    in its input order."""
    order = sorted((v, i) for i, v in enumerate(ious) if v is not None)
    return [i for _, i in order] + [i for i, v in enumerate(ious) if v is None]


def _at(mask_rle: dict, hw: tuple[int, int], where: str) -> np.ndarray:
    mask = rle.decode(mask_rle, where)
    return cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def _outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], width: int):
    """Draw the mask's outline in `colour` over a 2 px wider dark halo, in place."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, (0, 0, 0), width + 2)
    cv2.drawContours(image, contours, -1, colour, width)


def _tint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    m = mask.astype(bool)
    image[m] = (0.65 * image[m] + 0.35 * np.array(colour)).astype(np.uint8)


def _panel(image: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    """The image scaled to `height` (linear), and the scale."""
    scale = height / image.shape[0]
    width = max(1, round(image.shape[1] * scale))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR), scale


def panels(cache: Cache, direction: str, s: Scored, height: int) -> np.ndarray:
    """Source panel | gap | destination panel, `height` px high, outlines drawn at that size
    (masks upscaled with nearest neighbour, so edges stay crisp)."""
    x = s.sample
    src, _ = _panel(cache.pixels(x.src), height)
    query = _at(cache.obj_rle(x.src, x.src_k), src.shape[:2], x.src)
    _tint(src, query, QUERY)
    _outline(src, query, QUERY, 3)
    dst, _ = _panel(cache.pixels(x.dst), height)
    pred = rle.decode(cache.cand_rle(direction, x.dst, s.best), x.dst)
    pred = cv2.resize(pred, (dst.shape[1], dst.shape[0]), interpolation=cv2.INTER_NEAREST)
    _tint(dst, pred, PREDICTION)
    _outline(dst, pred, PREDICTION, 5)  # wider: still seen where the GT outline lies on it
    if x.dst_k >= 0:
        _outline(dst, _at(cache.obj_rle(x.dst, x.dst_k), dst.shape[:2], x.dst), GROUND_TRUTH, 2)
    gap = np.full((height, GAP, 3), 255, np.uint8)
    return np.concatenate([src, gap, dst], axis=1)


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float) -> int:
    """Dark text at `org` (left, baseline); returns the x just after it."""
    cv2.putText(canvas, text, org, FONT, scale, INK, 1, cv2.LINE_AA)
    return org[0] + cv2.getTextSize(text, FONT, scale, 1)[0][0]


def _fit(text: str, width: int, scale: float) -> float:
    """`scale`, shrunk so that `text` fits in `width` px."""
    w = cv2.getTextSize(text, FONT, scale, 1)[0][0]
    return scale if w <= width else scale * width / w


def caption(s: Scored, iou: float | None, sides: bool = False) -> str:
    """What the pair is, its confidence and IoU; `sides`: say which panel is which camera."""
    x = s.sample
    if sides:
        x = replace(x, src_cam=f"{x.src_cam} (left)", dst_cam=f"{x.dst_cam} (right)")
    seen = f"IoU {iou:.2f}" if iou is not None else "not visible"
    return f"{x.obj}  {x.src_cam} -> {x.dst_cam}  frame {x.frame}  conf {s.confidence:.2f}  {seen}"


def _strip(width: int, lines: list[str], legend: bool, scale: float, line_h: int) -> np.ndarray:
    """A light strip holding `lines` of text and, optionally, the colour legend line."""
    rows = len(lines) + int(legend)
    strip = np.full((rows * line_h + 8, width, 3), STRIP_BG, np.uint8)
    base = line_h - 8
    for text in lines:
        _text(strip, text, (8, base), _fit(text, width - 16, scale))
        base += line_h
    if legend:
        left = 8
        for name, colour in LEGEND:
            cv2.rectangle(strip, (left, base - 12), (left + 22, base), (0, 0, 0), -1)
            cv2.rectangle(strip, (left + 2, base - 10), (left + 20, base - 2), colour, -1)
            left = _text(strip, name, (left + 28, base), scale) + 18
    return strip


def render(cache: Cache, direction: str, s: Scored, iou: float | None = None) -> np.ndarray:
    """One pair's RGB picture: caption strip (`CAPTION_H` px) above the panels."""
    if iou is None:
        iou = pair_iou(cache, direction, s)
    body = panels(cache, direction, s, PANEL_H)
    strip = _strip(body.shape[1], [caption(s, iou, sides=True)], True, 0.6, LINE_H)
    return np.concatenate([strip, body], axis=0)


def contact_sheet(
    cache: Cache, direction: str, scored: list[Scored], ious: list[float | None]
) -> np.ndarray:
    """Every pair as a small tile with a one-line caption, worst IoU first, in a grid under
    the legend; not-visible pairs come last."""
    tiles = []
    for i in worst_first(ious):
        body = panels(cache, direction, scored[i], TILE_H)
        text = f"#{i:03d} " + caption(scored[i], ious[i])
        tiles.append(np.concatenate([_strip(body.shape[1], [text], False, 0.45, 20), body]))
    tile_h = max(t.shape[0] for t in tiles)
    tile_w = max(t.shape[1] for t in tiles)
    cols = min(SHEET_COLS, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    pad = 10
    sheet_w = cols * tile_w + (cols + 1) * pad
    title = f"{len(tiles)} pairs by IoU, worst first (not visible last)"
    head = _strip(sheet_w, [title], True, 0.6, LINE_H)
    sheet = np.full((rows * (tile_h + pad) + pad, sheet_w, 3), 255, np.uint8)
    for n, tile in enumerate(tiles):
        top = pad + (n // cols) * (tile_h + pad)
        left = pad + (n % cols) * (tile_w + pad)
        sheet[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return np.concatenate([head, sheet], axis=0)


def _write_png(rgb: np.ndarray, path: Path) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path.name} as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def write_visualizations(
    cache: Cache, direction: str, scored: list[Scored], folder: Path, worst: int | None = None
) -> list[Path]:
    """One PNG per pair (in input order) and `contact_sheet.png`; returns the paths written.
    With `worst` = K: only the K pairs of lowest IoU among all of `scored` (not-visible pairs
    after every visible one), numbered worst first."""
    folder.mkdir(parents=True, exist_ok=True)
    ious = [pair_iou(cache, direction, s) for s in scored]
    if worst is not None:
        keep = worst_first(ious)[:worst]
        scored, ious = [scored[i] for i in keep], [ious[i] for i in keep]
    paths = []
    for i, (s, iou) in enumerate(zip(scored, ious, strict=True)):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{i:03d}_{s.sample.obj}_{s.sample.frame}")
        paths.append(folder / f"{name}.png")
        _write_png(render(cache, direction, s, iou), paths[-1])
    if scored:
        paths.append(folder / "contact_sheet.png")
        _write_png(contact_sheet(cache, direction, scored, ious), paths[-1])
    return paths
