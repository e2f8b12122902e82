"""omama-train's options: the fields of its flags and of its YAML section."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from omama.config import default_device, default_workers, opt
from omama.constants import DIRECTIONS, SPLITS
from omama.errors import OmamaError
from omama.loader.order import SAMPLE_ORDERS
from omama.precision import PRECISIONS


@dataclass
class TrainConfig:
    cache: Path | None = opt(None, "cache folder made by omama-precompute")
    direction: str = opt("exo2ego", "exo2ego or ego2exo", DIRECTIONS)
    out: Path | None = opt(None, "run folder: checkpoints, log.json, curves.png")
    train_split: str = opt("train", "split to train on", SPLITS)
    val_split: str = opt(
        "val", "split validated after each epoch ('none' to skip)", (*SPLITS, "none")
    )
    epochs: int = opt(3, "epochs", low=1)
    batch_size: int = opt(24, "samples per step (global: split evenly over torchrun ranks)", low=1)
    workers: int = opt(default_workers(), "DataLoader workers reading the cache", low=0)
    lr: float = opt(8e-5, "AdamW learning rate (cosine-annealed per step)", low=0)
    min_lr: float = opt(1e-6, "learning rate at the last step", low=0)
    weight_decay: float = opt(0.01, "AdamW weight decay", low=0)
    n_masks: int = opt(32, "candidates per sample (1 positive + N-1 negatives)", low=2)
    init: Path | None = opt(None, "start from these matcher weights (e.g. the released O-MaMa .pt)")
    resume: bool = opt(False, "continue from OUT/state.pt (model, optimizer, schedule, step)")
    seed: int = opt(42, "seed of initialisation, shuffling and candidate sampling")
    device: str = opt(default_device(), "cpu or cuda", ("cpu", "cuda"))
    precision: str = opt(
        "auto",
        "number format of the training step: auto (bf16 on CUDA, fp32 elsewhere), fp32 or "
        "bf16; validation always scores in fp32, as omama-eval does by default",
        ("auto", *PRECISIONS),
    )
    token_store_gb: float = opt(
        -1.0,
        "memory for the split's tokens resident on the training device, read once and "
        "gathered by the step (-1: half the free memory; 0: off, tokens read per batch; a "
        "split that does not fit is trained in blocks of takes, see --order)",
    )
    order: str = opt(
        "auto",
        "sample order: shuffle (a seeded full shuffle per epoch), blocks (blocks of whole "
        "takes that fit half the token store, shuffled across and within blocks, the store "
        "holding two blocks) or auto (shuffle when the split's tokens fit the store or it is "
        "off, blocks when they do not)",
        SAMPLE_ORDERS,
    )
    save_every: int = opt(200, "also save the resumable state every this many steps", low=1)
    log_every: int = opt(10, "log the mean loss every this many steps", low=1)
    val_limit: int = opt(0, "validate on the first N val pairs only (0 = all)", low=0)
    profile: int = opt(
        0,
        "record N training steps with torch.profiler (after a short warm-up): writes "
        "OUT/profile_trace.json (Chrome/Perfetto) and logs the top operators (0 = off)",
        low=0,
    )

    def check(self) -> None:
        """Options that only make sense together (OmamaError, one line)."""
        if self.min_lr > self.lr:
            raise OmamaError(
                f"--min-lr {self.min_lr} is above --lr {self.lr}: the schedule anneals from "
                "--lr down to --min-lr"
            )


# What fixes a run's batches and schedule: resuming with other values would silently train
# on other samples with another learning-rate curve.
RUN_DEFINING = (
    "direction",
    "train_split",
    "val_split",
    "val_limit",
    "epochs",
    "batch_size",
    "n_masks",
    "seed",
    "lr",
    "min_lr",
    "weight_decay",
    "order",
)


def jsonable(cfg: TrainConfig) -> dict:
    """The config as log.json and state.pt keep it (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
