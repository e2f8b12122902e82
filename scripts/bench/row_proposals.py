"""Row 13: `omama-proposals` images/s (decode threads, FastSAM with NMS and retina masks, the
resize, empty-mask rule and boxes on the device, the writer thread) against the segmenter's
network forward alone on the same batches of the same images.

A seeded random-init FastSAM at FastSAM's own settings (imgsz 1024, iou 0.9, retina masks,
max_det 100) except the confidence: random weights find masks only at a very low one, so
--conf 0.001 lets max_det masks per image through, as real FastSAM gives dozens to 100.
FastSAM-s on the CPU (FastSAM-x would take minutes on 2 cores), FastSAM-x on a GPU. Both
timings start after a warm-up batch (fusing, first kernels); loading the model is not timed.
Skipped, saying so, when the optional package ultralytics is not installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import time

import numpy as np

from bench.common import Ctx, Row
from omama.proposals import store
from omama.proposals.jobs import destination_images
from omama.proposals.masks import mask_size
from omama.proposals.options import ProposalsConfig, ProposalsReport
from omama.proposals.run import decode, predict_settings, produce
from omama.proposals.segmenter import Segmenter, save_random_init

DIRECTION, SPLIT = "ego2exo", "train"  # the bench data's most destination images (exo, 540x960)


def run(ctx: Ctx) -> list[Row]:
    if importlib.util.find_spec("ultralytics") is None:
        return [
            Row(
                row="13",
                what="omama-proposals: skipped (optional package ultralytics not installed)",
                project="-",
                baseline="-",
                ratio=None,
                target="-",
                met=None,
                command=ctx.command("13"),
            )
        ]
    gpu = ctx.device.type == "cuda"
    arch = "x" if gpu else "s"
    folder = ctx.out / "proposals"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"FastSAM-{arch}-random-init-seed0.pt"
    if not weights.exists():
        save_random_init(weights, 0, arch)
    masks_dir = folder / "masks"
    shutil.rmtree(masks_dir, ignore_errors=True)
    cfg = ProposalsConfig(
        root=ctx.data,
        direction=DIRECTION,
        split=SPLIT,
        masks_dir=masks_dir,
        weights=weights,
        device=ctx.device.type,
        conf=0.001,
    )
    jobs = destination_images(ctx.data, SPLIT, DIRECTION, masks_dir)
    segmenter = Segmenter(weights, ctx.device, predict_settings(cfg))
    images = [decode(j) for j in jobs]
    segmenter(images[:1])  # warm-up: fusing, first kernels
    ctx.sync()

    report = ProposalsReport()
    t0, c0 = time.perf_counter(), time.process_time()
    produce(jobs, segmenter, cfg.batch_size, cfg.workers, report, cfg.writers)
    ctx.sync()
    whole, whole_cpu = time.perf_counter() - t0, time.process_time() - c0

    predictor = segmenter.model.predictor
    batches = [images[i : i + cfg.batch_size] for i in range(0, len(images), cfg.batch_size)]
    inputs = [predictor.preprocess(b) for b in batches]
    predictor.inference(inputs[0])
    ctx.sync()
    t0, c0 = time.perf_counter(), time.process_time()
    preds = [predictor.inference(x) for x in inputs]
    ctx.sync()
    forward, forward_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()  # ultralytics' NMS and mask assembly, the segmenter's own part
    for p, x, b in zip(preds, inputs, batches, strict=True):
        predictor.postprocess(p, x, b)
    ctx.sync()
    post = time.perf_counter() - t0

    # one writer thread's pace: the written files read back and written again, one by one
    written = [store.read_back(j.masks, j.boxes) for j in jobs]
    scratch = folder / "rewrite"
    t0 = time.perf_counter()
    for i, (m, b) in enumerate(written):
        store.write_candidates(scratch / f"{i}_masks.npz", scratch / f"{i}_boxes.npy", m, b)
    write_s = time.perf_counter() - t0
    write_mb = sum(m.nbytes for m, _ in written) / 1e6
    shutil.rmtree(scratch)

    n = len(jobs)
    sizes = sorted({mask_size(*im.shape[:2]) for im in images})
    ratio = (n / whole) / (n / forward)
    per_image = report.masks / max(report.written, 1)
    return [
        Row(
            row="13",
            what=f"omama-proposals, {n} exo images {np.array(images[0].shape[:2]).tolist()} "
            f"(FastSAM-{arch} random-init, batch {cfg.batch_size}, imgsz {cfg.imgsz}), "
            f"{ctx.device.type} fp32",
            project=f"{n / whole:.3f} images/s ({whole:.1f} s)",
            baseline=f"{n / forward:.3f} images/s (segmenter forward alone, {forward:.1f} s)",
            ratio=ratio,
            target=">= 0.8 on a GPU; CPU figure reported",
            met=(ratio >= 0.8) if gpu else None,
            command=ctx.command("13"),
            note=f"one timed run of each after a warm-up batch; {per_image:.0f} masks per image "
            f"written at {sizes} ({report.empty_dropped} empty dropped, "
            f"{len(report.fallbacks)} whole-image fallbacks); the stage adds NMS, mask assembly "
            f"at the image's size (retina masks: {post:.1f} s alone), the resize, boxes, JPEG "
            "decode and npz writes to the forward; one writer thread deflates "
            f"{write_mb / write_s:.0f} MB of masks per second "
            f"({write_mb:.0f} MB in {write_s:.2f} s)"
            + (
                ""
                if gpu
                else f"; CPU seconds of this process (robust to other tenants): "
                f"{whole_cpu:.1f} vs {forward_cpu:.1f} ({forward_cpu / whole_cpu:.2f})"
            ),
            details={
                "stage_s": whole,
                "stage_cpu_s": whole_cpu,
                "forward_s": forward,
                "forward_cpu_s": forward_cpu,
                "nms_and_masks_s": post,
                "write_s": write_s,
                "write_mb": write_mb,
                "images": n,
                "masks": report.masks,
                "empty_dropped": report.empty_dropped,
                "fallbacks": len(report.fallbacks),
                "arch": arch,
            },
        )
    ]
