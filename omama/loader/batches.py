"""Batches read in place: arrays allocated once per batch, where the DataLoader can pass them on.

The datasets of this package return whole batches from `__getitems__`; the DataLoader then
needs `collate_fn=already_batched`. Inside a worker the arrays are allocated in shared
memory, as torch's own collate allocates its output, so the batch reaches the main process
without another copy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import get_worker_info


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor to read a batch into; in shared memory inside a DataLoader
    worker (as torch's own collate allocates), so sending it to the main process is free."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape, dtype=np.int64))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def already_batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate_fn for datasets whose `__getitems__` returns the batch."""
    return batch
