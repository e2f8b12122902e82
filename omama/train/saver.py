"""Checkpoints written behind the steps: one background thread writes them from a snapshot.

`BackgroundSaver.save(*writes)` first waits for the save in flight (at most one: a run's
writes reach the disk in the order they were asked for, and a failed save is raised here,
never lost), then copies every tensor of the objects to be written into host memory of its
own (on CUDA a non-blocking copy into pinned memory, awaited by the writer thread through an
event; on the CPU a plain copy) and deep-copies the rest, and hands the copies to the writer
thread. Training may change the model, the optimiser and the history the moment `save`
returns; the files hold the values of that moment. The host copies are reused by the next
save (its wait makes them free), so a run holds one checkpoint's worth of host memory for
them. The writes themselves are the synchronous ones (temp file, fsync, rename:
omama.files), so a process killed at any moment leaves the previous files intact.

A tensor's copy keeps its storage (the whole storage, its offset, sizes and strides) and
tensors that shared a storage share the copy, so `torch.save` of a snapshot gives the bytes
of `torch.save` of the live objects (on the CPU; a CUDA tensor is saved as a CPU one).
Leaving the `with` block waits for the last save; on an exception path a failed save is
logged rather than hiding the exception that ended the block.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omama.serial import SerialWrites

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Write:
    """One file of a save: `writer(obj, path)` (e.g. omama.files.write_torch)."""

    writer: Callable[[Any, Path], None]
    obj: Any
    path: Path


def _tensors(obj: Any, found: dict[int, torch.Tensor]) -> None:
    """Every tensor inside nested dicts, lists and tuples (by id)."""
    if isinstance(obj, torch.Tensor):
        found[id(obj)] = obj
    elif isinstance(obj, dict):
        for value in obj.values():
            _tensors(value, found)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _tensors(value, found)


Buffers = dict[tuple[int, bool], list[torch.Tensor]]  # (bytes, pinned) -> free host buffers


def snapshot(obj: Any, free: Buffers | None = None) -> tuple[Any, torch.cuda.Event | None, Buffers]:
    """A copy of `obj` that later changes to its tensors and containers do not reach; the
    CUDA event after which the copy's tensors are filled (None when no tensor is on a GPU);
    and the host buffers the copy lives in, for the next snapshot once this one is written.

    Each storage is copied once, whole, into host memory (into a buffer taken from `free` when
    one of its size is there: fresh pages cost a fault each); every tensor becomes a view of its
    storage's copy with the original offset, sizes and strides. The rest is `copy.deepcopy`
    with those copies in its memo, so objects shared inside `obj` stay shared.
    """
    found: dict[int, torch.Tensor] = {}
    _tensors(obj, found)
    storages: dict[int, torch.Tensor] = {}  # storage (as torch.save tells them apart) -> copy
    used: Buffers = {}
    memo: dict[int, Any] = {}
    on_gpu = False
    for key, t in found.items():
        storage = t.untyped_storage()
        host = storages.get(storage._cdata)
        if host is None:
            raw = torch.empty(0, dtype=torch.uint8, device=t.device).set_(storage)
            pinned = t.device.type == "cuda"
            on_gpu |= pinned
            size = (raw.numel(), pinned)
            spare = (free or {}).get(size)
            host = spare.pop() if spare else torch.empty_like(raw, device="cpu", pin_memory=pinned)
            host.copy_(raw, non_blocking=pinned)
            storages[storage._cdata] = host
            used.setdefault(size, []).append(host)
        view = torch.empty(0, dtype=t.dtype).set_(
            host.untyped_storage(), t.storage_offset(), t.size(), t.stride()
        )
        memo[key] = view.requires_grad_(t.requires_grad)
    event = None
    if on_gpu:
        event = torch.cuda.Event()
        event.record()
    return copy.deepcopy(obj, memo), event, used


class BackgroundSaver:
    """Writes runs' files on one background thread (`background=False`: in the caller, from
    the live objects, as a plain synchronous save). Use as a context manager."""

    def __init__(self, background: bool = True) -> None:
        self.background = background
        # at most one save in flight: each save waits for the one before it
        self._writes = SerialWrites(depth=1, name="omama-saver") if background else None
        self._buffers: Buffers = {}  # the last snapshot's host copies, reused once it is written

    def save(self, *writes: Write) -> None:
        """Write these files in this order, after every earlier save; returns once the
        objects are copied (background) or written (synchronous)."""
        self.wait()
        if self._writes is None:
            _write_all(writes, None)
            return
        copied, event, self._buffers = snapshot([(w.obj, w.path) for w in writes], self._buffers)
        jobs = tuple(
            Write(w.writer, obj, path) for w, (obj, path) in zip(writes, copied, strict=True)
        )
        self._writes.submit(_write_all, jobs, event)

    def wait(self) -> None:
        """Wait for the save in flight; raise what it raised."""
        if self._writes is not None:
            self._writes.wait()

    def close(self) -> None:
        """Wait for the last save (raising what it raised) and stop the thread."""
        if self._writes is not None:
            self._writes.drain()

    def __enter__(self) -> BackgroundSaver:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as failed:  # the exception already leaving the block comes first
            log.error("the last save failed too: %s", failed)


def _write_all(writes: tuple[Write, ...], event: torch.cuda.Event | None) -> None:
    if event is not None:
        event.synchronize()  # the copies into pinned memory are done
    for w in writes:
        w.writer(w.obj, w.path)
