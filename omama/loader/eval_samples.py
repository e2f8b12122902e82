"""Evaluation batches from the cache: every candidate of each pair, padded per batch."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from omama.cache.reader import Cache
from omama.cache.records import Sample
from omama.cache.sample_rows import check_object_rows
from omama.loader.batches import batch_tensor


class EvalSamples(Dataset):
    """Every candidate of each evaluated pair, read from the cache a padded batch at a time.

    `__getitems__` allocates the batch's arrays once, padded to the batch's largest candidate
    count (`valid` marks real candidates), and reads each pair's fields straight into them.
    Use with `collate_fn=already_batched`.
    """

    def __init__(self, cache: Cache, direction: str, samples: list[Sample]) -> None:
        self.cache, self.direction, self.samples = cache, direction, samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        io, b = self.cache, len(indices)
        recs = []
        for i in indices:
            s = self.samples[i]
            src, dst, cand = io.image(s.src), io.image(s.dst), io.cands(self.direction, s.dst)
            check_object_rows(io, self.direction, s, src, dst)
            for rec, name in ((src, "tokens"), (dst, "tokens"), (cand, "desc")):
                io.hint(rec, name)
            recs.append((s, src, dst, cand))
        counts = [io.shape(cand, "desc")[0] for _, _, _, cand in recs]
        n = max(counts)
        desc_dim = io.shape(recs[0][3], "desc")[1]  # twice the backbone's token width
        batch = {
            "index": torch.tensor(indices),
            "src_tokens": batch_tensor((b, *io.shape(recs[0][1], "tokens")), torch.float16),
            "dst_tokens": batch_tensor((b, *io.shape(recs[0][2], "tokens")), torch.float16),
            "src_desc": batch_tensor((b, desc_dim), torch.float32),
            "cand_desc": batch_tensor((b, n, desc_dim), torch.float32).zero_(),
            "valid": torch.arange(n).expand(b, n) < torch.tensor(counts)[:, None],
        }
        arrays = {k: v.numpy() for k, v in batch.items()}
        for j, (s, src, dst, cand) in enumerate(recs):
            io.tokens(src, out=arrays["src_tokens"][j])
            io.tokens(dst, out=arrays["dst_tokens"][j])
            arrays["src_desc"][j] = io.rows(src, "obj_desc", [s.src_k])[0]
            io.whole(cand, "desc", out=arrays["cand_desc"][j, : counts[j]])
        return batch
