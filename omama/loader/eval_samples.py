"""Evaluation batches from the cache: every candidate of each pair, padded per batch, each
image of a batch read once.

Pairs that share an image (the objects of one frame, the cameras of one instant) share its
tokens and candidates: a batch holds each distinct source and destination image once, and
per pair the row of its images (`src_rows`, `dst_rows`); `pair_inputs` gathers the matcher's
per-pair inputs from them on the scoring device (the same values as reading each pair's own
copy). `read_order` puts the pairs that share images next to each other, so that a pass in
that order reads each image about once (`omama.predict.scoring`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from omama.cache.reader import Records
from omama.cache.samples import SampleTable, check_object_rows
from omama.loader.batches import batch_tensor


def read_order(samples: SampleTable) -> np.ndarray:
    """The pairs' indices ordered by instant (take, frame), then destination and source
    image, ties in input order: the pairs of one image come one after another."""
    frames = np.array([int(f) for f in samples.names("frames")], np.int64)
    keys = [samples.column(f) for f in ("src", "dst")]
    return np.lexsort(
        (np.arange(len(samples)), *keys, frames[samples.column("frame")], samples.column("take"))
    )


def pair_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The matcher's per-pair inputs (`src_desc`, `cand_desc`, `src_tokens`, `dst_tokens`,
    `valid`) from a batch of `EvalSamples`, gathered where the batch is (e.g. the device)."""
    src, dst = batch["src_rows"], batch["dst_rows"]
    return {
        "src_desc": batch["src_desc"],
        "cand_desc": batch["cand_desc"][dst],
        "src_tokens": batch["src_tokens"][src],
        "dst_tokens": batch["dst_tokens"][dst],
        "valid": batch["valid"][dst],
    }


class EvalSamples(Dataset):
    """Every candidate of each evaluated pair, read from the cache a padded batch at a time.

    `__getitems__` allocates the batch's arrays once, padded to the batch's largest candidate
    count (`valid` marks real candidates), and reads each distinct image's tokens and
    candidates once into them. Use with `collate_fn=already_batched`; `pair_inputs(batch)`
    gives the per-pair tensors. `cache` is a `Cache` or the reader of `Cache.reader`.
    """

    def __init__(self, cache: Records, direction: str, samples: SampleTable) -> None:
        self.cache, self.direction, self.samples = cache, direction, samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in pair_inputs(self.__getitems__([i])).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        io, table = self.cache, self.samples
        src_keys = [table.key("src", i) for i in indices]
        dst_keys = [table.key("dst", i) for i in indices]
        srcs = list(dict.fromkeys(src_keys))  # distinct images, in order of first use
        dsts = list(dict.fromkeys(dst_keys))
        src_recs = [io.image(k) for k in srcs]
        dst_recs = [io.image(k) for k in dsts]
        cand_recs = [io.cands(self.direction, k) for k in dsts]
        for rec, name in [(r, "tokens") for r in (*src_recs, *dst_recs)] + [
            (r, "desc") for r in cand_recs
        ]:
            io.hint(rec, name)
        src_at = {k: r for r, k in enumerate(srcs)}
        dst_at = {k: r for r, k in enumerate(dsts)}
        src_rows = [src_at[k] for k in src_keys]
        dst_rows = [dst_at[k] for k in dst_keys]
        for j, i in enumerate(indices):
            n_src = io.shape(src_recs[src_rows[j]], "obj_desc")[0]
            check_object_rows(table, i, n_src, io.shape(dst_recs[dst_rows[j]], "obj_desc")[0])
        counts = [io.shape(cand, "desc")[0] for cand in cand_recs]
        n = max(counts)
        desc_dim = io.shape(cand_recs[0], "desc")[1]  # twice the backbone's token width
        b, half = len(indices), torch.float16
        batch = {
            "index": torch.tensor(indices),
            "src_rows": torch.tensor(src_rows),
            "dst_rows": torch.tensor(dst_rows),
            "src_tokens": batch_tensor((len(srcs), *io.shape(src_recs[0], "tokens")), half),
            "dst_tokens": batch_tensor((len(dsts), *io.shape(dst_recs[0], "tokens")), half),
            "src_desc": batch_tensor((b, desc_dim), torch.float32),
            "cand_desc": batch_tensor((len(dsts), n, desc_dim), torch.float32).zero_(),
            "valid": torch.arange(n).expand(len(dsts), n) < torch.tensor(counts)[:, None],
        }
        arrays = {k: v.numpy() for k, v in batch.items()}
        for r, rec in enumerate(src_recs):
            io.tokens(rec, out=arrays["src_tokens"][r])
        for r, (rec, cand) in enumerate(zip(dst_recs, cand_recs, strict=True)):
            io.tokens(rec, out=arrays["dst_tokens"][r])
            io.whole(cand, "desc", out=arrays["cand_desc"][r, : counts[r]])
        for j, i in enumerate(indices):
            k = int(table.columns["src_k"][table.entry(i)])
            arrays["src_desc"][j] = io.rows(src_recs[src_rows[j]], "obj_desc", [k])[0]
        return batch
