"""The training step and the loader that feeds it: what omama-train runs and `make bench` times.

`train_loader` is the DataLoader over the cached training samples (persistent workers, a
few batches prefetched per worker, pinned host memory for CUDA); `build_optimizer` makes
the AdamW optimiser and its per-step cosine schedule; `TrainStep` is one optimisation step
of the matcher (in the chosen `--precision`, the matching loss, an optional loss weight for DDP).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler

from omama import precision as prec
from omama.loader.rolling_store import RollingTokenStore
from omama.loader.token_store import TokenStore
from omama.loader.train_samples import TrainSamples
from omama.matcher.model import matching_loss

PREFETCH = 2  # batches each loader worker keeps ready ahead of the step


def train_loader(
    data: TrainSamples, sampler: Sampler, batch_size: int, workers: int, device: torch.device
) -> DataLoader:
    """The trainer's DataLoader: `batch_size` samples per step (this rank's share), in the
    sampler's order, each batch read whole by the dataset; `workers` persistent worker
    processes (0: read in the main process)."""
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=data.collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH if workers else None,
        pin_memory=device.type == "cuda",
    )


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, min_lr: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the model's parameters, and a cosine schedule from `lr` down to `min_lr`
    over `total_steps` steps (stepped once per training step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps, eta_min=min_lr)
    return optimizer, schedule


class TrainStep:
    """One optimisation step of the matcher on one batch of `TrainSamples` items.

    `net` is what runs forward and backward (the matcher, or DDP around it); the step never
    reads a value back to the host, so it can run ahead of the device. It counts the steps
    (`steps`, the run's global step once the loop sets it on resume) and remembers, on the
    device, the first step whose loss or gradient was not finite: `first_nonfinite()` reads
    it back (the caller does so where it syncs anyway, before every save).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        device: torch.device,
        precision: str = "auto",
        store: TokenStore | RollingTokenStore | None = None,
    ) -> None:
        self.net, self.optimizer, self.schedule, self.device = net, optimizer, schedule, device
        self.precision, self.store = precision, store
        self.steps = 0
        self._bad = torch.full((), -1, dtype=torch.long, device=device)

    def __call__(self, batch: dict[str, torch.Tensor], weight: float | None = None) -> torch.Tensor:
        """Forward, loss, backward, optimiser and schedule step; `weight` scales the batch-mean
        loss (under DDP, `distributed.loss_weight`). Returns the loss, detached, on the device."""
        if self.store is not None:  # rows in the token store instead of tokens
            batch = self.store.gather(batch)
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with prec.autocast(self.precision, self.device):
            sims = self.net(b["src_desc"], b["cand_desc"], b["src_tokens"], b["dst_tokens"])
        loss = matching_loss(sims.float(), b["pos_index"], b["visible"])
        if weight is not None:
            loss = loss * weight
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.steps += 1
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        finite = torch.isfinite(loss)
        if grads:
            finite &= torch.isfinite(torch.nn.utils.get_total_norm(grads))
        first = (self._bad < 0) & ~finite
        self._bad = torch.where(first, torch.full_like(self._bad, self.steps), self._bad)
        self.optimizer.step()
        self.schedule.step()
        return loss.detach()

    def first_nonfinite(self) -> int | None:
        """The first step whose loss or gradient was not finite, or None (reads the device)."""
        bad = int(self._bad)
        return None if bad < 0 else bad
