"""Cameras of a take and the homographies through which they see the world plane.

Each camera sees the plane through a homography from the world canvas (world units in
[-MARGIN, 1 + MARGIN], `ppu` pixels per unit) to its image: the ego camera (`aria01`) a close,
rotated, slightly keystoned view that wanders from frame to frame; the exo cameras (`cam01`,
...) wide, static, foreshortened trapezoids seen from different sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from omama.constants import is_ego
from omama.dataset.images import crop_size

MARGIN = 0.2  # world canvas spans [-MARGIN, 1 + MARGIN] in world units
EGO_HALF = 0.19  # half side of the ego view, world units
_EXO_NEAR = 0.24  # distance from the world centre to an exo camera's near edge


@dataclass
class Cam:
    """One camera: image size, annotation scale, per-frame view of the plane, photometry."""

    name: str
    hw: tuple[int, int]  # jpg size
    scale: int  # original = jpg * scale
    quads: list[np.ndarray]  # per frame: world quad (units) seen by TL, TR, BR, BL corners
    gain: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    noise: float = 2.0
    pillar: np.ndarray | None = None  # image-space polygon (exo only)

    @property
    def is_ego(self) -> bool:
        return is_ego(self.name)

    @property
    def orig_hw(self) -> tuple[int, int]:
        return (self.hw[0] * self.scale, self.hw[1] * self.scale)

    @property
    def crop_hw(self) -> tuple[int, int]:
        """The crop size in the image's own orientation (candidate masks keep a portrait one)."""
        short, long = crop_size(*self.hw)
        return (long, short) if self.hw[0] > self.hw[1] else (short, long)


def ppu_for(ego_hw: tuple[int, int]) -> float:
    """World-canvas pixels per world unit: close to the ego camera's sampling density."""
    return 0.8 * max(ego_hw) / (2 * EGO_HALF)


def rotation(theta: float) -> np.ndarray:
    """2 x 2 counter-clockwise rotation by theta radians."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _signed_area(quad: np.ndarray) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _img_corners(hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


def homography(quad_units: np.ndarray, hw: tuple[int, int], ppu: float) -> np.ndarray:
    """World-canvas pixels -> image pixels, for the world quad seen by the image corners."""
    src = ((quad_units + MARGIN) * ppu).astype(np.float32)
    return cv2.getPerspectiveTransform(src, _img_corners(hw).astype(np.float32))


def exo_quad(phi: float, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
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


def ego_quad(center: np.ndarray, theta: float) -> np.ndarray:
    """A close, rotated, slightly keystoned square view of the plane."""
    h = EGO_HALF
    local = np.array([[-1.12 * h, -h], [1.12 * h, -h], [0.92 * h, h], [-0.92 * h, h]])
    return local @ rotation(theta).T + center


def project(m: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a 3x3 homography to N x 2 points; also return the homogeneous w."""
    ph = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ m.T
    return ph[:, :2] / ph[:, 2:3], ph[:, 2]
