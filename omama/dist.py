"""torch.distributed, as torchrun sets it up: who am I, which device, and a few collectives.

Every command runs unchanged as one plain process; under `torchrun` or `srun` (RANK and
WORLD_SIZE in the environment, WORLD_SIZE > 1) it joins the process group the launcher
describes, gloo on CPU and NCCL on CUDA, on the device its local rank maps to
(`device_index`). `OMAMA_DIST=1` runs that same path with one rank. Nothing here is
home-made transport: the helpers only name the few collectives omama needs.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as td

from omama.errors import OmamaError

log = logging.getLogger(__name__)

# Ranks wait for each other at barriers and gathers while one of them validates, merges a
# manifest or finishes a larger share; the library defaults (10-30 min) are too short for that.
TIMEOUT = datetime.timedelta(hours=6)


# Set to 1, a single process (no RANK, or WORLD_SIZE=1) still joins a process group of one
# rank and runs every collective and DDP, as K ranks do: one GPU tests the NCCL path.
FORCE_VAR = "OMAMA_DIST"


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun (or srun) job.

    `local_rank` is None when the launcher named no local rank (neither LOCAL_RANK nor
    SLURM_LOCALID): CPU runs need none, a CUDA run then stops in `device_for`. `local_world`
    is the number of ranks on this node (the host's cores are shared among them)."""

    rank: int
    world: int
    local_rank: int | None
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise OmamaError(f"{name}={raw!r}: not an integer") from None


def _slurm_tasks_here(env: Mapping[str, str]) -> int | None:
    """This node's task count from SLURM_TASKS_PER_NODE ("4(x2),3": 4 on the first two
    nodes, 3 on the third) and SLURM_NODEID."""
    spec, node = env.get("SLURM_TASKS_PER_NODE"), _int(env, "SLURM_NODEID")
    if not spec:
        return None
    counts: list[int] = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if m is None:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node] if node is not None and node < len(counts) else counts[0]


def local_ranks(env: Mapping[str, str] | None = None) -> int:
    """Ranks sharing this node: torchrun's LOCAL_WORLD_SIZE, Slurm's tasks on this node,
    else 1 (a plain process, or a launcher that says nothing)."""
    env = os.environ if env is None else env
    for n in (_int(env, "LOCAL_WORLD_SIZE"), _int(env, "SLURM_NTASKS_PER_NODE")):
        if n is not None and n > 0:
            return n
    if "RANK" in env and "SLURM_LOCALID" in env:
        n = _slurm_tasks_here(env)
        if n is not None and n > 0:
            return n
    return 1


def from_env(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The job this process belongs to, or None for a plain single process.

    RANK and WORLD_SIZE come from the launcher (torchrun sets them; under srun the job script
    exports them from SLURM_PROCID and SLURM_NTASKS). The local rank is LOCAL_RANK (torchrun),
    else SLURM_LOCALID (srun), else unknown, never the global rank: on a second node the
    global rank names no GPU there. WORLD_SIZE=1 (or no RANK) is a plain process unless
    OMAMA_DIST=1 asks for a group of one rank."""
    env = os.environ if environ is None else environ
    force = env.get(FORCE_VAR, "") not in ("", "0")
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return DistEnv(0, 1, _local_rank(env, 0), 1) if force else None
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    if rank is None or world is None:
        raise OmamaError(f"RANK={env['RANK']!r} WORLD_SIZE={env['WORLD_SIZE']!r}: empty")
    if world <= 1 and not force:
        return None
    if not 0 <= rank < world:
        raise OmamaError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistEnv(rank, world, _local_rank(env, rank if world == 1 else None), local_ranks(env))


def _local_rank(env: Mapping[str, str], default: int | None) -> int | None:
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = _int(env, name)
        if value is not None:
            if value < 0:
                raise OmamaError(f"{name}={value}: a local rank is never negative")
            return value
    return default


def device_index(local_rank: int | None, visible: int) -> int:
    """The CUDA device (among the `visible` ones) of the rank with this local rank.

    One device per local rank when the node shows them all (torchrun; srun without GPU
    binding); device 0 when the launcher bound one device to each task, so that the process
    sees exactly one (srun --gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per rank)."""
    if visible < 1:
        raise OmamaError("--device cuda: no CUDA device is available here")
    if visible == 1:
        return 0
    if local_rank is None:
        raise OmamaError(
            f"{visible} CUDA devices are visible but the launcher set neither LOCAL_RANK nor "
            "SLURM_LOCALID: set LOCAL_RANK to pick this rank's device"
        )
    if local_rank >= visible:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise OmamaError(
            f"LOCAL_RANK={local_rank} but this process sees {visible} CUDA devices "
            f"(CUDA_VISIBLE_DEVICES={shown}): start at most {visible} ranks per node, "
            "or bind one device per task"
        )
    return local_rank


def is_main(env: DistEnv | None) -> bool:
    """Whether this process writes the shared outputs (rank 0, or the only process)."""
    return env is None or env.main


_fallback_noted = False


def note_cpu_fallback(device: torch.device) -> None:
    """One log line, once per process, when a command runs on the CPU because CUDA is
    unavailable here (with the usual reason), so a slow run on a GPU machine explains itself."""
    global _fallback_noted
    if device.type != "cpu" or _fallback_noted or torch.cuda.is_available():
        return
    _fallback_noted = True
    if torch.version.cuda is None:
        why = f"this torch {torch.__version__} is built without CUDA"
    else:
        why = (
            f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no usable "
            "device; a wheel built for a newer driver than this machine's is the usual cause"
        )
    log.info("no CUDA device: running on the CPU (%s)", why)


def device_for(env: DistEnv | None, device: str) -> torch.device:
    """`cuda` becomes this process's own GPU under a launcher (see `device_index`), and is
    made the current device; `cpu` is logged once when CUDA is unavailable."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OmamaError("--device cuda: no CUDA device is available here")
        if env is not None:
            dev = torch.device("cuda", device_index(env.local_rank, torch.cuda.device_count()))
            torch.cuda.set_device(dev)
    note_cpu_fallback(dev)
    return dev


@contextlib.contextmanager
def session(
    device: str, backend: str | None = None, timeout: datetime.timedelta = TIMEOUT
) -> Iterator[DistEnv | None]:
    """Join the launcher's process group for the duration of a command (no-op in a plain run).

    The backend follows the device (gloo on CPU, NCCL on CUDA, bound to this rank's device)
    unless given. OMAMA_DIST=1 without a launcher makes a group of this one process. A group
    that the caller already initialised is used and left open.
    """
    env = from_env()
    if env is None:
        yield None
        return
    owned = not td.is_initialized()
    if owned:
        if backend is None:
            backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        kw: dict[str, Any] = {}
        if backend == "nccl":  # NCCL wants this rank's device, set and named, before a call
            kw["device_id"] = device_for(env, device)
        if env.world == 1:  # OMAMA_DIST=1 without a launcher: a one-rank group, no rendezvous
            kw.update(store=td.HashStore(), rank=0, world_size=1)
        td.init_process_group(backend=backend, timeout=timeout, **kw)
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
