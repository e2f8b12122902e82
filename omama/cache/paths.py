"""Where each file of a cache folder lives: the one definition of every cache path."""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"


def manifest_path(cache: str | Path) -> Path:
    return Path(cache) / MANIFEST


def journal_path(cache: str | Path) -> Path:
    """Shards published since manifest.json was last written whole (one JSON line each)."""
    return Path(cache) / "manifest.journal"


def lock_path(cache: str | Path) -> Path:
    """The writers' lock: one precompute (or merge) at a time per cache."""
    return Path(cache) / ".lock"


def shards_dir(cache: str | Path) -> Path:
    return Path(cache) / "shards"


def samples_path(cache: str | Path, direction: str, split: str) -> Path:
    """A split's samples as columns (`omama.cache.samples`)."""
    return Path(cache) / "samples" / f"{direction}_{split}.npz"


def legacy_samples_path(cache: str | Path, direction: str, split: str) -> Path:
    """Where an older omama kept a split's samples (a JSON list, samples format 1)."""
    return Path(cache) / "samples" / f"{direction}_{split}.json"


def bad_report_path(cache: str | Path, direction: str, split: str) -> Path:
    """Images and pairs that `--skip-bad` left out of a split."""
    return Path(cache) / "reports" / f"bad_{direction}_{split}.json"


def parts_dir(cache: str | Path) -> Path:
    return Path(cache) / "parts"


def plan_path(cache: str | Path, direction: str, split: str) -> Path:
    """A split's plan, made by the first of its parts and read by the others and the merge."""
    return parts_dir(cache) / f"{direction}_{split}.plan.npz"


def random_init_weights_path(cache: str | Path, seed: int, backbone: str = "") -> Path:
    """The cache's seeded random-init weights; `backbone`: its name when not the default."""
    name = f"-{backbone}" if backbone else ""
    return Path(cache) / f"backbone-random-init{name}-seed{seed}.pth"


def inputs_path(cache: str | Path, shard: str) -> Path:
    """The input fingerprints of one shard's records (omama.precompute.fingerprints)."""
    return Path(cache) / "inputs" / f"{shard}.json"
