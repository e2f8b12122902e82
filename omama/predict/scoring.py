"""Score every candidate of every evaluated pair, in padded batches, from the cache alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from omama import rle
from omama.cache.reader import Cache, read_tokens
from omama.cache.records import Sample
from omama.matcher.model import OMaMaMatcher, predict
from omama.predict.challenge import PredRecord, official_mask_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    sample: Sample
    best: int
    confidence: float
    top5: tuple[int, ...]
    n_cands: int


class EvalSamples(Dataset):
    def __init__(self, cache: Cache, direction: str, samples: list[Sample]) -> None:
        self.cache, self.direction, self.samples = cache, direction, samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        src = self.cache.image_group(s.src)
        return {
            "index": i,
            "src_tokens": torch.from_numpy(read_tokens(src)),
            "dst_tokens": torch.from_numpy(read_tokens(self.cache.image_group(s.dst))),
            "src_desc": torch.from_numpy(src["obj_desc"][s.src_k]),
            "cand_desc": torch.from_numpy(self.cache.cand_group(self.direction, s.dst)["desc"][()]),
        }


def collate_padded(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a batch whose images hold different numbers of candidates."""
    n = max(it["cand_desc"].shape[0] for it in items)
    cand = torch.zeros(len(items), n, items[0]["cand_desc"].shape[1])
    valid = torch.zeros(len(items), n, dtype=torch.bool)
    for b, it in enumerate(items):
        k = it["cand_desc"].shape[0]
        cand[b, :k] = it["cand_desc"]
        valid[b, :k] = True
    return {
        "index": torch.tensor([it["index"] for it in items]),
        "src_tokens": torch.stack([it["src_tokens"] for it in items]),
        "dst_tokens": torch.stack([it["dst_tokens"] for it in items]),
        "src_desc": torch.stack([it["src_desc"] for it in items]),
        "cand_desc": cand,
        "valid": valid,
    }


@torch.inference_mode()
def score_samples(
    cache: Cache,
    model: OMaMaMatcher,
    direction: str,
    samples: list[Sample],
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
    progress: bool = True,
) -> list[Scored]:
    """Best candidate, confidence and top-5 for each sample, in the input order."""
    loader = DataLoader(
        EvalSamples(cache, direction, samples),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_padded,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    out: list[Scored | None] = [None] * len(samples)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for batch in tqdm(loader, desc="score", unit="batch", disable=not progress, leave=False):
        b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with amp:
            sims = model(b["src_desc"], b["cand_desc"], b["src_tokens"], b["dst_tokens"])
        best, conf, top5 = predict(sims.float(), b["valid"])
        best, conf, top5 = best.cpu().numpy(), conf.cpu().numpy(), top5.cpu().numpy()
        counts = batch["valid"].sum(1).numpy()
        for j, i in enumerate(batch["index"].tolist()):
            out[i] = Scored(
                samples[i],
                int(best[j]),
                float(conf[j]),
                tuple(int(t) for t in top5[j]),
                int(counts[j]),
            )
    return out  # type: ignore[return-value]


def random_scores(cache: Cache, direction: str, samples: list[Sample], seed: int) -> list[Scored]:
    """Chance level: a uniformly random candidate and confidence per pair."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        n = cache.cand_group(direction, s.dst)["desc"].shape[0]
        best = int(rng.integers(n))
        out.append(Scored(s, best, float(rng.random()), (best,) * 5, n))
    return out


def predicted_mask(cache: Cache, direction: str, s: Scored, mask_size: str) -> np.ndarray:
    """The chosen candidate at the official size (default) or at the cache's crop size."""
    mask = rle.decode(cache.cand_rle(direction, s.sample.dst, s.best), f"cache {s.sample.dst}")
    if mask_size == "crop":
        return mask
    if s.sample.dst_k >= 0:
        h, w = cache.obj_rle(s.sample.dst, s.sample.dst_k)["size"]
    else:
        h, w = (int(v) for v in cache.image_group(s.sample.dst).attrs["orig_hw"])
    th, tw = official_mask_size(h, w)
    return cv2.resize(mask, (tw, th), interpolation=cv2.INTER_NEAREST)


def prediction_records(
    cache: Cache, direction: str, scored: list[Scored], mask_size: str = "official"
) -> list[PredRecord]:
    records = []
    for s in scored:
        mask = predicted_mask(cache, direction, s, mask_size)
        x = s.sample
        records.append(
            PredRecord(x.take, x.obj, x.src_cam, x.dst_cam, x.frame, rle.encode(mask), s.confidence)
        )
    return records
