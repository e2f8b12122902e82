"""A sample's object rows checked against its image records, where the loaders resolve it.

A samples file edited by hand (or damaged) can name an object row its image does not have;
read as it is, that is an IndexError deep in a DataLoader worker. `check_object_rows` turns
it into one line naming the samples file and the entry.
"""

from __future__ import annotations

from omama.cache.manifest import load_samples
from omama.cache.paths import samples_path
from omama.cache.reader import Cache, Record
from omama.cache.records import Sample
from omama.constants import SPLITS
from omama.errors import OmamaError, bad_file


def check_object_rows(
    cache: Cache, direction: str, sample: Sample, src: Record, dst: Record
) -> None:
    """`sample.src_k` must be a row of `src`'s objects and `dst_k` one of `dst`'s (or -1,
    not visible); else OmamaError naming the samples file and entry that hold the sample."""
    for name, k, rec, lowest in (("src_k", sample.src_k, src, 0), ("dst_k", sample.dst_k, dst, -1)):
        n = cache.shape(rec, "obj_desc")[0]
        if lowest <= k < n:
            continue
        key = rec.path.removeprefix("img/")
        raise _where(cache, direction, sample)(
            f"{name} {k} is out of range: image {key} has {n} object{'s' if n != 1 else ''} "
            f"(rows 0..{n - 1}{', or -1: not visible' if lowest < 0 else ''}); rerun "
            "omama-precompute for this split to rewrite the file"
        )


def _where(cache: Cache, direction: str, sample: Sample):
    """A maker of the error naming the samples file and entry of `sample` (looked up only
    on this error path: the file of the split that holds it)."""
    name = f"{sample.take}/{sample.obj}/{sample.src_cam}->{sample.dst_cam}/{sample.frame}"
    for split in SPLITS:
        path = samples_path(cache.path, direction, split)
        if not path.exists():
            continue
        try:
            rows = load_samples(cache.path, direction, split)
        except OmamaError:
            continue
        if sample in rows:
            i = rows.index(sample)
            return lambda problem: bad_file(path, f"entry {i} ({name}): {problem}")
    return lambda problem: bad_file(
        samples_path(cache.path, direction, "*"), f"sample {name}: {problem}"
    )
