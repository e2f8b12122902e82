"""PNGs a person checks at a glance: source mask | prediction (green) and ground truth (red)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from omama import rle
from omama.cache.reader import Cache
from omama.files import atomic_path
from omama.predict.scoring import Scored


def overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Tint the mask and draw its outline, on an RGB image."""
    out = image.copy()
    m = mask.astype(bool)
    out[m] = (0.5 * out[m] + 0.5 * np.array(colour)).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 2)
    return out


def _at(mask_rle: dict, hw: tuple[int, int], where: str) -> np.ndarray:
    mask = rle.decode(mask_rle, where)
    return cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def render(cache: Cache, direction: str, s: Scored) -> np.ndarray:
    x = s.sample
    src_img = cache.pixels(x.src)
    dst_img = cache.pixels(x.dst)
    src = overlay(
        src_img, _at(cache.obj_rle(x.src, x.src_k), src_img.shape[:2], x.src), (255, 200, 0)
    )
    pred = rle.decode(cache.cand_rle(direction, x.dst, s.best), x.dst)
    dst = overlay(dst_img, pred, (0, 220, 0))
    if x.dst_k >= 0:
        gt = _at(cache.obj_rle(x.dst, x.dst_k), dst_img.shape[:2], x.dst)
        contours, _ = cv2.findContours(gt, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(dst, contours, -1, (255, 0, 0), 2)
    h = max(src.shape[0], dst.shape[0])
    src = cv2.resize(src, (round(src.shape[1] * h / src.shape[0]), h))
    dst = cv2.resize(dst, (round(dst.shape[1] * h / dst.shape[0]), h))
    canvas = np.concatenate([src, np.full((h, 8, 3), 255, np.uint8), dst], axis=1)
    text = f"{x.obj} {x.src_cam}->{x.dst_cam} f{x.frame} conf {s.confidence:.2f}"
    text += "" if x.dst_k >= 0 else " (not visible)"
    cv2.putText(canvas, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2)
    cv2.putText(canvas, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return canvas


def write_visualizations(cache: Cache, direction: str, scored: list[Scored], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(scored):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{i:03d}_{s.sample.obj}_{s.sample.frame}")
        with atomic_path(folder / f"{name}.png") as tmp:
            ok, buf = cv2.imencode(
                ".png", cv2.cvtColor(render(cache, direction, s), cv2.COLOR_RGB2BGR)
            )
            tmp.write_bytes(buf.tobytes())
