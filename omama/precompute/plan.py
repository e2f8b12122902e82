"""A split's plan, made once and shared: the parts of a split and its merge read it.

    CACHE/parts/{direction}_{split}.plan.npz      (plan format 1)

Planning a split parses the whole pair file, checks every pair against its take's
annotations and resolves each pair to its images and object rows: at real size (1.5M pairs)
the costliest start-up of a run. A plain run plans in memory. The parts of a split (torchrun
ranks, `--part I --parts N`) and `--merge` share one plan instead: the first to come plans
and writes it (write-then-rename, under the plan's lock), the others wait for the lock and
read it. The file is a samples file (`omama.cache.samples`: the kept pairs as sample
columns, which give the split's images too) with one more array, `plan`: the JSON of what
the plan was made from and what else it holds:

    format, direction, split, root, pairs (path, bytes, mtime_ns, sha256), pairs_fraction,
    seed (of the fraction), skip_bad, annotations {take: [bytes, mtime_ns]},
    subset (the --pairs-fraction record), bad (pairs --skip-bad left out)

A plan whose inputs differ from the run's (another pair file or one changed since, other
options, a take's annotation file changed) or that cannot be read is never used: the run
plans again and replaces it, and the parts' plan digest (`parts.plan_digest`) refuses parts
of the old one as before.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omama.cache.manifest import file_lock
from omama.cache.paths import plan_path
from omama.cache.samples import SampleTable, read_samples, write_samples
from omama.dataset.layout import Annotations, find_pairs_file, split_takes
from omama.errors import OmamaError, bad_file
from omama.files import file_sha256
from omama.precompute.jobs import build_samples, select_pairs
from omama.precompute.options import PrecomputeConfig

log = logging.getLogger(__name__)

PLAN_FORMAT = 1


@dataclass(frozen=True)
class SplitPlan:
    """The pairs a run caches, as samples, and what was left out of the pair file."""

    samples: SampleTable
    subset: dict | None = None  # what the manifest records about a --pairs-fraction subset
    bad: list[dict] = dataclasses.field(default_factory=list)  # pairs --skip-bad left out


def make_plan(cfg: PrecomputeConfig, ann: Annotations) -> SplitPlan:
    """Plan the split from its pair file (`select_pairs`), the pairs resolved to samples.

    Planning makes a few small objects per pair (the parsed JSON, `Pair`s, `Sample`s) and
    keeps most of them until the table is built; Python's cycle collector, paused meanwhile,
    would otherwise walk all of them again and again, and the cost per pair grew with the
    split (BENCHMARKS.md, "Scale"). Planning makes no reference cycles, so reference
    counting frees what it drops as before."""
    paused = gc.isenabled()
    gc.disable()
    try:
        chosen = select_pairs(cfg, ann)
        table = SampleTable.from_samples(build_samples(chosen.pairs, ann))
    finally:
        if paused:
            gc.enable()
    return SplitPlan(table, chosen.subset, chosen.bad)


def plan_inputs(cfg: PrecomputeConfig) -> tuple[PrecomputeConfig, dict]:
    """The run's options with its pair file resolved, and the identity of what a plan of
    them is made from (all but the annotations, which the plan's takes name)."""
    root = Path(cfg.root)
    split_takes(root, cfg.split)  # a split absent from split.json is a typo: refuse
    path = Path(cfg.pairs or find_pairs_file(root, cfg.split, cfg.direction))
    try:
        st = path.stat()
    except OSError as exc:
        raise bad_file(path, f"cannot read the pairs file ({exc.strerror})") from None
    fraction = cfg.pairs_fraction != 1.0
    inputs = {
        "format": PLAN_FORMAT,
        "direction": cfg.direction,
        "split": cfg.split,
        "root": str(root.resolve()),
        "pairs": [str(path.resolve()), st.st_size, st.st_mtime_ns, file_sha256(path)],
        "pairs_fraction": cfg.pairs_fraction,
        "seed": cfg.seed if fraction else None,
        "skip_bad": cfg.skip_bad,
    }
    return dataclasses.replace(cfg, pairs=path), inputs


def annotation_stamps(ann: Annotations, takes: list[str]) -> dict[str, list[int]]:
    """Each take's annotation file as [bytes, mtime_ns] ([-1, -1]: missing)."""
    out = {}
    for take in takes:
        try:
            st = ann.path(take).stat()
            out[take] = [st.st_size, st.st_mtime_ns]
        except OSError:
            out[take] = [-1, -1]
    return out


def write_plan(path: Path, plan: SplitPlan, inputs: dict, ann: Annotations) -> None:
    """The plan file (atomically), with its inputs' identity."""
    meta = {
        **inputs,
        "annotations": annotation_stamps(ann, plan.samples.names("takes")),
        "subset": plan.subset,
        "bad": plan.bad,
    }
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    write_samples(path, plan.samples, {"plan": blob})


def read_plan(path: Path, inputs: dict, ann: Annotations) -> SplitPlan | None:
    """The plan of `inputs`, or None when there is none, it is of other inputs (a take's
    annotation file changed included) or it cannot be read (it is planned again)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(npz["plan"].tobytes())
        samples = read_samples(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, OmamaError) as exc:
        log.info("%s: unreadable (%s); planning the split again", path, exc)
        return None
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in inputs.items()):
        log.info("%s: planned from other inputs; planning the split again", path)
        return None
    stamps = meta.get("annotations")
    if stamps != annotation_stamps(ann, samples.names("takes")):
        log.info("%s: an annotation file changed since; planning the split again", path)
        return None
    return SplitPlan(samples, meta.get("subset"), list(meta.get("bad") or []))


def shared_plan(cfg: PrecomputeConfig, ann: Annotations) -> SplitPlan:
    """The split's plan for a part or the merge: read when the cache holds a plan of the same
    inputs, else made and written for the others (one process at a time: under the plan's
    lock, the others wait, then read it)."""
    resolved, inputs = plan_inputs(cfg)
    path = plan_path(Path(cfg.cache), cfg.direction, cfg.split)
    lock = path.with_suffix(".lock")
    with file_lock(lock, f"{lock}: held", wait=True):
        plan = read_plan(path, inputs, ann)
        if plan is not None:
            log.info("%s: the split's plan, %d pairs", path, len(plan.samples))
            return plan
        plan = make_plan(resolved, ann)
        write_plan(path, plan, inputs, ann)
        log.info("%s: planned %d pairs, shared with the other parts", path, len(plan.samples))
        return plan
