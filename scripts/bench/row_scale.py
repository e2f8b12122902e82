"""Row 14: scale. Costs per item at N and 4N images and pairs, and memory per process.

A cache with real counts at tiny sizes (`scale_world`: 2x2 patch grids, 8 candidates, six
objects per take, 24 pairs per 5 images as in the real train split; shards of `SHARD` records
so that the shard count grows as it does at real size) is built at two sizes, the train split
in two parts (merged by the last part, then `--merge` once more, timed) and the val split
(a quarter of train's takes) as one plain part after it. Each stage runs in a fresh process
(spawn), timed, with its peak RSS (VmHWM), its RSS when the stage began (after imports) and
the most files it had open (sampled every 20 ms):

  precompute   run_precompute of each train part and of the val split; the backbone stage
               replaced by `scale_world.fake_build` (same writer and publishing): bookkeeping
               = everything but writing the records (planning, shard naming, manifest and part
               manifests, samples, merge)
  merge        `--merge` of the train split (every part done)
  samples      Cache(...).samples(train)
  epoch        one training epoch of the trainer's loader (TrainSamples, EpochSampler,
               train_loader with one worker): per sample; the worker's peak RSS and open files
  validation   the trainer's validation of the val split (score_across_ranks, fit, measure)
  evaluation   run_eval of the val split with the untrained matcher (predictions, GT, metrics)
  verify       verify_cache of the whole cache, per record

Row 14j times writing the records themselves, a cost flat by construction: its ratio shows
how much a busy host alone moved the two sizes apart. The ratio of each per-item cost at 4N
to N (target <= 1.2: flat) and the projection of each
to 300k images and 1.5M pairs from the two sizes (linear in count for a flat cost, quadratic
when it grows) go to the table. Run alone: `python scripts/bench --rows 14`;
`SCALE_N=2000 python scripts/bench --rows 14` picks the small size in images.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing as mp
import os
import shutil
import threading
import time
from pathlib import Path

from bench import scale_world as world
from bench.common import TRAIN, Ctx, Row

log = logging.getLogger("bench")

N_TAKES = int(os.environ.get("SCALE_TAKES", "8"))  # train takes at size N (250 images each)
VAL_SHARE = 8  # the val split has an eighth of the train split's takes
EPOCH_SHARE = 4  # the epoch stage reads the first quarter of an epoch's batches
SHARD = 32  # records per shard (the real 256 at real sizes gives ~1,400 shards per split)
REAL_IMAGES, REAL_PAIRS = 300_000, 1_500_000
POLL_S = 0.02


# --- measuring one stage in a fresh process ----------------------------------------------
def _status(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _fds(pid: int | str) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


class Watch:
    """The most files this process (and, separately, its children) had open, and the
    children's peak RSS, sampled on a thread."""

    def __init__(self) -> None:
        self.fds = self.child_fds = self.child_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.fds = max(self.fds, _fds(me))
            for child in _children(me):
                try:
                    self.child_rss = max(self.child_rss, _status(child, "VmHWM"))
                except OSError:
                    continue
                self.child_fds = max(self.child_fds, _fds(child))
            time.sleep(POLL_S)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"fds": self.fds, "child_fds": self.child_fds, "child_rss": self.child_rss}


def _reset_peak() -> int:
    """Return freed memory to the system and restart VmHWM at the current RSS (Linux: 5 into
    clear_refs); returns that RSS."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status("self", "VmRSS")


def run_stage(name: str, *args: object) -> dict:
    """`scale_stages.NAME(*args)` measured as if it were its own process: its dict, plus
    seconds, rss_start, rss_peak, fds, child_fds and child_rss."""
    from bench import scale_stages

    base = _reset_peak()
    watch = Watch()
    t0 = time.perf_counter()
    out = getattr(scale_stages, name)(*args)
    out["seconds"] = time.perf_counter() - t0
    return out | watch.stop() | {"rss_start": base, "rss_peak": _status("self", "VmHWM")}


def _size_main(folder: Path, n_takes: int, conn) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    from omama.cli.common import frozen_heap

    try:
        with frozen_heap():  # what every omama command does around its work
            conn.send(measure_size(folder, n_takes))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


def in_fresh_process(folder: Path, n_takes: int) -> dict:
    """`measure_size` in a spawned interpreter (nothing inherited from the bench process)."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_size_main, args=(folder, n_takes, send))
    p.start()
    send.close()
    out = recv.recv()
    p.join()
    if "error" in out:
        raise RuntimeError(f"scale row at {n_takes} takes: {out['error']}")
    return out


# --- one size ------------------------------------------------------------------------------
def measure_size(folder: Path, n_takes: int) -> dict:
    """Every stage at one size: `n_takes` train takes, an eighth of them in val."""
    shutil.rmtree(folder, ignore_errors=True)
    root, cache = folder / "root", folder / "cache"
    per_take = world.FRAMES * (1 + len(world.EXOS))
    pairs = world.write_root(root, {"train": n_takes, "val": max(1, n_takes // VAL_SHARE)})
    out: dict = {"takes": n_takes, "pairs": pairs, "images": n_takes * per_take}
    out["val_images"] = (max(1, n_takes // VAL_SHARE)) * per_take
    parts = [run_stage("precompute", root, cache, "train", i, 2, SHARD) for i in (0, 1)]
    out["precompute_train"] = parts
    out["merge"] = run_stage("precompute", root, cache, "train", None, 2, SHARD, True)
    out["precompute_val"] = run_stage("precompute", root, cache, "val", None, 1, SHARD)
    out["samples"] = run_stage("samples", cache, "train")
    out["epoch"] = run_stage("epoch", cache, TRAIN.batch_size, TRAIN.n_masks, EPOCH_SHARE)
    out["validation"] = run_stage("validation", cache, TRAIN.batch_size)
    out["evaluation"] = run_stage("evaluation", cache, folder / "eval")
    out["verify"] = run_stage("verify", cache)
    out["shards"] = len(list((cache / "shards").glob("*.h5")))
    out["cache_bytes"] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    return out


# --- the row -------------------------------------------------------------------------------
def _per_item(m: dict) -> dict[str, tuple[float, str]]:
    """Seconds per item of each measured cost, and what the item is."""
    train_parts = m["precompute_train"]
    records = m["images"] + m["images"] // 5 + m["val_images"] + m["val_images"] // 5
    images = m["images"] + m["val_images"]
    book = sum(p["seconds"] - p["write"] for p in [*train_parts, m["precompute_val"]])
    return {
        "precompute bookkeeping": (book / images, "image"),
        "manifest updates": (
            sum(p["publish"] for p in [*train_parts, m["precompute_val"]]) / images,
            "image",
        ),
        "shard naming": (sum(p["open"] for p in train_parts) / m["images"], "image"),
        "--merge": (m["merge"]["seconds"] / (m["images"] * 6 // 5), "record"),
        "samples load": (m["samples"]["seconds"] / m["pairs"]["train"], "pair"),
        "training epoch": (m["epoch"]["seconds"] / m["epoch"]["n"], "sample"),
        "validation": (m["validation"]["seconds"] / m["pairs"]["val"], "pair"),
        "evaluation": (m["evaluation"]["seconds"] / m["pairs"]["val"], "pair"),
        "--verify": (m["verify"]["seconds"] / records, "record"),
        # flat by construction (tiny records through h5py): how much the host alone moved
        "record writes (control)": (
            sum(p["write"] for p in [*train_parts, m["precompute_val"]]) / images,
            "image",
        ),
    }


def _memory(m: dict) -> dict[str, tuple[int, int | None, int]]:
    """Per process: (peak RSS, growth above its start, most open files)."""
    out = {}
    for stage in ("samples", "validation", "evaluation", "verify", "merge"):
        s = m[stage]
        out[stage] = (s["rss_peak"], s["rss_peak"] - s["rss_start"], s["fds"])
    p = max(m["precompute_train"], key=lambda s: s["rss_peak"])
    out["precompute part"] = (p["rss_peak"], p["rss_peak"] - p["rss_start"], p["fds"])
    e = m["epoch"]  # forked: its pages start shared with the reader's, no growth to tell
    out["training worker"] = (e["child_rss"], None, e["child_fds"])
    return out


def projection(small: float, large: float, n_small: int, n_large: int, n_real: int) -> float:
    """Total seconds at `n_real` items, from per-item seconds at two sizes: per-item cost
    taken as a + b * n through the two points (flat: b = 0)."""
    b = (large - small) / (n_large - n_small)
    a = small - b * n_small
    return max(a + b * n_real, small) * n_real


def _mb(peak: int, growth: int | None) -> str:
    """Peak RSS, and its growth above the process's RSS when the stage began."""
    return f"{peak / 2**20:.0f} MB" + ("" if growth is None else f" (+{growth / 2**20:.0f})")


def _fmt_s(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_total(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def run(ctx: Ctx) -> list[Row]:
    n = N_TAKES
    small = in_fresh_process(ctx.out / "scale" / "n", n)
    large = in_fresh_process(ctx.out / "scale" / "4n", 4 * n)
    return rows_from(ctx.command("14"), small, large, n)


def _axis(m: dict, what: str, unit: str) -> int:
    """The count a per-item cost is measured over (for the projection's line)."""
    if what in ("validation", "evaluation"):
        return m["pairs"]["val"]
    return m["pairs"]["train"] if unit in ("pair", "sample") else m["images"]


def rows_from(command: str, small: dict, large: dict, n: int) -> list[Row]:
    """The table rows of the two sizes' measurements (also to re-render a bench.json)."""
    per_s, per_l = _per_item(small), _per_item(large)
    size_note = (
        f"N: {small['images']} train images, {small['pairs']['train']} train pairs, "
        f"{small['pairs']['val']} val pairs, {small['shards']} shards of {SHARD} records; "
        f"4N: {large['images']} images, {large['pairs']['train']} pairs, "
        f"{large['pairs']['val']} val pairs, {large['shards']} shards"
    )
    rows = []
    for i, (what, (s_small, unit)) in enumerate(per_s.items()):
        s_large = per_l[what][0]
        ratio = s_large / s_small if s_small > 0 else None
        real = REAL_PAIRS if unit in ("pair", "sample") else REAL_IMAGES
        n_s, n_l = _axis(small, what, unit), _axis(large, what, unit)
        total = projection(s_small, s_large, n_s, n_l, real)
        rows.append(
            Row(
                row=f"14{'abcdefghij'[i]}",
                what=f"scale: {what}, per {unit} at 4N vs N",
                project=f"{_fmt_s(s_large)}/{unit} (4N)",
                baseline=f"{_fmt_s(s_small)}/{unit} (N)",
                ratio=ratio,
                target="<= 1.2",
                met=None if ratio is None else ratio <= 1.2,
                command=command,
                note=f"{real:,} {unit}s: {_fmt_total(s_large * real)} at the 4N cost per {unit}"
                + (
                    f", {_fmt_total(total)} if it keeps growing as from N to 4N"
                    if ratio is not None and ratio > 1.2
                    else ""
                )
                + (f"; {size_note}" if i == 0 else ""),
                details={"small": small, "large": large, "n": n} if i == 0 else {},
            )
        )
    mem_s, mem_l = _memory(small), _memory(large)
    for j, stage in enumerate(mem_s):
        (pk_s, gr_s, fd_s), (pk_l, gr_l, fd_l) = mem_s[stage], mem_l[stage]
        ratio = pk_l / pk_s if pk_s else None
        rows.append(
            Row(
                row=f"14m{j + 1}",
                what=f"scale: {stage} process, peak RSS and open files at 4N vs N",
                project=f"{_mb(pk_l, gr_l)}, {fd_l} files (4N)",
                baseline=f"{_mb(pk_s, gr_s)}, {fd_s} files (N)",
                ratio=ratio,
                target="flat (<= 1.2)",
                met=None if ratio is None else ratio <= 1.2 and fd_l <= max(fd_s * 1.2, 80),
                command=command,
                note="",
            )
        )
    return rows
