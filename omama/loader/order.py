"""Which order the training samples come in, and where their tokens live (`--order`).

When the split's tokens fit the token store, the order is the plain seeded full shuffle
(`EpochSampler`) and every image's tokens are resident (`TokenStore`). When they do not, a
full shuffle touches nearly every image within a few batches, so no store smaller than the
split could serve it. The block order keeps locality instead: the samples are partitioned
into blocks of whole takes, greedily in take order, each block's images (both roles, counted
as `TokenStore.bytes_needed` counts them) fitting half the store's budget. Each epoch visits
the blocks in a seeded order and each block's samples in a seeded order, a pure function of
(seed, epoch) (`sampler.block_order`, which `EpochSampler` runs when given blocks): every
sample still comes exactly once per epoch, and ranks and mid-epoch resumes split the one
global order as before. An image belongs to one take, so to one block: a store holding two
blocks (`RollingTokenStore`) reads each image once per visit of its block.

`--order auto` (the default) is today's shuffle when the tokens fit the budget or the store
is off (`--token-store-gb 0`), and the block order when they do not; `shuffle` and `blocks`
force one (`blocks` to measure what it does, see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.cache.samples import SampleTable, as_table
from omama.errors import OmamaError
from omama.loader.rolling_store import RollingTokenStore
from omama.loader.token_store import GB, TokenStore, budget_bytes

log = logging.getLogger(__name__)

SAMPLE_ORDERS = ("auto", "shuffle", "blocks")


def take_rows(samples: SampleTable) -> list[np.ndarray]:
    """Each take's row indices (ascending), takes in sorted order: a stable sort of the take
    id column (the take names are a sorted table, so id order is name order)."""
    take = samples.column("take")
    order = np.argsort(take, kind="stable")
    if not order.size:
        return []
    return np.split(order, np.flatnonzero(np.diff(take[order])) + 1)


def take_blocks(
    cache: Cache, samples: SampleTable | Sequence[Sample], budget: int
) -> list[np.ndarray]:
    """The samples' indices in blocks of whole takes, each block's tokens within `budget`
    bytes: takes in sorted order, a take joining the current block while the block still
    fits, else starting the next one. A take larger than the budget alone is a block of its
    own (`plan_order` refuses it: the rolling store must hold two blocks within the budget)."""
    table = as_table(samples)
    blocks: list[list[np.ndarray]] = []
    used = budget + 1  # no open block yet
    for rows in take_rows(table):
        need = TokenStore.bytes_needed(cache, table.take_rows(rows))  # takes share no image
        if need > budget:
            log.warning(
                "take %s alone needs %.3f GB of tokens > block budget %.3f GB",
                table.string("takes", int(table.column("take")[rows[0]])),
                need / GB,
                budget / GB,
            )
        if used + need > budget:
            blocks.append([])
            used = 0
        blocks[-1].append(rows)
        used += need
    return [np.concatenate(b).astype(np.int64) for b in blocks]


@dataclass
class Plan:
    """The resolved `--order` and the store that goes with it."""

    order: str  # "shuffle" or "blocks"
    blocks: list[np.ndarray] | None  # the sampler's blocks (None: the plain shuffle)
    store: TokenStore | RollingTokenStore | None  # None: tokens read per batch
    budget: int | None = None  # the store's budget in bytes the blocks were made for

    def follow(self, order: np.ndarray) -> None:
        """The epoch's sample order (`EpochSampler.order`): the rolling store reads each
        block's images in the background while the block before it trains."""
        if isinstance(self.store, RollingTokenStore) and self.blocks is not None:
            self.store.follow(self.store.block_visits(self.blocks, order))

    def close(self) -> None:
        """Stop the rolling store's read-ahead thread (the next `follow` starts it again)."""
        if isinstance(self.store, RollingTokenStore):
            self.store.close()

    def summary(self) -> dict:
        """What fixes the order, for the run's log (and a resumed run's `plan_order`)."""
        return {"order": self.order, "blocks": len(self.blocks or ()), "budget": self.budget}


def plan_order(
    order: str,
    cache: Cache,
    samples: SampleTable | Sequence[Sample],
    device: torch.device,
    gb: float,
    batch_size: int,
    budget: int | None = None,
) -> Plan:
    """Resolve `--order` against the `--token-store-gb` budget (see the module docstring);
    `batch_size`: this rank's samples per step (the rolling store holds at least one batch).
    `budget` (bytes) replaces the one `gb` gives: the smallest over DDP ranks, so every rank
    resolves the same order, or, for a resumed run, the one its log recorded
    (`Plan.summary`), so its epochs keep their order whatever the free memory is now."""
    if order not in SAMPLE_ORDERS:
        raise OmamaError(f"--order {order}: expected one of {', '.join(SAMPLE_ORDERS)}")
    if order == "shuffle" or (order == "auto" and gb == 0) or not len(samples):
        return Plan("shuffle", None, TokenStore.maybe(cache, samples, device, gb))
    if gb == 0 and budget is None:
        raise OmamaError("--order blocks needs the token store: --token-store-gb 0 turns it off")
    budget = budget_bytes(gb, device) if budget is None else budget
    samples = as_table(samples)
    if order == "auto" and TokenStore.bytes_needed(cache, samples) <= budget:
        return Plan("shuffle", None, TokenStore.maybe(cache, samples, device, gb))
    blocks = take_blocks(cache, samples, budget // 2)
    for block in blocks:
        need = TokenStore.bytes_needed(cache, samples.take_rows(block))
        if need > budget // 2:
            raise OmamaError(
                f"--token-store-gb {budget / GB:g}: take {samples[block[0]].take} alone needs "
                f"{need / GB:.3f} GB of tokens, more than half the store; raise "
                "--token-store-gb to at least twice that, or use --order shuffle"
            )
    store = RollingTokenStore.for_blocks(cache, samples, blocks, device, batch_size, budget)
    log.info(
        "order: %d blocks of takes (each within %.3f GB, half the store's budget); "
        "rolling token store of %.3f GB on %s",
        len(blocks),
        budget / 2 / GB,
        store.nbytes / GB,
        device,
    )
    return Plan("blocks", blocks, store, budget)
