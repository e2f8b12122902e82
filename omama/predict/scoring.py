"""Score every candidate of every evaluated pair, in padded batches, from the cache alone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from omama import precision as prec
from omama import rle_runs
from omama.cache.reader import Cache, Records
from omama.cache.records import Sample
from omama.cache.rle_texts import RleReads
from omama.cache.samples import SampleTable, as_table
from omama.loader.batches import already_batched
from omama.loader.eval_samples import EvalSamples, pair_inputs, read_order
from omama.matcher.model import OMaMaMatcher, predict
from omama.matcher.visibility import VisibilityHead, fit_visibility, visibility_features
from omama.metrics.validate import eval_size
from omama.parallel import ordered_map, worker_context
from omama.predict.challenge import PredRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    sample: Sample
    best: int
    confidence: float  # sigmoid(best cosine), the reference's, until `with_confidence`
    top5: tuple[int, ...]
    n_cands: int
    features: tuple[float, ...] = (0.0, 0.0, 0.0)  # visibility features (s1, s1 - s2, p1)


@torch.inference_mode()
def score_samples(
    cache: Records,
    model: OMaMaMatcher,
    direction: str,
    samples: SampleTable | Sequence[Sample],
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
    progress: bool = True,
    on_batch: Callable[[], None] | None = None,
    precision: str = "fp32",
) -> list[Scored]:
    """Best candidate, confidence and top-5 for each sample, in the input order, scored in
    `precision` (omama.precision); `on_batch` is called after each batch (`--profile`'s
    step hook).

    The pairs are scored in `read_order` (the pairs of one image together, each batch
    reading each of its images once) by `workers` loader processes that carry the reader
    of `Cache.reader`, not the manifest (forked only when `omama.parallel.start_method`
    says it is safe); each batch comes back to the host as one tensor."""
    table = as_table(samples)
    reader = cache.reader(table, direction) if isinstance(cache, Cache) else cache
    order = read_order(table)
    loader = DataLoader(
        EvalSamples(reader, direction, table),
        batch_size=batch_size,
        sampler=order.tolist(),
        num_workers=workers,
        collate_fn=already_batched,
        pin_memory=device.type == "cuda",
        # no fork of a process with CUDA, a process group or the checkpoint writer's thread
        multiprocessing_context=worker_context() if workers else None,
    )
    model.eval()
    out: list[Scored | None] = [None] * len(table)
    for batch in tqdm(loader, desc="score", unit="batch", disable=not progress, leave=False):
        b = pair_inputs({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        with prec.autocast(precision, device):
            sims = model(b["src_desc"], b["cand_desc"], b["src_tokens"], b["dst_tokens"])
        result = batch_results(sims, b["valid"]).cpu().numpy()  # the one copy to the host
        counts = batch["valid"].sum(1)[batch["dst_rows"]].tolist()
        for j, i in enumerate(batch["index"].tolist()):
            r = result[j]
            out[i] = Scored(
                table[i],
                int(r[0]),
                float(r[1]),
                tuple(int(t) for t in r[2:7]),
                int(counts[j]),
                tuple(float(f) for f in r[7:10]),
            )
        if on_batch is not None:
            on_batch()
    return out  # type: ignore[return-value]


def batch_results(sims: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """A batch's results as one float32 tensor [B, 10]: best, confidence, top-5 (indices,
    exact in float32), visibility features (3): one copy back to the host per batch."""
    best, conf, top5 = predict(sims.float(), valid)
    feats = visibility_features(sims, valid)
    return torch.cat([best[:, None].float(), conf[:, None], top5.float(), feats], dim=1)


def with_confidence(scored: list[Scored], head: VisibilityHead, mode: str) -> list[Scored]:
    """The confidence to write: the fitted visibility probability (`mode` "visibility" and a
    fitted head), else the reference's sigmoid(best cosine) as scored."""
    if mode == "reference" or not head.fitted or not scored:
        return scored
    prob = head(torch.tensor([s.features for s in scored], dtype=torch.float32)).tolist()
    return [replace(s, confidence=float(p)) for s, p in zip(scored, prob, strict=True)]


def fit_confidence(head: VisibilityHead, scored: list[Scored]) -> bool:
    """Fit `head` on these scores against the cache's visibility (the destination has the
    object's mask in that frame); False, head unfitted, when they hold one class only."""
    x = torch.tensor([s.features for s in scored], dtype=torch.float32)
    y = torch.tensor([float(s.sample.dst_k >= 0) for s in scored])
    fit = fit_visibility(x, y)
    if fit is None:
        head.reset()
        return False
    head.set(*fit)
    return True


def random_scores(cache: Cache, direction: str, samples: list[Sample], seed: int) -> list[Scored]:
    """Chance level: a uniformly random candidate and confidence per pair."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        n = cache.cand_count(direction, s.dst)
        best = int(rng.integers(n))
        out.append(Scored(s, best, float(rng.random()), (best,) * 5, n))
    return out


def prediction_records(
    cache: Records,
    direction: str,
    scored: list[Scored],
    mask_size: str = "official",
    workers: int = 0,
    table: SampleTable | None = None,
) -> list[PredRecord]:
    """Each pair's chosen candidate as an RLE at the official size (default: the destination
    GT's size, else the image's, resized to longest side 480, cv2-nearest) or at the cache's
    crop size, in the input order; over `workers` processes when there are many pairs.

    The pairs are visited in `read_order` (each image's RLE texts read about once) and the
    workers carry the reader of `Cache.reader`; `table`: the scored samples as a table, when
    the caller has it (else it is built here). `cache`: a `Cache`, or already the reader
    of `Cache.reader` for these samples."""
    if not scored:
        return []
    table = table if table is not None else as_table([s.sample for s in scored])
    order = read_order(table).tolist()
    reader = cache.reader(table, direction) if isinstance(cache, Cache) else cache
    context = (reader, direction, mask_size)
    done = ordered_map(_records, context, [scored[i] for i in order], workers)
    out: list[PredRecord | None] = [None] * len(scored)
    for i, record in zip(order, done, strict=True):
        out[i] = record
    return out  # type: ignore[return-value]


def _records(context: tuple[Records, str, str], scored: list[Scored]) -> list[PredRecord]:
    cache, direction, mask_size = context
    reads = RleReads(cache, direction)
    records = []
    for s in scored:
        x = s.sample
        cand = reads.cand_rle(x.dst, s.best)
        if mask_size == "crop":
            h, w = (int(v) for v in cand["size"])
        else:
            if x.dst_k >= 0:
                h, w = reads.obj_rle(x.dst, x.dst_k)["size"]
            else:
                h, w = reads.orig_hw(x.dst)
            h, w = eval_size(h, w)
        mask = rle_runs.resize_rle(cand, h, w, f"cache {x.dst}")
        records.append(PredRecord(x.take, x.obj, x.src_cam, x.dst_cam, x.frame, mask, s.confidence))
    return records
