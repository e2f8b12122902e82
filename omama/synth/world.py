"""The world of one take: a textured plane (table or floor) and the objects lying on it.

World coordinates are units: the scene spans [0, 1] x [0, 1], drawn on a square canvas that
also covers a margin around it (see omama.synth.cameras). The background carries region labels
(Voronoi tiles with their own tint and pattern) that candidate distractors are cut from; each
object is a flat, distinctly coloured and patterned sprite with a trajectory over the frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FORCED_DIST = 0.35  # where the "hidden from one exo camera" object sits at its frame

# name, BGR colour
PALETTE = (
    ("red", (40, 40, 215)),
    ("green", (60, 165, 40)),
    ("blue", (215, 85, 35)),
    ("yellow", (40, 210, 235)),
    ("purple", (165, 55, 135)),
    ("orange", (30, 135, 245)),
    ("cyan", (210, 200, 40)),
    ("pink", (180, 120, 240)),
    ("brown", (40, 75, 130)),
    ("white", (235, 235, 235)),
    ("black", (35, 30, 30)),
    ("teal", (120, 120, 20)),
    ("lime", (50, 220, 160)),
    ("navy", (110, 35, 25)),
)
_SHAPES = ("ellipse", "rect", "polygon", "ring", "cross", "star")
_NOUNS = {
    "ellipse": ("plate", "bowl", "lid"),
    "rect": ("box", "book", "cutting board"),
    "polygon": ("bag", "rock", "leaf"),
    "ring": ("mug", "tape", "bracelet"),
    "cross": ("tool", "bracket"),
    "star": ("toy", "star"),
}
_FILLS = ("stripes", "checker", "dots", "rings", "gradient", "solid")
MAX_OBJECTS = len(PALETTE)  # one colour per object of a take


@dataclass
class SceneObject:
    """One flat object: its sprite, silhouette and pose per frame."""

    name: str
    sprite: np.ndarray  # D x D x 3 uint8 BGR
    alpha: np.ndarray  # D x D uint8 0/255
    pos: np.ndarray  # F x 2 world units
    angle: np.ndarray  # F radians


def smooth_noise(rng: np.random.Generator, size: int, cells: int, ch: int) -> np.ndarray:
    """Size x size x ch float32 smooth noise: a cells x cells normal grid, cubic-upsampled."""
    grid = rng.normal(size=(cells, cells, ch)).astype(np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, ch)


def background(rng: np.random.Generator, size: int, ppu: float) -> tuple[np.ndarray, np.ndarray]:
    """A textured world canvas (BGR uint8) and its region labels (uint8, Voronoi tiles)."""
    base = rng.uniform(90, 190, size=3).astype(np.float32)
    base = base * 0.35 + base.mean() * 0.65  # muted so that objects stand out
    lum = 22 * smooth_noise(rng, size, 6, 1) + 8 * smooth_noise(rng, size, 24, 1)
    img = base + lum + 8 * smooth_noise(rng, size, 6, 3)

    # region labels: Voronoi tiles with a noisy domain warp, computed at a quarter resolution
    low = max(32, size // 4)
    n_regions = int(rng.integers(30, 50))
    seeds = rng.uniform(0, 1, size=(n_regions, 2)) * low
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32)
    warp = smooth_noise(rng, low, 5, 2) * (0.04 * low)
    px = (xx + warp[..., 0]).reshape(-1, 1)
    py = (yy + warp[..., 1]).reshape(-1, 1)
    d2 = (px - seeds[:, 0]) ** 2 + (py - seeds[:, 1]) ** 2
    labels_low = np.argmin(d2, axis=1).astype(np.uint8).reshape(low, low)
    labels = cv2.resize(labels_low, (size, size), interpolation=cv2.INTER_NEAREST)

    # per-region tint and one of a few pattern fields, so features differ across the plane
    coords = np.arange(size, dtype=np.float32) / ppu
    x, y = coords[None, :], coords[:, None]
    fields = [np.zeros((size, size), np.float32)]
    for _ in range(2):
        a = rng.uniform(0, np.pi)
        period = rng.uniform(0.015, 0.05)
        fields.append(np.sin((np.cos(a) * x + np.sin(a) * y) * (2 * np.pi / period)))
    f = 2 * np.pi / rng.uniform(0.03, 0.08)
    fields.append(np.sign(np.sin(x * f) * np.sin(y * f)).astype(np.float32))
    grain = rng.normal(size=(size // 3 + 1, size // 3 + 1)).astype(np.float32)
    fields.append(cv2.resize(grain, (size, size), interpolation=cv2.INTER_LINEAR))
    stack = np.stack(fields)
    kind = rng.integers(0, len(fields), size=n_regions)
    amp = rng.uniform(4, 14, size=n_regions).astype(np.float32)
    tint = rng.normal(0, 12, size=(n_regions, 1)) + rng.normal(0, 6, size=(n_regions, 3))
    tint = tint.astype(np.float32)
    pattern = np.take_along_axis(stack, kind[labels][None].astype(np.intp), axis=0)[0]
    img += (amp[labels] * pattern)[..., None] + tint[labels]

    # clutter: small world-fixed marks (crumbs, pens, stains)
    img = np.clip(img, 0, 255).astype(np.uint8)
    n_clutter = int(rng.integers(70, 110))
    thick = max(1, round(ppu / 400))
    for _ in range(n_clutter):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        p = rng.uniform(0, size, size=2)
        r = rng.uniform(0.004, 0.015) * ppu
        kind_c = rng.integers(0, 3)
        if kind_c == 0:
            q = p + rng.normal(size=2) * 2 * r
            pt1 = (int(p[0]), int(p[1]))
            cv2.line(img, pt1, (int(q[0]), int(q[1])), colour, thick, cv2.LINE_AA)
        elif kind_c == 1:
            cv2.circle(img, (int(p[0]), int(p[1])), max(1, int(r)), colour, -1, cv2.LINE_AA)
        else:
            pts = (p + rng.normal(size=(4, 2)) * r).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    return img, labels


def _shape_alpha(shape: str, d: int, rng: np.random.Generator) -> np.ndarray:
    """A D x D 0/255 silhouette of the given shape kind, roughly filling the square."""
    a = np.zeros((d, d), np.uint8)
    c = (d // 2, d // 2)
    r = d / 2 * 0.95
    if shape == "ellipse":
        ax = (int(r), max(2, int(r * rng.uniform(0.55, 0.95))))
        cv2.ellipse(a, c, ax, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif shape == "rect":
        w, h = r * 0.95, r * rng.uniform(0.4, 0.8)
        box = cv2.boxPoints((c, (2 * w, 2 * h), float(rng.uniform(0, 180))))
        cv2.fillPoly(a, [box.astype(np.int32)], 255)
    elif shape == "polygon":
        n = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        rad = r * rng.uniform(0.6, 1.0, size=n)
        pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
        cv2.fillPoly(a, [pts.astype(np.int32)], 255)
    elif shape == "ring":
        cv2.circle(a, c, int(r), 255, -1)
        cv2.circle(a, c, max(1, int(r * rng.uniform(0.35, 0.55))), 0, -1)
    elif shape == "cross":
        t = r * rng.uniform(0.28, 0.4)
        for angle in (0.0, 90.0):
            box = cv2.boxPoints((c, (2 * r, 2 * t), angle + float(rng.uniform(-10, 10))))
            cv2.fillPoly(a, [box.astype(np.int32)], 255)
    else:  # star
        n = int(rng.integers(5, 8))
        ang = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
        rad = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.4, 0.6))
        pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
        cv2.fillPoly(a, [pts.astype(np.int32)], 255)
    return a


def _fill(
    fill: str, d: int, c1: np.ndarray, c2: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A D x D x 3 float texture mixing two colours with the given pattern."""
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32) / d
    a = rng.uniform(0, np.pi)
    period = rng.uniform(0.12, 0.3)
    if fill == "stripes":
        t = (np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * np.pi / period) > 0).astype(np.float32)
    elif fill == "checker":
        t = ((np.floor(xx / period * 1.5) + np.floor(yy / period * 1.5)) % 2).astype(np.float32)
    elif fill == "dots":
        cx = (xx / period) % 1 - 0.5
        cy = (yy / period) % 1 - 0.5
        t = (cx**2 + cy**2 < 0.09).astype(np.float32)
    elif fill == "rings":
        t = (np.sin(np.hypot(xx - 0.5, yy - 0.5) * 2 * np.pi / (period * 0.7)) > 0).astype(
            np.float32
        )
    elif fill == "gradient":
        t = np.clip(np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5) + 0.5, 0, 1)
    else:
        t = np.zeros((d, d), np.float32)
    tex = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    return tex + rng.normal(0, 6, size=(d, d, 3)).astype(np.float32)


def make_objects(
    rng: np.random.Generator,
    n: int,
    n_frames: int,
    ppu: float,
    forced: tuple[int, int, np.ndarray],
) -> list[SceneObject]:
    """Distinct objects with sprites and trajectories; `forced` = (object, frame, direction u).

    The forced object sits at frame f* next to the camera of direction u (inside that exo
    camera's blind near strip, where the ego camera looks at f*) and drifts inward later, so
    the ego2exo "visible in ego, hidden in an exo view" case always occurs.
    """
    colours = rng.permutation(len(PALETTE))[:n]
    shapes = [_SHAPES[i % len(_SHAPES)] for i in rng.permutation(max(n, len(_SHAPES)))][:n]
    fills = [_FILLS[i % len(_FILLS)] for i in rng.permutation(max(n, len(_FILLS)))][:n]
    radii = rng.uniform(0.05, 0.085, size=n)
    f_obj, f_frame, u = forced
    centres: list[np.ndarray] = []
    objects = []
    for i in range(n):
        # base position away from the others (a few tries, then accept an overlap)
        for _ in range(30):
            p0 = rng.uniform(0.14, 0.86, size=2)
            if all(np.linalg.norm(p0 - q) > 0.17 for q in centres):
                break
        vel = rng.normal(size=2)
        vel *= rng.uniform(0.008, 0.03) / (np.linalg.norm(vel) + 1e-9)
        pos = np.array([p0 + vel * f for f in range(n_frames)])
        if i == f_obj:
            v = np.array([-u[1], u[0]])
            anchor = 0.5 + FORCED_DIST * u + rng.uniform(-0.05, 0.05) * v
            radii[i] = min(radii[i], 0.07)
            pos = np.array(
                [
                    anchor - abs(f - f_frame) * 0.09 * u + (f - f_frame) * 0.01 * v
                    for f in range(n_frames)
                ]
            )
        pos = np.clip(pos, 0.08, 0.92)
        centres.append(pos[min(f_frame, n_frames - 1)])
        angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, size=n_frames))

        d = max(8, int(np.ceil(2 * radii[i] * ppu)))
        alpha = _shape_alpha(shapes[i], d, rng)
        name, bgr = PALETTE[colours[i]]
        c1 = np.array(bgr, np.float32)
        c2 = np.clip(c1 * rng.uniform(0.35, 0.6) + rng.uniform(0, 90), 0, 255)
        if rng.random() < 0.5:
            c2 = np.array(PALETTE[(colours[i] + 1 + i) % len(PALETTE)][1], np.float32) * 0.5 + (
                c1 * 0.5
            )
        tex = _fill(fills[i], d, c1, c2, rng)
        edge = cv2.morphologyEx(alpha, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        tex[edge] *= 0.55  # a dark rim, as real objects have a visible contour
        sprite = np.clip(tex, 0, 255).astype(np.uint8)
        noun = _NOUNS[shapes[i]][int(rng.integers(len(_NOUNS[shapes[i]])))]
        objects.append(SceneObject(f"{name} {noun}_{i}", sprite, alpha, pos, angle))
    return objects
