"""A token store smaller than the split: image slots on the step's device, filled on demand.

With the block order (`omama.loader.order`) the samples of an epoch come block after block,
each block's images fitting half the budget. This store keeps, per role, as many image slots
as the two largest blocks have images of that role (and at least one batch), so about the
budget (the log gives its size). The loader sends each sample's image ids, which are stable
over the whole split (the same rows as a full `TokenStore`, so `TrainSamples.use_store` does
not change); `gather`, in the main process just before the step, reads any image of the
batch that is not resident into a free slot or, when none is free, into the slot used least
recently by earlier batches, then gathers the batch's tokens from the slots.

Loading only where the ids are turned into tokens is what keeps it correct whatever the
loader does ahead of the step: its workers run in other processes and prefetch batches, but
they only send ids, and a batch spanning two blocks simply finds both blocks' images. With
the block order the images evicted are those of blocks already finished: an image of the
block being trained on was used more recently than any of them, and the current block and
the next fit together, so each image is read once per visit of its block (`reads` counts
them). Any order is correct, only slower when it jumps between more images than the slots
hold. The tokens are the cache's fp16 tokens (`Cache.tokens`, as per batch): gathered
batches equal the batches read per batch.

Reading ahead: given the epoch's sample order (`follow`), when the step enters a block the
store starts reading the next block's images that are not resident in a background thread
(its own cache handles) into pinned host memory; the step, between batches, copies them
asynchronously into the slots of blocks already finished. In steady state no step waits for
the disk; an image the read-ahead has not brought yet is read on demand as before. A store
is never larger than its budget: `order.plan_order` refuses a take that alone exceeds half
of it, in one line.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.cache.samples import SampleTable, as_table
from omama.errors import OmamaError
from omama.loader.token_store import (
    ROLES,
    check_room,
    host_buffer,
    id_keys,
    key_rows,
    read_tokens,
    role_ids,
    to_device,
)

# role -> (image ids, their rows in the host tensor, pinned host tokens)
Staged = dict[str, tuple[np.ndarray, np.ndarray, torch.Tensor]]


class RollingTokenStore:
    """fp16 tokens [slots, T, C] per role on one device, filled on demand by image id."""

    def __init__(
        self, cache: Cache, keys: dict[str, list[str]], slots: dict[str, int], device: torch.device
    ) -> None:
        self.cache, self.keys = cache, keys
        self.rows = key_rows(keys)
        self.tokens: dict[str, torch.Tensor] = {}
        self.slot_of: dict[str, np.ndarray] = {}  # image id -> its slot, -1 if not resident
        self.held: dict[str, np.ndarray] = {}  # slot -> image id, -1 if empty
        self.last_use: dict[str, np.ndarray] = {}  # slot -> the gather that last used it
        for role in ROLES:
            t, c = cache.shape(cache.image(keys[role][0]), "tokens")
            self.tokens[role] = torch.empty((slots[role], t, c), dtype=torch.float16, device=device)
            self.slot_of[role] = np.full(len(keys[role]), -1, dtype=np.int64)
            self.held[role] = np.full(slots[role], -1, dtype=np.int64)
            self.last_use[role] = np.full(slots[role], -1, dtype=np.int64)
        self.clock = 0
        self.reads = 0  # images read from the cache so far (on demand or ahead)
        self.ahead = 0  # of which read ahead, in the background
        # read-ahead (`follow`): each image's block, the blocks' images, the epoch's visits
        self.block_of: dict[str, np.ndarray] | None = None
        self.block_images: list[dict[str, np.ndarray]] = []
        self.sequence: list[int] = []
        self.current = -1  # position in `sequence` of the block being trained on
        self.pending: Future[Staged] | None = None
        self.staged: Staged = {}
        self.ahead_of: int | None = None  # the block that `pending`/`staged` hold images of
        self.next_read: int | None = None  # the block to read ahead once `staged` is placed
        self.protect: dict[str, np.ndarray] = {}  # images not to evict: current + next block
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def for_blocks(
        cls,
        cache: Cache,
        samples: SampleTable | Sequence[Sample],
        blocks: list[np.ndarray],
        device: torch.device,
        batch_size: int,
        budget: int | None = None,
    ) -> RollingTokenStore:
        """Slots for the two largest blocks' images of each role (at least `batch_size`:
        one batch always fits, at most every image of the split); slots that the device's
        free memory cannot hold are refused in one line (`check_room`, with `budget`)."""
        table = as_table(samples)
        every = role_ids(table)  # the split's image ids per role: a store row is a position
        keys = {r: id_keys(table, every[r]) for r in ROLES}
        slots, per_block = {}, [role_ids(table.take_rows(b)) for b in blocks]
        for role in ROLES:
            sizes = sorted(int(k[role].size) for k in per_block)
            slots[role] = min(len(keys[role]), max(batch_size, sum(sizes[-2:])))
        if budget is not None:  # one batch may exceed a tiny budget: the device must hold it
            need = sum(slots[r] * _image_bytes(cache, keys[r][0]) for r in ROLES)
            check_room(need, budget / 1024**3, device)
        store = cls(cache, keys, slots, device)
        store.block_of = {r: np.full(len(keys[r]), -1, dtype=np.int64) for r in ROLES}
        for b, k in enumerate(per_block):
            ids = {r: np.searchsorted(every[r], k[r]).astype(np.int64) for r in ROLES}
            store.block_images.append(ids)
            for r in ROLES:
                store.block_of[r][ids[r]] = b
        return store

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tokens.values())

    def follow(self, block_sequence: list[int] | np.ndarray) -> None:
        """The blocks in the order the coming batches visit them (see `block_visits`): the
        store reads each one's images ahead while the one before it trains."""
        self.sequence = [int(b) for b in block_sequence]
        self.current = -1
        self._drop_pending()

    def block_visits(self, blocks: list[np.ndarray], order: np.ndarray) -> list[int]:
        """The blocks that a sample order visits, in order (a block once per run of it)."""
        of = np.empty(sum(len(b) for b in blocks), dtype=np.int64)
        for k, b in enumerate(blocks):
            of[b] = k
        visits = of[np.asarray(order, dtype=np.int64)]
        keep = np.r_[True, visits[1:] != visits[:-1]] if visits.size else visits.astype(bool)
        return visits[keep].tolist()

    def gather(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace the batch's `src_row`/`dst_row` (image ids) by `src_tokens`/`dst_tokens`,
        reading the images that are not resident first."""
        self.clock += 1
        ids = {role: batch[f"{role}_row"].cpu().numpy() for role in ROLES}
        self._advance(ids)
        out = {k: v for k, v in batch.items() if k not in ("src_row", "dst_row")}
        for role in ROLES:
            slots = self._resident(role, ids[role])
            index = to_device(torch.from_numpy(slots), self.tokens[role].device)
            out[f"{role}_tokens"] = self.tokens[role].index_select(0, index)
        return out

    def close(self) -> None:
        """Stop the read-ahead thread (the next block read ahead starts a new one)."""
        self._drop_pending()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # --- read-ahead --------------------------------------------------------------------
    def _advance(self, ids: dict[str, np.ndarray]) -> None:
        """Entering the next block of the sequence keeps its read-ahead (waiting for it when
        it is still running) and, once its images are placed, starts reading the one after
        it; a finished read-ahead is placed into slots of finished blocks."""
        if self.block_of is not None and self.sequence and ids["src"].size:
            block = int(self.block_of["src"][ids["src"][-1]])
            if self.current < 0 or self.sequence[self.current] != block:
                # the block's next visit (a rank may see no sample of a small block)
                later = range(self.current + 1, len(self.sequence))
                nxt = next((j for j in later if self.sequence[j] == block), None)
                if nxt is not None:
                    self.current = nxt
                    after = self.sequence[nxt + 1] if nxt + 1 < len(self.sequence) else None
                    self._start(block, after)
        if self.pending is not None and self.pending.done():
            self._adopt()
        if self.staged:
            self._place(ids)
        if self.next_read is not None and self.pending is None and not self.staged:
            self._read(self.next_read)

    def _start(self, block: int, after: int | None) -> None:
        """Enter `block`: its read-ahead is kept (the rest is dropped), and `after` is read
        ahead next."""
        if self.ahead_of == block:
            if self.pending is not None:
                self._adopt()
        else:
            self._drop_pending()
        images = [self.block_images[block]] + (
            [self.block_images[after]] if after is not None else []
        )
        self.protect = {r: np.unique(np.concatenate([b[r] for b in images])) for r in ROLES}
        self.next_read = after

    def _read(self, block: int) -> None:
        """Start reading the block's images that are not resident, in the background."""
        self.next_read = None
        todo = {r: self.block_images[block][r] for r in ROLES}
        todo = {r: v[self.slot_of[r][v] < 0] for r, v in todo.items()}
        if not any(v.size for v in todo.values()):
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="token-read-ahead")
            self._reader = copy.copy(self.cache)  # its own HDF5 handles and memo
        device = next(iter(self.tokens.values())).device
        self.pending, self.ahead_of = self._pool.submit(self._read_ahead, todo, device), block

    def _read_ahead(self, todo: dict[str, np.ndarray], device: torch.device) -> Staged:
        """In the background thread: the images' tokens into pinned host memory."""
        out: Staged = {}
        for role, ids in todo.items():
            if ids.size:
                shape = (int(ids.size), *self.tokens[role].shape[1:])
                keys = [self.keys[role][i] for i in ids]
                host = read_tokens(self._reader, keys, host_buffer(shape, device))
                out[role] = (ids, np.arange(ids.size), host)
        return out

    def _adopt(self) -> None:
        """Take the finished (or wait for the running) read-ahead's images as staged."""
        staged, self.pending = self.pending.result(), None
        self.staged = staged
        n = sum(int(v[0].size) for v in staged.values())
        self.reads += n
        self.ahead += n

    def _place(self, ids: dict[str, np.ndarray]) -> None:
        """Copy read-ahead images into slots that neither this batch, the current block
        nor the next one needs (oldest first), asynchronously; the rest stay staged."""
        for role in list(self.staged):
            todo, rows, host = self.staged[role]
            fresh = np.flatnonzero(self.slot_of[role][todo] < 0)
            free = self._free_slots(role, ids[role], int(fresh.size), strict=True)
            take, left = fresh[: free.size], fresh[free.size :]
            self._copy(role, todo[take], free, host, rows[take])
            if left.size:
                self.staged[role] = (todo[left], rows[left], host)
            else:
                del self.staged[role]

    def _drop_pending(self) -> None:
        if self.pending is not None and not self.pending.cancel():
            self.pending.result()  # a read in flight finishes; its result is dropped
        self.pending, self.staged, self.ahead_of, self.next_read = None, {}, None, None

    # --- slots -------------------------------------------------------------------------
    def _free_slots(self, role: str, need: np.ndarray, n: int, strict: bool) -> np.ndarray:
        """Up to `n` slots to (re)fill, least recently used first, never one holding an image
        of `need`; slots of the current and next block only when not `strict`, last."""
        held, last_use = self.held[role], self.last_use[role]
        key = last_use.astype(np.float64)
        kept = held >= 0
        protected = np.zeros_like(kept)
        if role in self.protect:
            protected[kept] = np.isin(held[kept], self.protect[role])
        key[protected] += 1e18
        order = np.argsort(key, kind="stable")  # empty slots (-1) first
        order = order[~np.isin(held[order], np.unique(need))]
        if strict:
            order = order[~protected[order]]
        return order[:n]

    def _resident(self, role: str, ids: np.ndarray) -> np.ndarray:
        """Each id's slot, after reading the missing ones into the least recently used slots
        that this batch does not need."""
        slot_of, held, last_use = self.slot_of[role], self.held[role], self.last_use[role]
        need = np.unique(ids)
        missing = need[slot_of[need] < 0]
        if missing.size:
            free = self._free_slots(role, need, missing.size, strict=False)
            if free.size < missing.size:
                raise OmamaError(
                    f"token store: a batch needs {need.size} {role} images, "
                    f"the store holds {held.size}"
                )
            self._fill(role, missing, free)
        last_use[slot_of[need]] = self.clock
        return slot_of[ids]

    def _fill(self, role: str, ids: np.ndarray, slots: np.ndarray) -> None:
        """The images into the slots: from the read-ahead when it holds them, else read."""
        if self.pending is not None and np.isin(ids, self._pending_images(role)).any():
            self._adopt()  # the read-ahead is on its way: wait for it rather than read twice
        ahead = np.zeros(ids.size, dtype=bool)
        if role in self.staged:
            todo, rows, host = self.staged[role]
            pos = {int(x): int(r) for x, r in zip(todo, rows, strict=True)}
            ahead = np.asarray([int(x) in pos for x in ids], dtype=bool)
            from_rows = np.asarray([pos[int(x)] for x in ids[ahead]], dtype=np.int64)
            self._copy(role, ids[ahead], slots[ahead], host, from_rows)
        rest = ~ahead
        if rest.any():
            host = read_tokens(self.cache, [self.keys[role][i] for i in ids[rest]])
            self._copy(role, ids[rest], slots[rest], host, np.arange(int(rest.sum())))
            self.reads += int(rest.sum())

    def _pending_images(self, role: str) -> np.ndarray:
        """The images of the block being read ahead (empty when none)."""
        if self.current + 1 < len(self.sequence):
            return self.block_images[self.sequence[self.current + 1]][role]
        return np.zeros(0, dtype=np.int64)

    def _copy(
        self, role: str, ids: np.ndarray, slots: np.ndarray, host: torch.Tensor, rows: np.ndarray
    ) -> None:
        """Host rows `rows` of `host` into `slots` (asynchronously from pinned memory)."""
        tokens = self.tokens[role]
        for image, slot, row in zip(ids.tolist(), slots.tolist(), rows.tolist(), strict=True):
            old = self.held[role][slot]
            if old >= 0:
                self.slot_of[role][old] = -1
            tokens[slot].copy_(host[row], non_blocking=True)
            self.held[role][slot] = image
            self.slot_of[role][image] = slot
            self.last_use[role][slot] = self.clock


def _image_bytes(cache: Cache, key: str) -> int:
    t, c = cache.shape(cache.image(key), "tokens")
    return t * c * 2
