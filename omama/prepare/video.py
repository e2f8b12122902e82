"""One video, decoded once as a stream: its header, and its sampled frames as JPEGs.

The official script (`process_data.py`) reads the sampled frames of a camera into memory at
once with decord, flips RGB to BGR, resizes each with `cv2.resize(img, (W // s, H // s))`
(OpenCV's default, bilinear) and writes it with `cv2.imwrite` (OpenCV's default JPEG
settings). Here PyAV (FFmpeg) decodes every frame up to the last sampled one in order, and
only the sampled ones are converted to BGR, resized and written the same way, one at a
time. Frame i is the i-th frame the decoder returns (presentation order), as decord counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2


class VideoError(Exception):
    """A video that cannot be used: `what` is the problem, `frame` where it showed (or None)."""

    def __init__(self, what: str, frame: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.frame = frame


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int  # the number of frames decord reports: the stream's packets


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open the video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoError("holds no video stream")
    return container


def probe(path: Path) -> VideoInfo:
    """Width, height and frame count from the header (the frame count by demuxing, without
    decoding, when the header has none)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frames = int(stream.frames or 0)
        if frames <= 0:
            try:
                frames = sum(1 for p in container.demux(stream) if p.size)
            except av.error.FFmpegError as exc:
                raise VideoError(f"cannot be read ({exc})") from None
        return VideoInfo(int(ctx.width), int(ctx.height), frames)


def too_small(width: int, height: int, min_height: int) -> str | None:
    """Why a frame of this size is refused, or None: the official script writes no frame
    for a frame less than `min_height` (1408) high."""
    if height >= min_height:
        return None
    return (
        f"video is {width}x{height}, smaller than the full size (frames under {min_height} "
        "px high: the official script silently writes no frame for them)"
    )


def extract(
    path: Path, indices: list[int], scale: int, folder: Path, min_height: int, threads: int = 1
) -> int:
    """Decode `path` up to the last of `indices` and write each of those frames, resized by
    1/`scale`, as `folder/{index}.jpg`; returns the number written. VideoError names the
    frame where the video failed or ended too soon."""
    if not indices:
        return 0
    wanted = set(indices)
    last = max(indices)
    written = 0
    i = -1
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        stream.thread_type = "AUTO" if threads > 1 else "SLICE"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    _write(frame, i, scale, folder, min_height)
                    written += 1
                if i >= last:
                    break
        except av.error.FFmpegError as exc:
            raise VideoError(f"does not decode ({exc})", i + 1) from None
    if written < len(wanted):
        missing = min(f for f in wanted if f > i)
        raise VideoError(f"video ends after {i + 1} frames, before frame {missing}", missing)
    return written


def _write(frame: av.VideoFrame, index: int, scale: int, folder: Path, min_height: int) -> None:
    img = frame.to_ndarray(format="bgr24")
    h, w = img.shape[:2]
    why = too_small(w, h, min_height)
    if why:
        raise VideoError(why, index)
    small = cv2.resize(img, (w // scale, h // scale))
    if not cv2.imwrite(str(folder / f"{index}.jpg"), small):
        raise OSError(f"cannot write {folder / f'{index}.jpg'}")


def decode_all(path: Path, threads: int = 1, upto: int | None = None) -> int:
    """Decode every frame (up to frame `upto`) and keep none: the floor any frame extraction
    pays (bench)."""
    n = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        stream.thread_type = "AUTO" if threads > 1 else "SLICE"
        for _ in container.decode(stream):
            n += 1
            if upto is not None and n > upto:
                break
    return n
