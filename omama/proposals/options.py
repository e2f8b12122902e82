"""What an `omama-proposals` run is asked to do, what it reports, and the settings that shape
the files it writes (recorded beside them, so a rerun with other settings is refused)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omama.config import default_device, default_workers, opt
from omama.constants import DIRECTIONS, SPLITS

ARCHES = ("x", "s")  # FastSAM-x is YOLOv8x-seg, FastSAM-s YOLOv8s-seg (one class each)


@dataclass
class ProposalsConfig:
    """Defaults are FastSAM's own settings: imgsz, conf, iou and retina masks those of its
    Inference.py, max_det 100 that of its predict.py (ultralytics' own default is 300)."""

    root: Path | None = opt(None, "dataset root (holds processed/ and dataset_jsons/)")
    direction: str = opt(
        "exo2ego",
        "exo2ego (candidates of the ego images) or ego2exo (of the exo images)",
        DIRECTIONS,
    )
    split: str = opt("train", "whose pair list names the destination images", SPLITS)
    pairs: Path | None = opt(
        None,
        "pair file (default ROOT/dataset_jsons/{split}_{set}_pairs.json, else the reference's "
        "train_{set}_20percent_pairs.json / custom_val_{set}_pairs_10.json)",
    )
    masks_dir: Path | None = opt(
        None, "where to write the candidates (default ROOT/Masks_{SPLIT}_{DIRECTION})"
    )
    weights: Path | None = opt(
        None, "FastSAM weights file (FastSAM-x.pt or FastSAM-s.pt, as released); never downloaded"
    )
    random_init: bool = opt(
        False,
        "use a seeded random-init FastSAM of --arch instead of --weights (tests and demos: "
        "its masks are poor, and it finds any only at a very low --conf)",
    )
    arch: str = opt("x", "architecture of --random-init: x (FastSAM-x) or s (FastSAM-s)", ARCHES)
    seed: int = opt(0, "seed of the random-init weights")
    device: str = opt(default_device(), "cpu or cuda", ("cpu", "cuda"))
    batch_size: int = opt(8, "images per segmenter batch", low=1)
    workers: int = opt(
        default_workers(cap=8), "threads decoding JPEGs ahead of the segmenter", low=1
    )
    writers: int = opt(
        default_workers(cap=8),
        "threads compressing and writing the files (deflate of up to 100 masks per image: "
        "on a GPU the writers, not FastSAM, can set the pace)",
        low=1,
    )
    imgsz: int = opt(1024, "segmenter input size (longest side; FastSAM's default)", low=32)
    conf: float = opt(0.4, "confidence threshold (FastSAM's default)", low=0.0)
    iou: float = opt(0.9, "NMS IoU threshold (FastSAM's default)", low=0.0)
    max_det: int = opt(100, "most masks kept per image (FastSAM's predict.py)", low=1)
    retina_masks: bool = opt(
        True, "masks at the image's own resolution before the resize (FastSAM's default)"
    )
    part: int | None = opt(None, "job arrays: write part I of --parts (every N-th image)", low=0)
    parts: int = opt(1, "job arrays: number of parts (torchrun: the world size)", low=1)


@dataclass
class ProposalsReport:
    images: int = 0  # destination images of this part
    written: int = 0  # candidate files written by this run
    skipped: int = 0  # images whose files were already there and valid
    masks: int = 0  # candidate masks written
    empty_dropped: int = 0  # empty masks the segmenter gave, left out
    fallbacks: list[str] = field(default_factory=list)  # images given the whole-image mask
    seconds: float = 0.0
    part: str = ""  # "i-of-n" for one part of a run split into parts


def file_settings(cfg: ProposalsConfig, weights_sha256: str) -> dict:
    """Everything that changes the written masks; recorded as `omama-proposals.json`."""
    return {
        "segmenter": "FastSAM (ultralytics)",
        "weights_sha256": weights_sha256,
        "imgsz": cfg.imgsz,
        "conf": cfg.conf,
        "iou": cfg.iou,
        "max_det": cfg.max_det,
        "retina_masks": cfg.retina_masks,
        "mask_size": "image size cut to multiples of 14, own orientation (cv2 nearest)",
        "empty_masks": "dropped; none left: the whole image",
    }
