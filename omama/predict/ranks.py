"""Scoring split over torchrun ranks, gathered on rank 0 in the input order.

Ranks take whole batches of the read order (batch k goes to rank k mod K), not single
samples, so every batch is padded and computed exactly as in a 1-process run and the gathered
scores are identical to it, not merely close.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from omama import dist
from omama.cache.reader import Records
from omama.cache.records import Sample
from omama.cache.samples import SampleTable, as_table
from omama.loader.eval_samples import read_order
from omama.matcher.model import OMaMaMatcher
from omama.predict.scoring import Scored, score_samples


def rank_indices(n: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Sample indices of the batches [k*B, (k+1)*B) with k % world == rank, in order."""
    out: list[int] = []
    for start in range(rank * batch_size, n, world * batch_size):
        out.extend(range(start, min(start + batch_size, n)))
    return out


def score_across_ranks(
    cache: Records,
    model: OMaMaMatcher,
    direction: str,
    samples: SampleTable | Sequence[Sample],
    device: torch.device,
    env: dist.DistEnv | None,
    batch_size: int = 16,
    workers: int = 0,
    progress: bool = False,
    on_batch: Callable[[], None] | None = None,
    precision: str = "fp32",
) -> list[Scored] | None:
    """`score_samples` over all ranks: the full list on rank 0 (or alone), None elsewhere."""
    if env is None:
        return score_samples(
            cache,
            model,
            direction,
            samples,
            device,
            batch_size,
            workers,
            progress,
            on_batch,
            precision,
        )
    table = as_table(samples)
    order = read_order(table)  # score_samples' own order: this rank's batches of it
    mine = order[rank_indices(len(table), batch_size, env.rank, env.world)]
    scored = score_samples(
        cache,
        model,
        direction,
        table.take_rows(mine),
        device,
        batch_size,
        workers,
        progress and env.main,
        on_batch,
        precision,
    )
    gathered = dist.gather_to_main(env, scored)
    if gathered is None:
        return None
    out: list[Scored | None] = [None] * len(table)
    for rank, part in enumerate(gathered):
        theirs = order[rank_indices(len(table), batch_size, rank, env.world)]
        for i, s in zip(theirs.tolist(), part, strict=True):
            out[i] = s
    return out  # type: ignore[return-value]
