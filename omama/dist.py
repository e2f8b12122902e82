"""torch.distributed, as torchrun sets it up: who am I, which device, and a few collectives.

Every command runs unchanged as one plain process; under `torchrun` (RANK and WORLD_SIZE in the
environment, WORLD_SIZE > 1) it joins the process group torchrun describes, gloo on CPU and
NCCL on CUDA, and uses `cuda:{LOCAL_RANK}`. Nothing here is home-made transport: the helpers
only name the few collectives omama needs.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as td

from omama.errors import OmamaError

log = logging.getLogger(__name__)

# Ranks wait for each other at barriers and gathers while one of them validates, merges a
# manifest or finishes a larger share; the library defaults (10-30 min) are too short for that.
TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env(environ: dict[str, str] | None = None) -> DistEnv | None:
    """The torchrun job this process belongs to, or None for a plain single process."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise OmamaError(
            f"RANK={env['RANK']!r} WORLD_SIZE={env['WORLD_SIZE']!r}: not integers"
        ) from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise OmamaError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistEnv(rank, world, local)


def is_main(env: DistEnv | None) -> bool:
    """Whether this process writes the shared outputs (rank 0, or the only process)."""
    return env is None or env.main


def device_for(env: DistEnv | None, device: str) -> torch.device:
    """`cuda` becomes this process's own GPU, `cuda:{LOCAL_RANK}`, under torchrun."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OmamaError("--device cuda: no CUDA device is available here")
        if env is not None:
            if env.local_rank >= torch.cuda.device_count():
                raise OmamaError(
                    f"LOCAL_RANK={env.local_rank} but this node has "
                    f"{torch.cuda.device_count()} CUDA devices"
                )
            dev = torch.device("cuda", env.local_rank)
            torch.cuda.set_device(dev)
    return dev


@contextlib.contextmanager
def session(
    device: str, backend: str | None = None, timeout: datetime.timedelta = TIMEOUT
) -> Iterator[DistEnv | None]:
    """Join torchrun's process group for the duration of a command (no-op in a plain run).

    The backend follows the device (gloo on CPU, NCCL on CUDA) unless given. A group that the
    caller already initialised is used and left open.
    """
    env = from_env()
    if env is None:
        yield None
        return
    owned = not td.is_initialized()
    if owned:
        if backend is None:
            backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            device_for(env, device)  # NCCL wants the current device set before the first call
        td.init_process_group(backend=backend, timeout=timeout)
        log.info("rank %d of %d joined the %s process group", env.rank, env.world, backend)
    try:
        yield env
    finally:
        if owned and td.is_initialized():
            td.destroy_process_group()


def barrier(env: DistEnv | None) -> None:
    if env is not None:
        td.barrier()


def all_reduce_sum(env: DistEnv | None, value: torch.Tensor) -> torch.Tensor:
    """Sum of `value` over ranks, in place (identity for a single process)."""
    if env is not None:
        td.all_reduce(value, op=td.ReduceOp.SUM)
    return value


def all_min(env: DistEnv | None, value: int, device: torch.device) -> int:
    """The smallest `value` over ranks (`value` itself for a single process); `device` is
    the rank's own (NCCL reduces CUDA tensors only)."""
    if env is None:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    td.all_reduce(t, op=td.ReduceOp.MIN)
    return int(t.item())


def gather_to_main(env: DistEnv | None, obj: Any) -> list[Any] | None:
    """Every rank's `obj` in rank order on rank 0, None elsewhere (`[obj]` alone)."""
    if env is None:
        return [obj]
    out: list[Any] | None = [None] * env.world if env.main else None
    td.gather_object(obj, out, dst=0)
    return out
