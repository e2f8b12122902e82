"""What keeps a run folder safe: one run per folder, resumed only on the data it began with,
and stopped, with its good checkpoints kept, when the loss or a gradient stops being finite.

- `check_run_folder`: any run artefact means "a run lives here": a fresh run is refused
  there, and `--resume` is refused when `state.pt` is gone but the run's other files are not.
- `data_identity`: what a run trains and validates on (the cache's settings and the exact
  samples of both splits), kept in `state.pt`; `check_same_data` refuses a resume on other
  data, whatever the cache folder is called.
- `nonfinite_error`: the one line for a non-finite loss or gradient, naming the step and,
  when a cached record of that step's batch holds a non-finite value, the shard and record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omama.cache.reader import Cache, Record
from omama.cache.records import Sample
from omama.cache.samples import SampleTable
from omama.errors import OmamaError, bad_file

# Every file a run writes: any of them means a run lives in the folder.
RUN_FILES = ("state.pt", "log.json", "last.pt", "best.pt", "init.pt", "curves.png", "steps.jsonl")


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse to start over a run, or to resume one whose `state.pt` is gone."""
    if out.exists() and not out.is_dir():
        raise bad_file(out, "cannot create the run folder (Not a directory)")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not resume and found:
        raise bad_file(
            out,
            f"a run already lives here ({', '.join(found)}); pass --resume to continue it, "
            "or use another --out",
        )
    # a run killed before its first save leaves init.pt (and the loss lines of that save,
    # written before its state.pt) alone: --resume starts it afresh
    written = [name for name in found if name not in ("state.pt", "init.pt", "steps.jsonl")]
    if resume and "state.pt" not in found and written:
        raise bad_file(
            out / "state.pt",
            f"missing, but the run folder holds {', '.join(written)}: a run without its "
            "state cannot be resumed, and starting afresh would overwrite them; use another --out",
        )


def _samples_digest(samples: Sequence[Sample]) -> str:
    """sha256 of the samples' names and object rows; a columnar table is hashed by its id
    columns and name tables (numpy, no `Sample` per row: the train split has 1.5M)."""
    digest = hashlib.sha256()
    if isinstance(samples, SampleTable):
        for field in ("take", "obj", "src_cam", "dst_cam", "frame", "src_k", "dst_k"):
            digest.update(np.ascontiguousarray(samples.column(field), np.int32).tobytes())
        for table in sorted(samples.tables):
            digest.update("\n".join(samples.names(table)).encode() + b"\0")
        return digest.hexdigest()
    for s in samples:
        line = f"{s.take}\t{s.obj}\t{s.src_cam}\t{s.dst_cam}\t{s.frame}\t{s.src_k}\t{s.dst_k}\n"
        digest.update(line.encode())
    return digest.hexdigest()


def data_identity(cache: Cache, train: Sequence[Sample], val: Sequence[Sample]) -> dict:
    """What a run is trained and validated on: the cache's settings (backbone, weights,
    feature format) and a digest of each split's samples (names and object rows)."""
    settings = json.dumps(cache.manifest.settings, sort_keys=True)
    return {
        "cache": str(cache.path),
        "settings": hashlib.sha256(settings.encode()).hexdigest(),
        "train": _samples_digest(train),
        "val": _samples_digest(val),
    }


def check_same_data(saved: dict | None, now: dict, path: Path) -> None:
    """Refuse to resume a run on another cache or other validation samples (a state.pt
    written before identities were kept has none: nothing to compare)."""
    if not saved:
        return
    what = {
        "settings": "a cache built with other settings",
        "train": "other training samples",
        "val": "other validation samples",
    }
    for key, words in what.items():
        if saved.get(key) != now.get(key):
            raise bad_file(
                path,
                f"this run was started on {saved.get('cache')}; {now['cache']} holds {words}; "
                "resume with the same --cache and validation options, or start another --out "
                "with --init",
            )


def _nonfinite_field(cache: Cache, rec: Record, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name not in rec.fields:
            continue
        values = cache.tokens(rec) if name == "tokens" else cache.whole(rec, name)
        if not np.isfinite(np.asarray(values, dtype=np.float32)).all():
            return name
    return None


def nonfinite_source(cache: Cache, direction: str, samples: Sequence[Sample]) -> str | None:
    """'SHARD: RECORD/FIELD holds a non-finite value' for the first cached record of these
    samples that holds one (tokens, object or candidate descriptors), else None."""
    seen: set[str] = set()
    for s in samples:
        reads = (
            (cache.image(s.src), ("tokens", "obj_desc")),
            (cache.image(s.dst), ("tokens", "obj_desc")),
            (cache.cands(direction, s.dst), ("desc",)),
        )
        for rec, names in reads:
            if rec.path in seen:
                continue
            seen.add(rec.path)
            field = _nonfinite_field(cache, rec, names)
            if field is not None:
                shard = cache.shards.dir / rec.shard
                return f"{shard}: {rec.path}/{field} holds a non-finite value"
    return None


def nonfinite_error(
    out: Path, step: int, epoch: int, source: str | None, saved_step: int | None
) -> OmamaError:
    """The one line for a run stopped by a non-finite loss or gradient."""
    kept = (
        f"the checkpoints in {out} are those of step {saved_step}, left as they were"
        if saved_step is not None
        else "nothing was saved"
    )
    if source is not None:
        return OmamaError(
            f"{source} (used by step {step}, epoch {epoch}); training stopped: the loss is "
            f"not finite; {kept}"
        )
    return bad_file(
        out,
        f"training stopped at step {step} (epoch {epoch}): the loss or a gradient is not "
        f"finite (is --lr too high?); {kept}",
    )
