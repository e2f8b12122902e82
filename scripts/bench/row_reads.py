"""Row 4: cache reads. Bytes the training loader reads per sample against the bytes the step
uses; the loader's read throughput on whole batches against a raw sequential read of the same
shard files, and against plain read() calls of exactly the loader's byte ranges.

The loader reads through the cache reader; `ObservedCache` is that reader, noting each byte
range it reads by extent. The process's read syscalls (`rchar`) are an independent check.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench import baselines as base
from bench.common import DIRECTION, LOOP_SPLIT, TRAIN, TRAIN_SPLIT, Ctx, Plan, Row, median
from omama.cache.extents import runs
from omama.cache.paths import shards_dir
from omama.cache.reader import Cache, Record
from omama.cache.samples import SampleTable
from omama.loader.sampler import EpochSampler
from omama.loader.train_samples import TrainSamples

Range = tuple[str, int, int]  # (shard file, offset, bytes)


class ObservedCache(Cache):
    """The cache reader, noting the byte ranges it reads by extent in `ranges` (reads that
    only HDF5 can do are not noted, as they are not positional reads)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.ranges: list[Range] = []

    def _note(self, rec: Record, name: str, rows: np.ndarray | None = None) -> None:
        ext = rec.fields.get(name)
        if ext is None:
            return
        path = str(self.shards.dir / rec.shard)
        if rows is None:
            self.ranges.append((path, ext.offset, ext.nbytes))
            return
        uniq = np.unique(rows)
        for a, b in runs(uniq):
            start = ext.offset + int(uniq[a]) * ext.row_bytes
            self.ranges.append((path, start, (b - a) * ext.row_bytes))

    def reader(self, samples: SampleTable, direction: str) -> ObservedCache:
        """The loader's reader is this one, so that its reads are noted too."""
        return self

    def whole(self, rec: Record, name: str, out: np.ndarray | None = None) -> np.ndarray:
        self._note(rec, name)
        return super().whole(rec, name, out)

    def rows(self, rec: Record, name: str, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        self._note(rec, name, np.asarray(rows, dtype=np.int64))
        return super().rows(rec, name, rows)

    def take_ranges(self) -> list[Range]:
        """The ranges noted since the last call, in file order."""
        out, self.ranges = sorted(self.ranges), []
        return out


def proc_rchar() -> int | None:
    """Bytes this process has read through read syscalls, from /proc/self/io."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def distinct_image_batches(data: TrainSamples, order: list, p: Plan) -> list[list]:
    """Up to p.read_batches batches of up to p.step_batch indices, in the given order, none
    holding an image twice (indices that would repeat one wait for a later batch)."""
    batches: list[list] = []
    pending = list(order)
    while pending and len(batches) < p.read_batches:
        batch, seen, rest = [], set(), []
        for ix in pending:
            s = data.samples[ix[1]]
            if len(batch) < p.step_batch and not {s.src, s.dst} & seen:
                batch.append(ix)
                seen |= {s.src, s.dst}
            else:
                rest.append(ix)
        batches.append(batch)
        pending = rest
    return batches


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in tensors.values())


def used_bytes(item: dict[str, torch.Tensor], cand: Record, visible: bool) -> int:
    """What the step consumes, plus the adjacency row and anchor that chose the negatives
    (read for a visible sample only)."""
    consumed = {k: item[k] for k in ("src_tokens", "dst_tokens", "src_desc", "cand_desc")}
    chosen = sum(cand.fields[k].row_bytes for k in ("adj", "anchor")) if visible else 0
    return tensor_bytes(consumed) + chosen


def bytes_per_sample(cache: ObservedCache, data: TrainSamples) -> tuple[int, int, int]:
    """(bytes read by extent, bytes the step uses, bytes of read syscalls), all samples."""
    for i in range(len(data)):  # warm the record memo (one h5py lookup per record)
        data[(0, i)]
    read, used, rchar = 0, 0, 0
    for i in range(len(data)):
        s = data.samples[i]
        cache.take_ranges()
        r0 = proc_rchar()
        item = data[(1, i)]
        rchar += (proc_rchar() or 0) - (r0 or 0)
        read += sum(n for _, _, n in cache.take_ranges())
        used += used_bytes(item, cache.cands(DIRECTION, s.dst), s.dst_k >= 0)
    return read, used, rchar


def run(ctx: Ctx) -> list[Row]:
    p = ctx.plan
    observed = ObservedCache(ctx.cache)
    data = TrainSamples(observed, DIRECTION, TRAIN_SPLIT, TRAIN.n_masks, TRAIN.seed)
    shards = sorted(
        {observed.manifest.images[s.src] for s in data.samples}
        | {observed.manifest.images[s.dst] for s in data.samples}
    )
    files = [shards_dir(ctx.cache) / name for name in shards]
    read, used, rchar = bytes_per_sample(observed, data)
    n = len(data)

    # throughput: batches as the DataLoader fetches them (TrainSamples.__getitems__), in the
    # trainer's order, each holding no image twice (the bench cache holds few images; in real
    # training a repeat within a batch is rare); cold: the page cache dropped before every
    # batch and before every raw pass. Timed: the loader on the plain cache reader; the
    # observed one notes each batch's byte ranges beforehand (which also warms the memo).
    noted = TrainSamples(observed, DIRECTION, LOOP_SPLIT, TRAIN.n_masks, TRAIN.seed)
    loop = TrainSamples(Cache(ctx.cache), DIRECTION, LOOP_SPLIT, TRAIN.n_masks, TRAIN.seed)
    batches = distinct_image_batches(loop, list(EpochSampler(len(loop), TRAIN.seed)), p)
    delivered, extents = [], []
    for batch in batches:
        observed.take_ranges()
        delivered.append(tensor_bytes(noted.__getitems__(batch)))
        extents.append(sorted(set(observed.take_ranges())))
        loop.__getitems__(batch)  # the record memo of the timed reader

    def loader_pass(cold: bool) -> float:
        total = 0.0
        for batch in batches:
            if cold:
                base.drop_from_page_cache(files)
            t0 = time.perf_counter()
            loop.__getitems__(batch)
            total += time.perf_counter() - t0
        return sum(delivered) / total

    def raw_pass(cold: bool) -> float:
        if cold:
            base.drop_from_page_cache(files)
        t0 = time.perf_counter()
        nbytes = base.sequential_read(files)
        return nbytes / (time.perf_counter() - t0)

    def same_ranges_pass() -> float:
        """Plain read() calls of exactly the byte ranges the loader reads, in file order."""
        total, nbytes = 0.0, 0
        for ranges in extents:
            base.drop_from_page_cache(files)
            t0 = time.perf_counter()
            nbytes += base.read_ranges(ranges)
            total += time.perf_counter() - t0
        return nbytes / total

    can_drop = base.drop_from_page_cache(files)
    rates: dict[str, list[float]] = defaultdict(list)
    for _ in range(p.read_reps):
        for cold in (True, False) if can_drop else (False,):
            tag = "cold" if cold else "warm"
            rates[f"loader_{tag}"].append(loader_pass(cold))
            rates[f"raw_{tag}"].append(raw_pass(cold))
        if can_drop:
            rates["ranges_cold"].append(same_ranges_pass())
    med = {k: median(v) for k, v in rates.items()}
    tag = "cold" if can_drop else "warm"
    ratio = med[f"loader_{tag}"] / med[f"raw_{tag}"]
    unused = max(0, read - used)
    warm_ratio = med["loader_warm"] / med["raw_warm"]
    ranges_text = (
        f"; cold plain read() of exactly the loader's byte ranges: "
        f"{med['ranges_cold'] / 1e9:.2f} GB/s (loader / that = "
        f"{med['loader_cold'] / med['ranges_cold']:.2f})"
        if "ranges_cold" in med
        else ""
    )
    return [
        Row(
            row="4",
            what=f"cache reads: bytes per training sample; loader read throughput (whole "
            f"batches, page cache dropped: {tag}) vs a raw sequential read of the same shard "
            f"files",
            project=f"{read / n / 1e6:.2f} MB/sample read, {med[f'loader_{tag}'] / 1e9:.2f} GB/s",
            baseline=f"{used / n / 1e6:.2f} MB/sample used; raw read "
            f"{med[f'raw_{tag}'] / 1e9:.2f} GB/s",
            ratio=ratio,
            target=">= 0.7 of the raw read; no byte read that the step does not use",
            met=ratio >= 0.7 and unused == 0,
            command=ctx.command("4"),
            note=f"unused bytes read: {unused}; syscall rchar {rchar / n / 1e6:.2f} MB/sample; "
            f"warm (page cache full): loader {med['loader_warm'] / 1e9:.2f} GB/s vs raw "
            f"{med['raw_warm'] / 1e9:.2f} GB/s ({warm_ratio:.2f}); "
            f"{len(batches)} batches of {', '.join(str(len(x)) for x in batches)} samples "
            f"with no image twice, {sum(delivered) / 1e6:.0f} MB{ranges_text}",
            details={
                "bytes_read": read,
                "bytes_used": used,
                "rchar": rchar,
                "samples": n,
                "rates_Bps": dict(rates),
                "cold": can_drop,
                "batch_bytes": delivered,
                "batch_sizes": [len(x) for x in batches],
            },
        )
    ]
