"""Rendering: the views of one take, with their masks, occluders and visibility checks.

`build_take` draws a take's world, cameras and object trajectories from one generator and
renders every (camera, frame) view. Objects leave views (outside the field of view, under the
hand in front of the ego camera, behind an exo camera's pillar); a mask too small to annotate
at the crop size is dropped, so such (object, camera, frame) triples get no annotation, as in
the real data. A take is redrawn until each of the four visibility cases occurs.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import cv2
import numpy as np

from omama.dataset.images import resize_mask
from omama.synth.cameras import (
    MARGIN,
    Cam,
    ego_quad,
    exo_quad,
    homography,
    ppu_for,
    project,
    rotation,
)
from omama.synth.config import EGO_CAM, SynthConfig
from omama.synth.world import SceneObject, background, make_objects, smooth_noise

log = logging.getLogger(__name__)


@dataclass
class View:
    """One rendered image with its per-object masks at jpg size."""

    image: np.ndarray  # H x W x 3 BGR uint8
    masks: dict[str, np.ndarray]  # object -> H x W uint8 0/1 (after occlusion), non-empty only
    occluders: list[np.ndarray]  # H x W uint8 masks of the hand / pillar
    labels: np.ndarray  # H x W uint8 background region labels


def _hand_polygon(rng: np.random.Generator, hw: tuple[int, int]) -> list[np.ndarray]:
    h, w = hw
    cx = rng.uniform(0.2, 0.8) * w
    cy = rng.uniform(0.88, 1.0) * h
    ax, ay = rng.uniform(0.13, 0.2) * w, rng.uniform(0.1, 0.15) * h
    palm = cv2.ellipse2Poly(
        (int(cx), int(cy)), (int(ax), int(ay)), int(rng.uniform(-25, 25)), 0, 360, 10
    )
    polys = [
        palm,
        np.array([[cx - ax * 0.8, cy], [cx + ax * 0.8, cy], [cx + ax, h], [cx - ax, h]]).astype(
            np.int32
        ),
    ]
    for k in range(int(rng.integers(3, 5))):
        fx = cx + (k - 1.5) * ax * 0.5
        tip = (fx + rng.normal(0, 0.1) * ax, cy - ay * rng.uniform(1.6, 2.2))
        finger = cv2.ellipse2Poly(
            (int((fx + tip[0]) / 2), int((cy + tip[1]) / 2)),
            (max(2, int(ax * 0.2)), max(3, int((cy - tip[1]) / 2))),
            int(np.degrees(np.arctan2(tip[0] - fx, cy - tip[1]))),
            0,
            360,
            15,
        )
        polys.append(finger)
    return polys


def _pillar_polygon(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    x = rng.uniform(0.15, 0.85) * w
    half = rng.uniform(0.025, 0.045) * w
    slant = rng.uniform(-0.04, 0.04) * w
    return np.array(
        [[x - half + slant, 0], [x + half + slant, 0], [x + half, h], [x - half, h]]
    ).astype(np.int32)


def render(
    cam: Cam,
    frame_i: int,
    world: np.ndarray,
    labels: np.ndarray,
    objects: list[SceneObject],
    ppu: float,
    rng: np.random.Generator,
    hand_prob: float,
) -> View:
    """Render frame `frame_i` of `cam`: warp the plane, paste the objects (later ones on top),
    add the hand (ego, with chance `hand_prob`) or pillar, then camera gain, offset and noise."""
    h, w = cam.hw
    hmat = homography(cam.quads[frame_i], cam.hw, ppu)
    img = cv2.warpPerspective(
        world, hmat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    img = img.astype(np.float32)
    lab = cv2.warpPerspective(
        labels, hmat, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT101
    )
    full = _paste_objects(img, cam, frame_i, hmat, objects, ppu)
    occluders = _add_occluders(img, cam, rng, hand_prob)
    for occ in occluders:
        for m in full.values():
            m &= 1 - occ
    image = _camera_response(img, cam, rng)
    masks = {k: v for k, v in full.items() if v.any()}
    return View(image, masks, occluders, lab)


def _paste_objects(
    img: np.ndarray,
    cam: Cam,
    frame_i: int,
    hmat: np.ndarray,
    objects: list[SceneObject],
    ppu: float,
) -> dict[str, np.ndarray]:
    """Paste the objects into `img` in place (later ones on top); each one's full-frame mask,
    less what the ones above it cover."""
    h, w = cam.hw
    # the sign of w in front of the camera (getPerspectiveTransform fixes h33 = 1, not the sign)
    front = np.sign(
        project(hmat, ((cam.quads[frame_i].mean(0, keepdims=True)) + MARGIN) * ppu)[1][0]
    )
    full: dict[str, np.ndarray] = {}
    for obj in objects:  # later objects lie on top
        d = obj.alpha.shape[0]
        rot = rotation(obj.angle[frame_i])
        centre_px = (obj.pos[frame_i] + MARGIN) * ppu
        aff = np.eye(3)
        aff[:2, :2] = rot
        aff[:2, 2] = centre_px - rot @ np.array([d / 2, d / 2])
        m = hmat @ aff
        corners, wz = project(m, np.array([[0, 0], [d, 0], [d, d], [0, d]], np.float64))
        if np.any(wz * front <= 0):  # behind the camera
            continue
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        mm = shift @ m
        size = (x1 - x0, y1 - y0)
        a = cv2.warpPerspective(obj.alpha, mm, size, flags=cv2.INTER_LINEAR) > 127
        if not a.any():
            continue
        s = cv2.warpPerspective(obj.sprite, mm, size, flags=cv2.INTER_LINEAR)
        roi = img[y0:y1, x0:x1]
        roi[a] = s[a]
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y1, x0:x1] = a
        for other in full.values():  # this object covers the ones below it
            other[y0:y1, x0:x1] &= ~a
        full[obj.name] = mask
    return full


def _add_occluders(
    img: np.ndarray, cam: Cam, rng: np.random.Generator, hand_prob: float
) -> list[np.ndarray]:
    """Paint the hand (ego, with chance `hand_prob`) and the camera's pillar into `img` in
    place; their masks."""
    h, w = cam.hw
    occluders = []
    if cam.is_ego and rng.random() < hand_prob:
        occ = np.zeros((h, w), np.uint8)
        cv2.fillPoly(occ, _hand_polygon(rng, cam.hw), 1)
        skin = np.array([120, 150, 205], np.float32) + rng.normal(0, 12, size=3)
        shade = 0.85 + 0.15 * smooth_noise(rng, max(h, w), 4, 1)[:h, :w]
        img[occ > 0] = skin[None] * shade[occ > 0]
        occluders.append(occ)
    if cam.pillar is not None:
        occ = np.zeros((h, w), np.uint8)
        cv2.fillPoly(occ, [cam.pillar], 1)
        yy = np.arange(h, dtype=np.float32)[:, None] / h
        xx = np.arange(w, dtype=np.float32)[None, :]
        tone = 105 + 40 * yy + 10 * np.sin(xx * 0.7)
        col = np.stack([tone * 0.95, tone, tone * 1.05], axis=-1)
        img[occ > 0] = col[occ > 0]
        occluders.append(occ)
    return occluders


def _camera_response(img: np.ndarray, cam: Cam, rng: np.random.Generator) -> np.ndarray:
    """Photometric differences between cameras: gain, offset, vignetting (ego), noise; the
    8-bit image."""
    h, w = cam.hw
    img = img * cam.gain + cam.bias
    if cam.is_ego:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (0.5 * (h * h + w * w) / 2)
        img *= (1 - 0.3 * r2)[..., None]
    img += rng.normal(0, cam.noise, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Take:
    """A rendered take: its cameras and every camera's views, frame by frame."""

    uid: str
    name: str
    split: str
    cams: list[Cam]
    views: dict[str, list[View]]  # cam -> per frame
    objects: list[str]


def _cases_ok(take_views: dict[str, list[View]], ego: str, exos: list[str], n_frames: int) -> dict:
    """Count the four visibility cases of a take (on annotated = visible at crop size)."""
    cases = {"exo2ego_vis": 0, "exo2ego_hid": 0, "ego2exo_vis": 0, "ego2exo_hid": 0}
    for f in range(n_frames):
        ego_vis = set(take_views[ego][f].masks)
        for exo in exos:
            exo_vis = set(take_views[exo][f].masks)
            cases["exo2ego_vis"] += len(exo_vis & ego_vis)
            cases["exo2ego_hid"] += len(exo_vis - ego_vis)
            cases["ego2exo_vis"] += len(ego_vis & exo_vis)
            cases["ego2exo_hid"] += len(ego_vis - exo_vis)
    return cases


def _visible_only(view: View, cam: Cam) -> None:
    """Drop masks too small to annotate once brought to the crop size (as a loader sees them)."""
    ch, cw = cam.crop_hw
    min_px = max(12, int(0.0005 * ch * cw))
    keep = {}
    for name, m in view.masks.items():
        orig = resize_mask(m, cam.orig_hw)
        if int(resize_mask(orig, (ch, cw)).sum()) >= min_px:
            keep[name] = m
    view.masks = keep


def build_take(
    rng: np.random.Generator, cfg: SynthConfig, index: int, split: str, portrait: bool
) -> Take:
    """Draw and render take `index` of `split`; with `portrait` its last exo camera is portrait.

    The ego camera's path is forced through one exo camera's blind near strip (and away from
    it at another frame), then the scene is redrawn up to `max_retries` times until each of
    the four visibility cases occurs.
    """
    frames = cfg.frames
    ego_hw = cfg.resolved_ego_hw()
    ppu = ppu_for(ego_hw)
    size = int(round((1 + 2 * MARGIN) * ppu))
    uid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    name = f"synth_take_{index:03d}"
    world, labels = background(rng, size, ppu)
    world_exo = cv2.GaussianBlur(world, (0, 0), 0.8)  # exo views sample the plane sparser
    exo_names = cfg.exo_names()
    exo_cams = _exo_cams(rng, cfg, exo_names, portrait)

    for _attempt in range(max(1, cfg.max_retries)):
        ego, f_star, u = _ego_cam(rng, cfg, exo_cams, ego_hw)
        forced = (int(rng.integers(cfg.objects)), f_star, u)
        objects = make_objects(rng, cfg.objects, frames, ppu, forced)
        z = rng.permutation(len(objects))
        ordered = [objects[i] for i in z]

        cams = [ego] + [c for c, _ in exo_cams]
        views: dict[str, list[View]] = {}
        for cam in cams:
            views[cam.name] = []
            for f in range(frames):
                plane = world if cam.is_ego else world_exo
                view = render(cam, f, plane, labels, ordered, ppu, rng, cfg.hand_prob)
                _visible_only(view, cam)
                views[cam.name].append(view)
        cases = _cases_ok(views, EGO_CAM, exo_names, frames)
        if all(v > 0 for v in cases.values()):
            break
        log.debug("take %d attempt %d lacks a visibility case: %s", index, _attempt, cases)
    else:
        log.warning("take %s: not every visibility case occurs (%s)", name, cases)
    return Take(uid, name, split, cams, views, [o.name for o in objects])


def _exo_cams(
    rng: np.random.Generator, cfg: SynthConfig, exo_names: list[str], portrait: bool
) -> list[tuple[Cam, float]]:
    """The take's static exo cameras around the plane, each with its azimuth; with
    `portrait` the last one is portrait."""
    frames, exo_hw = cfg.frames, cfg.resolved_exo_hw()
    phi0 = rng.uniform(0, 2 * np.pi)
    exo_cams = []
    for k, cam_name in enumerate(exo_names):
        hw = (exo_hw[1], exo_hw[0]) if portrait and k == len(exo_names) - 1 else exo_hw
        phi = phi0 + 2 * np.pi * k / len(exo_names) + rng.uniform(-0.3, 0.3)
        cam = Cam(cam_name, hw, cfg.exo_scale, [exo_quad(phi, hw, rng)] * frames)
        cam.gain = (rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, size=3)).astype(np.float32)
        cam.bias = rng.uniform(-10, 10, size=3).astype(np.float32)
        cam.noise = float(rng.uniform(1.5, 4.0))
        if rng.random() < cfg.pillar_prob:
            cam.pillar = _pillar_polygon(rng, hw)
        exo_cams.append((cam, phi))
    return exo_cams


def _ego_cam(
    rng: np.random.Generator,
    cfg: SynthConfig,
    exo_cams: list[tuple[Cam, float]],
    ego_hw: tuple[int, int],
) -> tuple[Cam, int, np.ndarray]:
    """The wandering ego camera; at frame f* it looks into one exo camera's blind strip
    (direction u from the centre): (camera, f*, u)."""
    frames = cfg.frames
    f_star = int(rng.integers(frames))
    k_star = int(rng.integers(len(exo_cams)))
    phi = exo_cams[k_star][1]
    u = np.array([np.cos(phi), np.sin(phi)])
    centres = np.zeros((frames, 2))
    centres[f_star] = 0.5 + 0.27 * u
    for f in list(range(f_star + 1, frames)) + list(range(f_star - 1, -1, -1)):
        prev = centres[f - 1] if f > f_star else centres[f + 1]
        step = rng.normal(size=2)
        step *= rng.uniform(0.06, 0.16) / (np.linalg.norm(step) + 1e-9)
        centres[f] = np.clip(prev + step, 0.25, 0.75)
    if frames > 1:  # and at another frame it looks away, so it misses that object there
        f_away = (f_star + int(rng.integers(1, frames))) % frames
        centres[f_away] = np.clip(0.5 - 0.25 * u + rng.normal(0, 0.05, size=2), 0.25, 0.75)
    thetas = rng.uniform(-np.pi, np.pi) + np.cumsum(rng.normal(0, 0.15, size=frames))
    ego = Cam(
        EGO_CAM,
        ego_hw,
        cfg.ego_scale,
        [ego_quad(c, t) for c, t in zip(centres, thetas, strict=True)],
    )
    ego.gain = (rng.uniform(0.9, 1.1) * rng.uniform(0.95, 1.05, size=3)).astype(np.float32)
    ego.bias = rng.uniform(-8, 8, size=3).astype(np.float32)
    ego.noise = float(rng.uniform(1.5, 3.0))
    return ego, f_star, u
