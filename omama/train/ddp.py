"""What training on K ranks needs so that it follows the 1-process run step for step.

Global step k of an epoch trains on the same samples whatever the world size: the seeded
permutation's positions [k*B, (k+1)*B), which `EpochSampler`'s strided split hands out as
B/K per rank. The loss a rank back-propagates is its batch mean scaled by
(local count * K / global count), so DDP's gradient average is exactly the mean over the
global batch, also for a short last batch. A rank left with no sample in that last step
runs a zero-weight batch so that every rank joins every gradient all-reduce.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel

from omama.dist import DistEnv
from omama.errors import OmamaError

# Recent torch names "no buffer broadcast before each forward" forward_sync_buffers (and
# warns on the old name); older releases (a GPU machine's own torch) know broadcast_buffers.
_NEW = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
NO_BUFFER_SYNC = {"forward_sync_buffers": False} if _NEW else {"broadcast_buffers": False}


def syncs_buffers(net: DistributedDataParallel) -> bool:
    """Whether DDP broadcasts the buffers before every forward."""
    return bool(getattr(net, "forward_sync_buffers", getattr(net, "broadcast_buffers", True)))


def local_batch_size(global_batch: int, env: DistEnv | None) -> int:
    """Samples per rank per step; the configured batch size stays the global one."""
    world = 1 if env is None else env.world
    if global_batch % world:
        raise OmamaError(
            f"--batch-size {global_batch} does not split evenly over {world} ranks; "
            f"use a multiple of {world}"
        )
    return global_batch // world


def global_count(n_samples: int, global_batch: int, step_in_epoch: int) -> int:
    """Samples in global step `step_in_epoch` (0-based) of an epoch over n_samples."""
    return max(0, min(global_batch, n_samples - step_in_epoch * global_batch))


def loss_weight(local: int, world: int, global_n: int) -> float:
    """Factor on a rank's batch-mean loss so that DDP's average is the global batch mean."""
    return local * world / global_n if global_n else 0.0


def wrap(model: torch.nn.Module, env: DistEnv | None, device: torch.device) -> torch.nn.Module:
    """DDP around the matcher under torchrun; the matcher itself otherwise (its unused
    head is frozen by the model itself, so DDP waits for no gradient that never comes).

    The matcher's only buffers are the visibility fit's: the training step never reads or
    changes them, and rank 0 alone fits, uses and saves them after validation, so DDP does
    not broadcast them before every step."""
    if env is None:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **NO_BUFFER_SYNC)


def padded(
    batches: Iterable[dict], n_steps: int, filler: Callable[[], dict]
) -> Iterator[tuple[dict, bool]]:
    """`n_steps` (batch, is_filler) pairs: this rank's batches, then zero-weight fillers."""
    it = iter(batches)
    for _ in range(n_steps):
        batch = next(it, None)
        yield (filler(), True) if batch is None else (batch, False)


def one_sample_batch(dataset, index: tuple[int, int]) -> dict:
    """A batch of one item, for a filler step (its loss weight is zero)."""
    return dataset.__getitems__([index])
