"""`omama-synth --download DL`: the same takes as `--out`, as the Ego-Exo4D downloader lays
them out, so that `omama-prepare` makes the `--out` root from it (frames up to video and
JPEG noise; annotation.json, split.json, takes.json and pair lists equal).

    DL/takes/{take_name}/frame_aligned_videos/{cam}.mp4   H.264, 30 fps, full size
    DL/annotations/relations_{split}.json                 LZString masks, annotated frames
    DL/takes.json

Each camera's video holds frame `30 k` = its k-th view, enlarged to the annotation size
(the view's size times 2 for the ego camera, 4 for an exo one: 1408x1408 and 3840x2160 at
the default sizes) by pixel repetition, which the official bilinear halving or quartering
undoes exactly; every frame between two views is the earlier view mirrored and shifted
sideways, so a frame taken one index off shows. The video ends just after the last view
(`(frames - 1) * 30 + 1` frames). libx264 at CRF 8 with B-frames (decode order differs from
display order, as in real videos).
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import cv2
import numpy as np

from omama import rle
from omama.dataset.images import resize_mask
from omama.errors import OmamaError
from omama.files import write_json
from omama.prepare import download as layout
from omama.prepare.lzstring import compress_uri
from omama.synth.config import META_FILE, SynthConfig
from omama.synth.scene import Take
from omama.synth.writing import _prepare_out, _write_json, build_takes, takes_meta_of

log = logging.getLogger(__name__)

CRF = "8"
X264_PARAMS = "bframes=2:keyint=60"


def check_download_config(cfg: SynthConfig) -> None:
    """The download needs the official frame step and resize factors."""
    wrong = []
    if cfg.frame_step != layout.FRAME_STEP:
        wrong.append(f"--frame-step {layout.FRAME_STEP} (got {cfg.frame_step})")
    if cfg.ego_scale != layout.EGO_SCALE:
        wrong.append(f"--ego-scale {layout.EGO_SCALE} (got {cfg.ego_scale})")
    if cfg.exo_scale != layout.EXO_SCALE:
        wrong.append(f"--exo-scale {layout.EXO_SCALE} (got {cfg.exo_scale})")
    if wrong:
        raise OmamaError("synth config: --download needs " + ", ".join(wrong))


def _enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(
        image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST
    )


def write_video(path: Path, views: list[np.ndarray], scale: int, step: int) -> int:
    """Encode the views (BGR) as frames 0, step, 2 step, ... of an H.264 video; returns the
    number of frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    big = [_enlarge(v, scale) for v in views]
    h, w = big[0].shape[:2]
    n = (len(views) - 1) * step + 1
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": CRF, "preset": "ultrafast", "x264-params": X264_PARAMS}
        for k, image in enumerate(big):
            # the view, then its mirror image shifted by 2, 4, ... 10 px (x264 copies each
            # frame as it is encoded, so one VideoFrame serves every index that shows it)
            mirrored = image[:, ::-1]
            variants = [image] + [np.roll(mirrored, 2 * (j + 1), axis=1) for j in range(5)]
            shown = [av.VideoFrame.from_ndarray(np.ascontiguousarray(v), "bgr24") for v in variants]
            for off in range(step if k < len(big) - 1 else 1):
                frame = shown[0 if off == 0 else off % 5 + 1]
                frame.pts = k * step + off
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def take_relations(take: Take, frames: list[int]) -> dict:
    """The take's relations entry: every camera of every object, its masks at the
    annotation size as LZString, and every frame annotated."""
    objects: dict[str, dict] = {obj: {} for obj in sorted(take.objects)}
    for cam in take.cams:
        for obj in objects:
            annotation = {}
            for f, view in enumerate(take.views[cam.name]):
                if obj in view.masks:
                    counts = rle.encode(resize_mask(view.masks[obj], cam.orig_hw))["counts"]
                    h, w = cam.orig_hw
                    annotation[str(frames[f])] = {
                        "width": w,
                        "height": h,
                        "encodedMask": compress_uri(counts),
                    }
            objects[obj][cam.name] = {"annotation": annotation, "annotated_frames": list(frames)}
    return {"take_name": take.name, "object_masks": objects}


def write_download(cfg: SynthConfig, dl: Path | str, overwrite: bool | None = None) -> dict:
    """Write the download under `dl`; returns {split: [take uids]}."""
    cfg.validate()
    check_download_config(cfg)
    dl = Path(dl).absolute()
    _prepare_out(dl, cfg.overwrite if overwrite is None else overwrite)
    seq = np.random.SeedSequence(cfg.seed)
    take_seeds = seq.spawn(cfg.takes)  # the draws of `generate`, in its order
    frames = cfg.frame_numbers()
    relations: dict[str, dict] = {}
    splits: dict[str, list[str]] = {}
    takes = []
    for _, split, take, _, _ in build_takes(cfg, take_seeds):
        for cam in take.cams:
            views = [v.image for v in take.views[cam.name]]
            path = layout.video_path(dl, take.name, cam.name)
            write_video(path, views, layout.scale_of(cam.name), layout.FRAME_STEP)
        relations.setdefault(split, {})[take.uid] = take_relations(take, frames)
        splits.setdefault(split, []).append(take.uid)
        takes.append(take)
        log.info("take %s (%s): %d videos", take.uid, split, len(take.cams))
    _write_json(takes_meta_of(takes), layout.takes_json_path(dl))
    for split, entries in relations.items():
        path = layout.relations_path(dl, split)
        write_json({"annotations": entries}, path)
    _write_json({"config": cfg.meta(), "download": True}, dl / META_FILE)
    return splits
