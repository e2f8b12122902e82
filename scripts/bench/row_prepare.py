"""Row 12: omama-prepare, frames written per CPU second against the floor of decoding the
same videos alone, in the same run.

The data: a synthetic Ego-Exo4D download at the real sizes (`omama-synth --download`: ego
1408x1408, exo 3840x2160 H.264 at 30 fps, one exo camera per take; every frame between two
sampled ones is a moved picture, so each costs the decoder a real frame). The project: the
whole `omama-prepare` of its three splits, one after the other (relations, masks, every
video decoded up to its last sampled frame, the sampled frames converted, resized and written
as JPEGs, annotation, pairs), into a fresh root. The floor: the same videos, split by split,
decoded up to the same frame, nothing converted or kept, over the same number of worker
processes. Both count CPU seconds of the
process and its workers (robust to other tenants of a shared host); rounds interleaved.

The official script (decord) does not run here (decord has no wheel for this Python), so
the row has no figure for it. Also timed: the relations masks' LZString decoding, against
the plain decoder of tests/oracles.py.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path

from oracles import plain_lzstring_decode

from bench.common import Ctx, Row, median
from bench.host import cpu_with_children
from omama.constants import SPLITS
from omama.prepare.download import FRAME_STEP, read_relations, relations_path, video_path
from omama.prepare.lzstring import decompress_uri
from omama.prepare.run import PrepareConfig, run_prepare
from omama.prepare.video import decode_all, probe
from omama.synth import SynthConfig
from omama.synth.download import write_download

TARGET = 0.8
WORKERS = 2
ROUNDS = 3


def _download(ctx: Ctx) -> Path:
    """The bench's download, written once (a marker says it is whole)."""
    dl = ctx.out / "prepare_download"
    frames = 2 if ctx.plan.small else 3
    marker = dl / f"bench-{frames}.done"
    if not marker.exists():
        shutil.rmtree(dl, ignore_errors=True)
        small = ctx.plan.small
        cfg = SynthConfig(seed=5, takes=3, frames=frames, objects=3, exo_cams=1, small=small)
        write_download(cfg, dl)
        marker.write_text("")
    return dl


def _videos(dl: Path, split: str) -> list[Path]:
    """Each video of the split."""
    out = []
    for entry in read_relations(relations_path(dl, split)).values():
        cams = {c for obj in entry["object_masks"].values() for c in obj}
        for cam in sorted(cams):
            out.append(video_path(dl, entry["take_name"], cam))
    return out


def _masks_ms(dl: Path) -> tuple[float, float, int]:
    """Milliseconds per relations mask: the project's LZString decoder and the plain one that
    walks the bits (tests/oracles.py), interleaved over every mask of the download."""
    texts = [
        m["encodedMask"]
        for split in SPLITS
        for entry in read_relations(relations_path(dl, split)).values()
        for cams in entry["object_masks"].values()
        for cam in cams.values()
        for m in cam["annotation"].values()
    ]
    times: dict[str, list[float]] = {"project": [], "plain": []}
    for _ in range(ROUNDS):
        for name, fn in (("project", decompress_uri), ("plain", plain_lzstring_decode)):
            t0 = time.process_time()
            for text in texts:
                fn(text)
            times[name].append((time.process_time() - t0) * 1e3 / len(texts))
    return median(times["project"]), median(times["plain"]), len(texts)


def _decode(item: tuple[Path, int]) -> int:
    return decode_all(item[0], upto=item[1])


def _floor(videos: dict[str, list[tuple[Path, int]]]) -> tuple[float, float]:
    ctx = multiprocessing.get_context("fork")
    t0, c0 = time.perf_counter(), cpu_with_children()
    for split in SPLITS:
        with ctx.Pool(WORKERS) as pool:
            pool.map(_decode, videos[split], chunksize=1)
    return time.perf_counter() - t0, cpu_with_children() - c0


def _prepare(dl: Path, root: Path, min_height: int) -> tuple[float, float, int]:
    shutil.rmtree(root, ignore_errors=True)
    t0, c0 = time.perf_counter(), cpu_with_children()
    written = 0
    for split in SPLITS:
        cfg = PrepareConfig(
            download=dl, out=root, split=split, workers=WORKERS, min_height=min_height
        )
        written += run_prepare(cfg).frames_written
    return time.perf_counter() - t0, cpu_with_children() - c0, written


def run(ctx: Ctx) -> list[Row]:
    dl = _download(ctx)
    min_height = 400 if ctx.plan.small else 1408
    root = ctx.out / "prepare_root"
    _, _, frames = _prepare(dl, root, min_height)  # warm-up; the frame count
    videos = {}  # per split, each video and the last frame prepare decodes in it
    for split in SPLITS:
        videos[split] = [
            (path, (probe(path).frames - 1) // FRAME_STEP * FRAME_STEP)
            for path in _videos(dl, split)
        ]
    project, floor = [], []
    for _ in range(ROUNDS):
        floor.append(_floor(videos))
        project.append(_prepare(dl, root, min_height))
    shutil.rmtree(root, ignore_errors=True)
    lz_ms, plain_ms, n_masks = _masks_ms(dl)
    p_cpu, f_cpu = median([p[1] for p in project]), median([f[1] for f in floor])
    p_wall, f_wall = median([p[0] for p in project]), median([f[0] for f in floor])
    ratio = f_cpu / p_cpu
    decoded = sum(upto + 1 for split in SPLITS for _, upto in videos[split])
    n_videos = sum(len(v) for v in videos.values())
    return [
        Row(
            row="12",
            what=f"omama-prepare: frames written per CPU second ({n_videos} videos, "
            f"{WORKERS} workers)",
            project=f"{frames / p_cpu:.2f} frames/CPU s ({p_wall:.1f} s wall)",
            baseline=f"{frames / f_cpu:.2f} frames/CPU s decoding alone ({f_wall:.1f} s wall)",
            ratio=ratio,
            target=f">= {TARGET}",
            met=ratio >= TARGET,
            command=ctx.command("12"),
            note=(
                f"{frames} frames written from {decoded} frames decoded in {n_videos} "
                f"videos; CPU seconds {p_cpu:.2f} (prepare) vs {f_cpu:.2f} (decode only), "
                f"medians of {ROUNDS} interleaved rounds; the official script (decord) does "
                f"not run here. LZString masks ({n_masks}, annotation size): {lz_ms:.2f} ms "
                f"each vs {plain_ms:.2f} ms walking the bits one at a time"
            ),
            details={
                "project": project,
                "floor": floor,
                "frames": frames,
                "decoded": decoded,
                "lzstring_ms": lz_ms,
                "plain_lzstring_ms": plain_ms,
                "masks": n_masks,
            },
        )
    ]
