"""`omama-proposals`: candidate masks of every destination image of a split, in batches.

    decode threads (JPEG -> BGR, --workers, 2 batches ahead)
      -> FastSAM on a batch (--batch-size)          segmenter
      -> resize, drop empties, boxes on the device  masks.finish
      -> writer threads (npz + npy, atomic)         store

A plain run is part 0 of 1; under torchrun rank r of K writes every K-th image (on
cuda:LOCAL_RANK), and `--part i --parts n` does the same in a job array. Parts share no
state: each image's files are its own, so parts need no merge. Images whose files are there
and valid are skipped, so a killed run is resumed by running the same command again.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from omama import dist
from omama.config import require
from omama.dataset.images import read_image
from omama.dataset.layout import default_masks_dir
from omama.errors import OmamaError
from omama.files import file_sha256
from omama.proposals import store
from omama.proposals.jobs import Job, destination_images, resolve_share
from omama.proposals.masks import Candidates, finish, mask_size
from omama.proposals.options import ProposalsConfig, ProposalsReport, file_settings
from omama.proposals.segmenter import (
    Segmenter,
    check_weights,
    random_init_name,
    save_random_init,
    ultralytics,
)

log = logging.getLogger(__name__)


def masks_folder(cfg: ProposalsConfig) -> Path:
    if cfg.masks_dir is not None:
        return Path(cfg.masks_dir)
    return default_masks_dir(Path(cfg.root), cfg.split, cfg.direction)


def resolve_weights(cfg: ProposalsConfig, masks_dir: Path) -> Path:
    """--weights, or the seeded random-init file beside the masks folder (written atomically,
    with the same bytes, by whichever run or part needs it first)."""
    if cfg.random_init == (cfg.weights is not None):
        raise OmamaError("give exactly one of --weights FILE or --random-init")
    if cfg.weights is not None:
        return check_weights(Path(cfg.weights))
    path = masks_dir.parent / random_init_name(cfg.arch, cfg.seed)
    log.warning(
        "RANDOM-INIT FastSAM-%s (seed %d): its masks are not real proposals; tests and demos only",
        cfg.arch,
        cfg.seed,
    )
    if not path.exists():
        save_random_init(path, cfg.seed, cfg.arch)
    return path


def predict_settings(cfg: ProposalsConfig) -> dict:
    return {
        "imgsz": cfg.imgsz,
        "conf": cfg.conf,
        "iou": cfg.iou,
        "max_det": cfg.max_det,
        "retina_masks": cfg.retina_masks,
    }


def run_proposals(cfg: ProposalsConfig) -> ProposalsReport:
    """Write the candidate files of this process's share of the split; resumable."""
    require(cfg, "root")
    ultralytics()  # a missing package is said before any work
    t0 = time.perf_counter()
    env = dist.from_env()
    share = resolve_share(cfg.part, cfg.parts, env)
    masks_dir = masks_folder(cfg)
    weights = resolve_weights(cfg, masks_dir)
    everything = destination_images(Path(cfg.root), cfg.split, cfg.direction, masks_dir, cfg.pairs)
    jobs = share.of(everything)
    report = ProposalsReport(images=len(jobs), part=share.tag if share.count > 1 else "")
    store.check_settings(masks_dir, file_settings(cfg, file_sha256(weights)))
    todo = [j for j in jobs if not store.is_done(j.masks, j.boxes)]
    report.skipped = len(jobs) - len(todo)
    part = f" (part {share.tag}: {len(jobs)} of {len(everything)})" if share.count > 1 else ""
    log.info(
        "%s %s: %d destination images%s, %d to segment, %d already written, into %s",
        cfg.direction,
        cfg.split,
        len(jobs),
        part,
        len(todo),
        report.skipped,
        masks_dir,
    )
    if todo:
        segmenter = Segmenter(weights, dist.device_for(env, cfg.device), predict_settings(cfg))
        produce(todo, segmenter, cfg.batch_size, cfg.workers, report, cfg.writers)
    report.seconds = time.perf_counter() - t0
    if report.fallbacks:
        log.warning(
            "%d images had no non-empty mask and got the whole image as their one candidate",
            len(report.fallbacks),
        )
    return report


def decode(job: Job) -> np.ndarray:
    """The image as BGR uint8 (ultralytics' order for arrays); a bad file is one line."""
    return read_image(job.image, bgr=True)


def batches(
    jobs: list[Job], pool: ThreadPoolExecutor, size: int
) -> Iterator[list[tuple[Job, np.ndarray]]]:
    """Decoded batches in job order, with two batches' decodes in flight ahead."""
    pending: collections.deque[tuple[Job, Future]] = collections.deque()
    upcoming = iter(jobs)

    def fill() -> None:
        while len(pending) < 2 * size:
            job = next(upcoming, None)
            if job is None:
                return
            pending.append((job, pool.submit(decode, job)))

    fill()
    try:
        while pending:
            batch = []
            while pending and len(batch) < size:
                job, future = pending.popleft()
                batch.append((job, future.result()))
            fill()
            yield batch
    finally:
        for _, future in pending:
            future.cancel()


def produce(
    jobs: list[Job],
    segmenter: Segmenter,
    batch_size: int,
    workers: int,
    report: ProposalsReport,
    writers: int = 1,
) -> None:
    """Segment and write `jobs`; what was handed to the writers is written even when a later
    image fails (its one-line error is raised after)."""
    t0 = time.perf_counter()
    with (
        tqdm(total=len(jobs), desc="proposals", unit="img", dynamic_ncols=True) as bar,
        ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool,
    ):
        writer = Writer(report, bar, depth=2 * batch_size + writers, threads=writers)
        try:
            for batch in batches(jobs, pool, batch_size):
                found = segmenter([image for _, image in batch])
                for (job, image), masks in zip(batch, found, strict=True):
                    writer.put(job, finish(masks, mask_size(*image.shape[:2])))
        finally:
            writer.close()
    seconds = time.perf_counter() - t0
    log.info(
        "%d images segmented and written in %.1f s (%.2f images/s), %d masks",
        report.written,
        seconds,
        report.written / max(seconds, 1e-9),
        report.masks,
    )


class Writer:
    """Threads writing candidate files (zlib releases the GIL, so they compress in parallel;
    each image's files are its own, so their order does not matter). A failed write is raised
    at the next `put` or at `close`, and `close` waits for every file handed over before it."""

    def __init__(self, report: ProposalsReport, bar: tqdm, depth: int, threads: int = 1) -> None:
        self.report, self.bar = report, bar
        self.items: queue.Queue[tuple[Job, Candidates] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, name=f"candidate-writer-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        while (item := self.items.get()) is not None:
            if self.error is not None:
                continue  # drain: the producer must never block on a dead writer
            job, cands = item
            try:
                store.write_candidates(job.masks, job.boxes, cands.masks, cands.boxes)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                with self.lock:
                    self.error = self.error or exc
                continue
            with self.lock:
                self.report.written += 1
                self.report.masks += len(cands.masks)
                self.report.empty_dropped += cands.dropped
                if cands.fallback:
                    self.report.fallbacks.append(job.name)
                    log.info("%s: no non-empty mask; the whole image is its candidate", job.name)
                self.bar.update(1)

    def put(self, job: Job, cands: Candidates) -> None:
        if self.error is not None:
            raise self.error
        self.items.put((job, cands))

    def close(self) -> None:
        for _ in self.threads:
            self.items.put(None)
        for thread in self.threads:
            thread.join()
        if self.error is not None:
            raise self.error
