"""omama-eval's options: the fields of its flags and of its YAML section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omama.config import default_device, default_workers, opt
from omama.constants import DIRECTIONS, SPLITS
from omama.matcher.visibility import CONFIDENCES
from omama.precision import PRECISIONS


@dataclass
class EvalConfig:
    cache: Path | None = opt(None, "cache folder made by omama-precompute")
    direction: str = opt("exo2ego", "exo2ego or ego2exo", DIRECTIONS)
    split: str = opt("test", "split to evaluate", SPLITS)
    checkpoint: Path | None = opt(None, "matcher weights: omama best.pt/last.pt or O-MaMa's .pt")
    out: Path | None = opt(None, "predictions JSON to write (challenge format)")
    gt: Path | None = opt(None, "official ground-truth JSON; default: built from the cache")
    relations: Path | None = opt(
        None,
        "Ego-Exo4D relations_SPLIT.json: score against the official GT of the split, built from "
        "it and --root as omama-gt builds it (default: built from the cache, whose balanced "
        "accuracy may differ from the official one)",
    )
    root: Path | None = opt(
        None, "dataset root with processed/split.json and annotation.json (for --relations)"
    )
    metrics_out: Path | None = opt(None, "metrics JSON (default: next to --out)")
    visualize: int = opt(
        0,
        "PNGs of this many pairs, those of lowest IoU in the whole split (query, prediction, "
        "GT), and a contact sheet, worst first, in OUT_vis",
        low=0,
    )
    mask_size: str = opt(
        "official", "predicted masks at the official 480 size or crop", ("official", "crop")
    )
    confidence: str = opt(
        "visibility",
        "confidence written per pair: 'visibility', the probability fitted on the validation "
        "split during training (kept in the checkpoint), or 'reference', O-MaMa's "
        "sigmoid(best cosine); a checkpoint without a fitted part falls back to the latter",
        CONFIDENCES,
    )
    precision: str = opt(
        "fp32",
        "number format of the scoring: fp32 (the same predictions on CPU and GPU) or bf16 "
        "(faster on a GPU; changes a few chosen masks per thousand pairs, BENCHMARKS.md)",
        PRECISIONS,
    )
    batch_size: int = opt(16, "pairs scored per batch", low=1)
    workers: int = opt(
        default_workers(),
        "worker processes: cache reading while scoring, then the official-size masks and "
        "metrics (used from 4096 pairs on; 0 = all in the main process)",
        low=0,
    )
    device: str = opt(default_device(), "cpu or cuda", ("cpu", "cuda"))
    limit: int = opt(0, "evaluate only the first N pairs (0 = all)", low=0)
    baseline: str = opt(
        "none",
        "'random': pick a random candidate per pair (chance level, no checkpoint needed)",
        ("none", "random"),
    )
    seed: int = opt(0, "seed of the random baseline", low=0)
    profile: int = opt(
        0,
        "record N scoring batches with torch.profiler (after a short warm-up): writes "
        "OUT_profile_trace.json beside --out (Chrome/Perfetto) and logs the top operators "
        "(0 = off)",
        low=0,
    )
