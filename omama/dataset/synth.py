"""A small synthetic dataset in the exact Ego-Exo4D correspondence layout.

Ego-Exo4D is licensed and absent from development machines, so tests, demos and benchmarks
run on scenes made here. Each take is one textured world plane (a table or floor) with a few
flat, distinctly coloured and patterned objects lying on it that move a little between frames.
Every camera sees that plane through its own homography: the ego camera (`aria01`) a close,
rotated view that wanders over the scene, the exo cameras (`cam01`, ...) wide, static,
foreshortened views from different sides. Because all views show the same objects, a matcher
can learn the correspondence. Objects leave views (outside the field of view, under the hand
of the ego camera, behind an exo camera's pillar); such (object, camera, frame) triples get no
annotation, as in the real data.

Candidate masks imitate FastSAM proposals at the crop size (each side floored to a multiple
of 14): one imperfect copy of each visible object (eroded, dilated or shifted; IoU about
0.6-0.9, never the exact ground truth) among distractors (background regions, random blobs,
object parts, merges, occluders).

Everything follows from `SynthConfig.seed`: the same seed writes byte-identical files (JSON
with sorted keys, fixed JPEG quality, zip members with a fixed timestamp). Pair strings start
with the absolute output path, so two runs compare equal only when written to the same path.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from omama import rle
from omama.errors import OmamaError

log = logging.getLogger(__name__)

EGO_CAM = "aria01"
SPLITS = ("train", "val", "test")
SETTINGS = ("exoego", "egoexo")  # file-name part of exo2ego / ego2exo
PATCH = 14
JPEG_QUALITY = 90
META_FILE = "synth_meta.json"
_MARGIN = 0.2  # world canvas spans [-_MARGIN, 1 + _MARGIN] in world units
_EGO_HALF = 0.19  # half side of the ego view, world units
_EXO_NEAR = 0.24  # distance from the world centre to an exo camera's near edge
_FORCED_DIST = 0.35  # where the "hidden from one exo camera" object sits at its frame

# name, BGR colour
_PALETTE = (
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


@dataclass
class SynthConfig:
    """Every knob of the generator; `small` picks the test-sized images."""

    seed: int = 0
    n_takes: int = 6
    n_frames: int = 4
    frame_step: int = 30
    n_objects: int = 4
    n_exo_cams: int = 2
    small: bool = False
    portrait: bool = True  # one exo camera of one take is portrait
    portrait_split: str = "train"  # the split of the take that holds it
    # jpg sizes (H, W); None: 704x704 / 540x960 real, 230x230 / 200x350 small
    ego_hw: tuple[int, int] | None = None
    exo_hw: tuple[int, int] | None = None
    ego_scale: int = 2  # annotation (original) size = jpg size * scale
    exo_scale: int = 4
    # candidates per destination image (inclusive range); None: 12-40 small, 60-120 real
    n_candidates: tuple[int, int] | None = None
    hand_prob: float = 0.5  # chance per ego frame that a hand covers part of the view
    pillar_prob: float = 0.6  # chance per exo camera of a static pillar in front of the scene
    max_retries: int = 20  # scene redraws per take until every visibility case occurs

    def resolved_ego_hw(self) -> tuple[int, int]:
        if self.ego_hw is not None:
            return (int(self.ego_hw[0]), int(self.ego_hw[1]))
        return (230, 230) if self.small else (704, 704)

    def resolved_exo_hw(self) -> tuple[int, int]:
        if self.exo_hw is not None:
            return (int(self.exo_hw[0]), int(self.exo_hw[1]))
        return (200, 350) if self.small else (540, 960)

    def resolved_n_candidates(self) -> tuple[int, int]:
        if self.n_candidates is not None:
            return (int(self.n_candidates[0]), int(self.n_candidates[1]))
        return (12, 40) if self.small else (60, 120)

    def exo_names(self) -> list[str]:
        return [f"cam{i + 1:02d}" for i in range(self.n_exo_cams)]

    def frames(self) -> list[int]:
        return [i * self.frame_step for i in range(self.n_frames)]

    def split_sizes(self) -> dict[str, int]:
        """4/1/1 for six takes; val and test get about a sixth each, at least one."""
        n_eval = max(1, round(self.n_takes / 6))
        return {"train": self.n_takes - 2 * n_eval, "val": n_eval, "test": n_eval}

    def validate(self) -> None:
        """Raise OmamaError for a configuration the generator cannot honour."""
        problems = []
        if self.n_takes < 3:
            problems.append(f"takes must be at least 3 (one per split), got {self.n_takes}")
        if self.n_frames < 1:
            problems.append(f"frames must be at least 1, got {self.n_frames}")
        if self.frame_step < 1:
            problems.append(f"frame step must be at least 1, got {self.frame_step}")
        if not 1 <= self.n_objects <= len(_PALETTE):
            problems.append(f"objects must be between 1 and {len(_PALETTE)}, got {self.n_objects}")
        if not 1 <= self.n_exo_cams <= 99:
            problems.append(f"exo cameras must be between 1 and 99, got {self.n_exo_cams}")
        if self.ego_scale < 1 or self.exo_scale < 1:
            problems.append("annotation scales must be at least 1")
        for name, hw in (("ego", self.resolved_ego_hw()), ("exo", self.resolved_exo_hw())):
            if min(hw) < 2 * PATCH:
                problems.append(f"{name} image {hw[0]}x{hw[1]} is smaller than 28 pixels")
        lo, hi = self.resolved_n_candidates()
        if not 1 <= lo <= hi:
            problems.append(f"candidate range {lo}-{hi} is empty")
        if self.portrait_split not in SPLITS:
            problems.append(f"portrait split {self.portrait_split!r} is not one of {SPLITS}")
        if problems:
            raise OmamaError("synth config: " + "; ".join(problems))


@dataclass
class SynthSummary:
    """What was written: split membership and pair counts per split and setting."""

    out: Path
    splits: dict[str, list[str]]
    pairs: dict[str, dict[str, int]]  # split -> setting -> number of pairs
    invisible: dict[str, dict[str, int]]  # split -> setting -> pairs whose destination is empty
    n_images: int = 0
    n_candidate_files: int = 0
    portrait: tuple[str, str] | None = None  # (take, cam) of the portrait camera


# ---------------------------------------------------------------------------- pure helpers


def crop_hw(hw: tuple[int, int]) -> tuple[int, int]:
    """Each side floored to a multiple of the 14-pixel patch (section 3 of the reference)."""
    return (PATCH * (hw[0] // PATCH), PATCH * (hw[1] // PATCH))


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """N x 4 float32 (x, y, w, h) tight boxes, w = x_max - x_min (no +1); empty mask: zeros."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(m.any(axis=0))
        boxes[i] = (cols[0], rows[0], cols[-1] - cols[0], rows[-1] - rows[0])
    return boxes


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two 0/1 masks; two empty masks count 1."""
    a = a.astype(bool)
    b = b.astype(bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def save_npz_deterministic(path: Path, array: np.ndarray, level: int = 1) -> None:
    """Write `arr_0` like np.savez_compressed, but with a fixed zip timestamp (byte-stable)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    info = zipfile.ZipInfo("arr_0.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)


def write_json(path: Path, data: object) -> None:
    """Sorted keys, fixed separators: the same data gives the same bytes."""
    path.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")


def pair_entry(root: str, take: str, ego: str, exo: str, obj: str, frame: int) -> list[str]:
    """`[ego_rgb, ego_mask, exo_rgb, exo_mask]`, each `ROOT//take//cam//obj//kind//frame`."""
    return [
        f"{root}//{take}//{cam}//{obj}//{kind}//{frame}"
        for cam, kind in ((ego, "rgb"), (ego, "mask"), (exo, "rgb"), (exo, "mask"))
    ]


def make_pairs(
    root: str, take: str, masks: dict, ego: str, exos: list[str], setting: str
) -> list[list[str]]:
    """Pairs of one take: exoego where the exo camera sees the object, egoexo where ego does."""
    pairs = []
    for obj in sorted(masks):
        for exo in exos:
            source = masks[obj].get(exo if setting == "exoego" else ego, {})
            for frame in sorted(source, key=int):
                pairs.append(pair_entry(root, take, ego, exo, obj, int(frame)))
    return pairs


# ---------------------------------------------------------------------------- geometry


@dataclass
class _Cam:
    name: str
    hw: tuple[int, int]  # jpg size
    scale: int  # original = jpg * scale
    is_ego: bool
    quads: list[np.ndarray]  # per frame: world quad (units) seen by TL, TR, BR, BL corners
    gain: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    noise: float = 2.0
    pillar: np.ndarray | None = None  # image-space polygon (exo only)

    @property
    def orig_hw(self) -> tuple[int, int]:
        return (self.hw[0] * self.scale, self.hw[1] * self.scale)


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _signed_area(quad: np.ndarray) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _img_corners(hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


def _homography(quad_units: np.ndarray, hw: tuple[int, int], ppu: float) -> np.ndarray:
    """World-canvas pixels -> image pixels, for the world quad seen by the image corners."""
    src = ((quad_units + _MARGIN) * ppu).astype(np.float32)
    return cv2.getPerspectiveTransform(src, _img_corners(hw).astype(np.float32))


def _exo_quad(phi: float, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The trapezoid of the plane that a static side camera at azimuth phi sees."""
    u = np.array([np.cos(phi), np.sin(phi)])  # from the centre towards the camera
    v = np.array([-u[1], u[0]])
    c = np.array([0.5, 0.5])
    aspect = hw[1] / hw[0]  # 16:9 landscape gives the widths below; portrait narrows them
    k = min(1.0, aspect / (16 / 9)) ** 0.5
    near_w = rng.uniform(0.32, 0.4) * k
    far_w = rng.uniform(0.7, 0.85) * k
    far_d = rng.uniform(0.55, 0.7)
    near = c + _EXO_NEAR * u
    far = c - far_d * u
    quad = np.array([far - far_w * v, far + far_w * v, near + near_w * v, near - near_w * v])
    if (_signed_area(quad) > 0) != (_signed_area(_img_corners(hw)) > 0):
        quad = quad[[1, 0, 3, 2]]  # keep the view unmirrored
    return quad


def _ego_quad(center: np.ndarray, theta: float) -> np.ndarray:
    """A close, rotated, slightly keystoned square view of the plane."""
    h = _EGO_HALF
    local = np.array([[-1.12 * h, -h], [1.12 * h, -h], [0.92 * h, h], [-0.92 * h, h]])
    return local @ _rot(theta).T + center


def _project(m: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a 3x3 homography to N x 2 points; also return the homogeneous w."""
    ph = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ m.T
    return ph[:, :2] / ph[:, 2:3], ph[:, 2]


# ---------------------------------------------------------------------------- world


@dataclass
class _Object:
    name: str
    sprite: np.ndarray  # D x D x 3 uint8 BGR
    alpha: np.ndarray  # D x D uint8 0/255
    pos: np.ndarray  # F x 2 world units
    angle: np.ndarray  # F radians


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, ch: int) -> np.ndarray:
    grid = rng.normal(size=(cells, cells, ch)).astype(np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return out.reshape(size, size, ch)


def _background(rng: np.random.Generator, size: int, ppu: float) -> tuple[np.ndarray, np.ndarray]:
    """A textured world canvas (BGR uint8) and its region labels (uint8, Voronoi tiles)."""
    base = rng.uniform(90, 190, size=3).astype(np.float32)
    base = base * 0.35 + base.mean() * 0.65  # muted so that objects stand out
    lum = 22 * _smooth_noise(rng, size, 6, 1) + 8 * _smooth_noise(rng, size, 24, 1)
    img = base + lum + 8 * _smooth_noise(rng, size, 6, 3)

    # region labels: Voronoi tiles with a noisy domain warp, computed at a quarter resolution
    low = max(32, size // 4)
    n_regions = int(rng.integers(30, 50))
    seeds = rng.uniform(0, 1, size=(n_regions, 2)) * low
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32)
    warp = _smooth_noise(rng, low, 5, 2) * (0.04 * low)
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


def _fill(fill: str, d: int, c1: np.ndarray, c2: np.ndarray, rng: np.random.Generator):
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


def _make_objects(
    rng: np.random.Generator, cfg: SynthConfig, ppu: float, forced: tuple[int, int, np.ndarray]
) -> list[_Object]:
    """Distinct objects with sprites and trajectories; `forced` = (object, frame, direction u).

    The forced object sits at frame f* next to the camera of direction u (inside that exo
    camera's blind near strip, where the ego camera looks at f*) and drifts inward later, so
    the ego2exo "visible in ego, hidden in an exo view" case always occurs.
    """
    n, n_frames = cfg.n_objects, cfg.n_frames
    colours = rng.permutation(len(_PALETTE))[:n]
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
            anchor = 0.5 + _FORCED_DIST * u + rng.uniform(-0.05, 0.05) * v
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
        name, bgr = _PALETTE[colours[i]]
        c1 = np.array(bgr, np.float32)
        c2 = np.clip(c1 * rng.uniform(0.35, 0.6) + rng.uniform(0, 90), 0, 255)
        if rng.random() < 0.5:
            c2 = np.array(_PALETTE[(colours[i] + 1 + i) % len(_PALETTE)][1], np.float32) * 0.5 + (
                c1 * 0.5
            )
        tex = _fill(fills[i], d, c1, c2, rng)
        edge = cv2.morphologyEx(alpha, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        tex[edge] *= 0.55  # a dark rim, as real objects have a visible contour
        sprite = np.clip(tex, 0, 255).astype(np.uint8)
        noun = _NOUNS[shapes[i]][int(rng.integers(len(_NOUNS[shapes[i]])))]
        objects.append(_Object(f"{name} {noun}_{i}", sprite, alpha, pos, angle))
    return objects


# ---------------------------------------------------------------------------- rendering


@dataclass
class _View:
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


def _render(
    cam: _Cam,
    frame_i: int,
    world: np.ndarray,
    labels: np.ndarray,
    objects: list[_Object],
    ppu: float,
    rng: np.random.Generator,
    hand_prob: float,
) -> _View:
    h, w = cam.hw
    hmat = _homography(cam.quads[frame_i], cam.hw, ppu)
    # the sign of w in front of the camera (getPerspectiveTransform fixes h33 = 1, not the sign)
    front = np.sign(
        _project(hmat, ((cam.quads[frame_i].mean(0, keepdims=True)) + _MARGIN) * ppu)[1][0]
    )
    img = cv2.warpPerspective(
        world, hmat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    img = img.astype(np.float32)
    lab = cv2.warpPerspective(
        labels, hmat, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT101
    )
    full: dict[str, np.ndarray] = {}
    for obj in objects:  # later objects lie on top
        d = obj.alpha.shape[0]
        rot = _rot(obj.angle[frame_i])
        centre_px = (obj.pos[frame_i] + _MARGIN) * ppu
        aff = np.eye(3)
        aff[:2, :2] = rot
        aff[:2, 2] = centre_px - rot @ np.array([d / 2, d / 2])
        m = hmat @ aff
        corners, wz = _project(m, np.array([[0, 0], [d, 0], [d, d], [0, d]], np.float64))
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

    occluders = []
    if cam.is_ego and rng.random() < hand_prob:
        occ = np.zeros((h, w), np.uint8)
        cv2.fillPoly(occ, _hand_polygon(rng, cam.hw), 1)
        skin = np.array([120, 150, 205], np.float32) + rng.normal(0, 12, size=3)
        shade = 0.85 + 0.15 * _smooth_noise(rng, max(h, w), 4, 1)[:h, :w]
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
    for occ in occluders:
        for m in full.values():
            m &= 1 - occ

    # photometric differences between cameras: gain, offset, vignetting (ego), noise
    img = img * cam.gain + cam.bias
    if cam.is_ego:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (0.5 * (h * h + w * w) / 2)
        img *= (1 - 0.3 * r2)[..., None]
    img += rng.normal(0, cam.noise, size=img.shape).astype(np.float32)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    masks = {k: v for k, v in full.items() if v.any()}
    return _View(image, masks, occluders, lab)


# ---------------------------------------------------------------------------- candidates


def _resize_nearest(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def _roi(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    h, w = mask.shape
    return (
        slice(max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)),
        slice(max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)),
    )


def _disk(k: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))


def _shifted(m: np.ndarray, dx: float, dy: float) -> np.ndarray:
    t = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    return cv2.warpAffine(m, t, (m.shape[1], m.shape[0]), flags=cv2.INTER_NEAREST)


def perturb_mask(gt: np.ndarray, rng: np.random.Generator, lo=0.6, hi=0.9) -> np.ndarray:
    """An imperfect copy of `gt` (eroded, dilated or shifted) with IoU near U(lo, hi), != gt."""
    target = rng.uniform(lo, hi)
    area = int(gt.sum())
    margin = 4 + int(np.sqrt(area))
    sl = _roi(gt, margin)
    g = np.ascontiguousarray(gt[sl])
    kind = str(rng.choice(["erode", "dilate", "shift", "shift_dilate"]))
    direction = rng.uniform(0, 2 * np.pi)
    if kind == "erode":
        dist = cv2.distanceTransform(g, cv2.DIST_L2, 5)
    elif kind == "dilate":
        dist = cv2.distanceTransform(1 - g, cv2.DIST_L2, 5)
    best, best_err = None, 1e9
    for k in range(1, margin):
        if kind == "erode":
            m = (dist > k).astype(np.uint8)
        elif kind == "dilate":
            m = (dist <= k).astype(np.uint8)
        elif kind == "shift":
            m = _shifted(g, k * np.cos(direction), k * np.sin(direction))
        else:
            m = cv2.dilate(_shifted(g, k * np.cos(direction), k * np.sin(direction)), _disk(1))
        iou = mask_iou(m, g)
        if lo - 0.05 <= iou <= min(hi + 0.05, 0.97) and abs(iou - target) < best_err:
            best, best_err = m, abs(iou - target)
        if iou < target:
            break
    if best is None:  # thin or tiny masks: flip boundary pixels instead
        best = g.copy()
        inner = np.argwhere(g.astype(bool) & ~cv2.erode(g, _disk(1)).astype(bool))
        outer = np.argwhere(cv2.dilate(g, _disk(1)).astype(bool) & ~g.astype(bool))
        n_change = max(1, int(area * (1 - target) / 2))
        for idx in rng.permutation(len(inner))[: min(len(inner) - 1, n_change)]:
            best[tuple(inner[idx])] = 0
        for idx in rng.permutation(len(outer))[: min(len(outer), n_change)]:
            best[tuple(outer[idx])] = 1
    out = np.zeros_like(gt)
    out[sl] = best
    return out


def _part(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A piece of an object cut by a random line (20-45 % of its area)."""
    ys, xs = np.nonzero(gt)
    a = rng.uniform(0, 2 * np.pi)
    proj = xs * np.cos(a) + ys * np.sin(a)
    cut = np.quantile(proj, rng.uniform(0.55, 0.8))
    out = np.zeros_like(gt)
    keep = proj > cut
    out[ys[keep], xs[keep]] = 1
    return out


def _blob(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    m = np.zeros(hw, np.uint8)
    c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
    s = min(h, w)
    if rng.random() < 0.5:
        ax = (max(2, int(rng.uniform(0.03, 0.2) * s)), max(2, int(rng.uniform(0.03, 0.2) * s)))
        cv2.ellipse(m, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = int(rng.integers(3, 8))
        pts = np.array(c) + rng.normal(0, rng.uniform(0.03, 0.15) * s, size=(n, 2))
        cv2.fillPoly(m, [cv2.convexHull(pts.astype(np.int32))], 1)
    return m


def make_candidates(
    rng: np.random.Generator,
    gts: list[np.ndarray],
    objects_any: np.ndarray,
    labels: np.ndarray,
    occluders: list[np.ndarray],
    n_range: tuple[int, int],
) -> np.ndarray:
    """FastSAM-like proposals of one destination image at crop size, N x H x W uint8 0/1.

    `gts`: crop-size masks of the visible objects; `objects_any`: every object pixel (visible
    or not); `labels`: background region labels at crop size; `occluders`: hand / pillar masks.
    """
    hw = labels.shape
    min_px = max(6, int(0.0004 * hw[0] * hw[1]))
    n_target = int(rng.integers(n_range[0], n_range[1] + 1))
    out: list[np.ndarray] = []
    seen: set[bytes] = set()

    def add(m: np.ndarray) -> None:
        """Keep a proposal unless empty or a duplicate; never the exact ground truth."""
        m = m.astype(np.uint8)
        for g in gts:
            if np.array_equal(m, g):
                edge = np.argwhere(m.astype(bool) & ~cv2.erode(m, _disk(1)).astype(bool))
                m = m.copy()
                m[tuple(edge[int(rng.integers(len(edge)))])] = 0
        key = m.tobytes()
        if m.any() and key not in seen:
            seen.add(key)
            out.append(m)

    for g in gts:
        add(perturb_mask(g, rng))
    for g in gts:
        if rng.random() < 0.6 and g.sum() >= 4 * min_px:
            add(_part(g, rng))
    if len(gts) >= 2 and rng.random() < 0.7:
        i, j = rng.choice(len(gts), size=2, replace=False)
        add(cv2.dilate(gts[i] | gts[j], _disk(1)))
    for o in occluders:
        if o.sum() >= min_px:
            add(o)
    free = (objects_any == 0).astype(np.uint8)
    for o in occluders:
        free &= 1 - o
    # background regions: the label map's tiles, cut apart along their borders
    border = np.zeros(hw, bool)
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    border[1:, :] |= labels[1:, :] != labels[:-1, :]
    n_comp, comp, stats, _ = cv2.connectedComponentsWithStats(free & ~border, connectivity=4)
    areas = stats[1:, cv2.CC_STAT_AREA]
    regions = [1 + int(c) for c in np.flatnonzero((areas >= min_px) & (areas <= 0.35 * comp.size))]
    for idx in rng.permutation(len(regions)):
        if len(out) >= n_target - max(2, n_target // 5):
            break
        m = (comp == regions[idx]).astype(np.uint8)
        if rng.random() < 0.25 and m.sum() > 8 * min_px:
            m = _part(m, rng)
        elif rng.random() < 0.15 and gts:
            g = gts[int(rng.integers(len(gts)))]
            if m.sum() >= 0.5 * g.sum():  # a region merged with an object (IoU <= 2/3)
                m = m | g
        add(m)
    while len(out) < n_target:
        m = _blob(rng, hw)
        if rng.random() < 0.5:
            m &= free
        if m.sum() >= min_px:
            add(m)
    order = rng.permutation(len(out))
    return np.stack([out[i] for i in order])


# ---------------------------------------------------------------------------- takes


@dataclass
class _Take:
    uid: str
    name: str
    split: str
    cams: list[_Cam]
    views: dict[str, list[_View]]  # cam -> per frame
    objects: list[str]


def _ppu(cfg: SynthConfig) -> float:
    """World-canvas pixels per world unit: close to the ego camera's sampling density."""
    ego = cfg.resolved_ego_hw()
    return 0.8 * max(ego) / (2 * _EGO_HALF)


def _cases_ok(take_views: dict[str, list[_View]], ego: str, exos: list[str], n_frames: int) -> dict:
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


def _visible_only(view: _View, cam: _Cam) -> None:
    """Drop masks too small to annotate once brought to the crop size (as a loader sees them)."""
    ch, cw = crop_hw(cam.hw)
    min_px = max(12, int(0.0005 * ch * cw))
    keep = {}
    for name, m in view.masks.items():
        orig = _resize_nearest(m, cam.orig_hw)
        if int(_resize_nearest(orig, (ch, cw)).sum()) >= min_px:
            keep[name] = m
    view.masks = keep


def _build_take(
    rng: np.random.Generator, cfg: SynthConfig, index: int, split: str, portrait: bool
) -> _Take:
    frames = cfg.n_frames
    ego_hw, exo_hw = cfg.resolved_ego_hw(), cfg.resolved_exo_hw()
    ppu = _ppu(cfg)
    size = int(round((1 + 2 * _MARGIN) * ppu))
    uid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
    name = f"synth_take_{index:03d}"
    world, labels = _background(rng, size, ppu)
    world_exo = cv2.GaussianBlur(world, (0, 0), 0.8)  # exo views sample the plane sparser

    exo_names = cfg.exo_names()
    phi0 = rng.uniform(0, 2 * np.pi)
    exo_cams = []
    for k, cam_name in enumerate(exo_names):
        hw = (exo_hw[1], exo_hw[0]) if portrait and k == len(exo_names) - 1 else exo_hw
        phi = phi0 + 2 * np.pi * k / len(exo_names) + rng.uniform(-0.3, 0.3)
        cam = _Cam(cam_name, hw, cfg.exo_scale, False, [_exo_quad(phi, hw, rng)] * frames)
        cam.gain = (rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, size=3)).astype(np.float32)
        cam.bias = rng.uniform(-10, 10, size=3).astype(np.float32)
        cam.noise = float(rng.uniform(1.5, 4.0))
        if rng.random() < cfg.pillar_prob:
            cam.pillar = _pillar_polygon(rng, hw)
        exo_cams.append((cam, phi))

    for _attempt in range(max(1, cfg.max_retries)):
        # the ego camera wanders; at frame f* it looks into one exo camera's blind strip
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
        ego = _Cam(
            EGO_CAM,
            ego_hw,
            cfg.ego_scale,
            True,
            [_ego_quad(c, t) for c, t in zip(centres, thetas, strict=True)],
        )
        ego.gain = (rng.uniform(0.9, 1.1) * rng.uniform(0.95, 1.05, size=3)).astype(np.float32)
        ego.bias = rng.uniform(-8, 8, size=3).astype(np.float32)
        ego.noise = float(rng.uniform(1.5, 3.0))
        forced = (int(rng.integers(cfg.n_objects)), f_star, u)
        objects = _make_objects(rng, cfg, ppu, forced)
        z = rng.permutation(len(objects))
        ordered = [objects[i] for i in z]

        cams = [ego] + [c for c, _ in exo_cams]
        views: dict[str, list[_View]] = {}
        for cam in cams:
            views[cam.name] = []
            for f in range(frames):
                view = _render(
                    cam,
                    f,
                    world if cam.is_ego else world_exo,
                    labels,
                    ordered,
                    ppu,
                    rng,
                    cfg.hand_prob,
                )
                _visible_only(view, cam)
                views[cam.name].append(view)
        cases = _cases_ok(views, EGO_CAM, exo_names, frames)
        if all(v > 0 for v in cases.values()):
            break
        log.debug("take %d attempt %d lacks a visibility case: %s", index, _attempt, cases)
    else:
        log.warning("take %s: not every visibility case occurs (%s)", name, cases)
    return _Take(uid, name, split, cams, views, [o.name for o in objects])


def _write_take(
    take: _Take, cfg: SynthConfig, out: Path, root_str: str, rng: np.random.Generator
) -> tuple[dict[str, list[list[str]]], int, int]:
    """Write frames, annotation.json and candidate files; return pairs per setting and counts."""
    frames = cfg.frames()
    proc = out / "processed" / take.uid
    masks: dict[str, dict[str, dict[str, dict]]] = {o: {} for o in sorted(take.objects)}
    crop_gts: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    n_images = 0
    for cam in take.cams:
        (proc / cam.name).mkdir(parents=True, exist_ok=True)
        chw = crop_hw(cam.hw)
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
                orig = _resize_nearest(view.masks[obj], cam.orig_hw)
                masks[obj][cam.name][str(frames[f])] = rle.encode(orig)
                crop_gts[(cam.name, f)][obj] = _resize_nearest(orig, chw)
    write_json(proc / "annotation.json", {"masks": masks, "subsample_idx": frames})

    exos = [c.name for c in take.cams if not c.is_ego]
    pairs = {s: make_pairs(root_str, take.uid, masks, EGO_CAM, exos, s) for s in SETTINGS}

    # candidates for every destination image that a pair of this split points at
    dests: dict[str, set[tuple[str, int]]] = {
        "EXO2EGO": {(EGO_CAM, int(_frame_of(p[0]))) for p in pairs["exoego"]},
        "EGO2EXO": {(_cam_of(p[2]), int(_frame_of(p[2]))) for p in pairs["egoexo"]},
    }
    n_files = 0
    cams = {c.name: c for c in take.cams}
    lo_hi = cfg.resolved_n_candidates()
    for direction in ("EXO2EGO", "EGO2EXO"):
        base = out / f"Masks_{take.split.upper()}_{direction}" / take.uid
        for cam_name, frame in sorted(dests[direction]):
            f = frames.index(frame)
            cam = cams[cam_name]
            view = take.views[cam_name][f]
            chw = crop_hw(cam.hw)
            gts = [crop_gts[(cam_name, f)][o] for o in sorted(crop_gts[(cam_name, f)])]
            any_obj = np.zeros(chw, np.uint8)
            for m in view.masks.values():
                any_obj |= _resize_nearest(m, chw)
            cands = make_candidates(
                rng,
                gts,
                any_obj,
                _resize_nearest(view.labels, chw),
                [_resize_nearest(o, chw) for o in view.occluders],
                lo_hi,
            )
            (base / cam_name).mkdir(parents=True, exist_ok=True)
            save_npz_deterministic(base / cam_name / f"{frame}_masks.npz", cands)
            np.save(base / cam_name / f"{frame}_boxes.npy", tight_boxes(cands))
            n_files += 1
    return pairs, n_images, n_files


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


def generate(cfg: SynthConfig, out: Path, overwrite: bool = False) -> SynthSummary:
    """Write the whole dataset under `out` (which must be absent or empty unless overwrite)."""
    cfg.validate()
    out = Path(out).absolute()
    _prepare_out(out, overwrite)
    root_str = str(out)
    seq = np.random.SeedSequence(cfg.seed)
    take_seeds = seq.spawn(cfg.n_takes)
    subset_rng = np.random.default_rng(seq.spawn(1)[0])

    sizes = cfg.split_sizes()
    split_of = [s for s in SPLITS for _ in range(sizes[s])]
    portrait_idx = split_of.index(cfg.portrait_split) if cfg.portrait else -1
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    pairs: dict[str, dict[str, list]] = {s: {t: [] for t in SETTINGS} for s in SPLITS}
    takes_meta = []
    n_images = n_files = 0
    portrait = None
    for i, split in enumerate(split_of):
        scene_rng, cand_rng = (np.random.default_rng(s) for s in take_seeds[i].spawn(2))
        take = _build_take(scene_rng, cfg, i, split, portrait=i == portrait_idx)
        if i == portrait_idx:
            portrait = (take.uid, take.cams[-1].name)
        take_pairs, n_img, n_f = _write_take(take, cfg, out, root_str, cand_rng)
        n_images += n_img
        n_files += n_f
        splits[split].append(take.uid)
        takes_meta.append({"take_uid": take.uid, "take_name": take.name})
        for s in SETTINGS:
            pairs[split][s] += take_pairs[s]
        log.info(
            "take %d/%d %s (%s): %d exoego, %d egoexo pairs",
            i + 1,
            cfg.n_takes,
            take.uid,
            split,
            len(take_pairs["exoego"]),
            len(take_pairs["egoexo"]),
        )

    write_json(out / "processed" / "split.json", splits)
    write_json(out / "takes.json", takes_meta)
    jsons = out / "dataset_jsons"
    jsons.mkdir(exist_ok=True)
    invisible: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    annotations = {
        uid: json.loads((out / "processed" / uid / "annotation.json").read_text())["masks"]
        for uid in (t["take_uid"] for t in takes_meta)
    }
    for split in SPLITS:
        for s in SETTINGS:
            full = pairs[split][s]
            write_json(jsons / f"{split}_{s}_pairs.json", full)
            dest_slot = 0 if s == "exoego" else 2
            invisible[split][s] = sum(
                1
                for p in full
                if _frame_of(p[dest_slot])
                not in annotations[_take_of(p[0])][_obj_of(p[0])][_cam_of(p[dest_slot])]
            )
    for s in SETTINGS:
        train = pairs["train"][s]
        k = max(1, round(0.2 * len(train))) if train else 0
        keep = np.sort(subset_rng.choice(len(train), size=k, replace=False)) if k else []
        write_json(jsons / f"train_{s}_20percent_pairs.json", [train[int(j)] for j in keep])
        write_json(jsons / f"custom_val_{s}_pairs_10.json", pairs["val"][s][::10])

    counts = {split: {s: len(pairs[split][s]) for s in SETTINGS} for split in SPLITS}
    meta = {
        "generator": "omama.dataset.synth",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "pairs": counts,
        "invisible": invisible,
        "portrait": list(portrait) if portrait else None,
    }
    write_json(out / META_FILE, meta)
    return SynthSummary(out, splits, counts, invisible, n_images, n_files, portrait)


def _take_of(path: str) -> str:
    return path.rsplit("//", 5)[1]


def _cam_of(path: str) -> str:
    return path.rsplit("//", 5)[2]


def _obj_of(path: str) -> str:
    return path.rsplit("//", 5)[3]


def _frame_of(path: str) -> str:
    return path.rsplit("//", 5)[5]
