"""Which images get candidates: the destination images of a split's pair list (ego for
exo2ego, exo for ego2exo; visible or not, since O-MaMa reads a destination's file for every
pair), each once, and this process's share of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omama import dist
from omama.dataset.candidates import candidate_paths
from omama.dataset.layout import find_pairs_file, image_path, load_pairs
from omama.errors import OmamaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One destination image and its two candidate files."""

    take: str
    cam: str
    frame: str
    image: Path
    masks: Path
    boxes: Path

    @property
    def name(self) -> str:
        return f"{self.take}/{self.cam}/{self.frame}"


def destination_images(
    root: Path, split: str, direction: str, masks_dir: Path, pairs: Path | None = None
) -> list[Job]:
    """The split's destination images in (take, camera, frame) order."""
    path = pairs if pairs is not None else find_pairs_file(root, split, direction)
    keys = {(p.take, p.dst_cam, str(int(p.frame))) for p in load_pairs(path, direction)}
    jobs = []
    for take, cam, frame in sorted(keys, key=lambda k: (k[0], k[1], int(k[2]))):
        masks, boxes = candidate_paths(masks_dir, take, cam, frame)
        jobs.append(Job(take, cam, frame, image_path(root, take, cam, frame), masks, boxes))
    log.info("%s: %d destination images", path, len(jobs))
    return jobs


@dataclass(frozen=True)
class Share:
    """Part `index` of `count`: every count-th image from the index-th."""

    index: int
    count: int

    @property
    def tag(self) -> str:
        return f"{self.index}-of-{self.count}"

    def of(self, jobs: list[Job]) -> list[Job]:
        return jobs[self.index :: self.count]


def resolve_share(part: int | None, parts: int, env: dist.DistEnv | None) -> Share:
    """This process's share: its torchrun rank, its --part, or everything (0 of 1)."""
    if env is not None:
        if part is not None:
            raise OmamaError("under torchrun each rank writes its own part: drop --part")
        return Share(env.rank, env.world)
    if part is None:
        if parts > 1:
            raise OmamaError(f"--parts {parts} needs --part I")
        return Share(0, 1)
    if not 0 <= part < parts:
        raise OmamaError(f"--part {part} --parts {parts}: the part must be in [0, parts)")
    return Share(part, parts)
