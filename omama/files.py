"""The project's own files, read and written safely.

Writes go to a temp file that is renamed over the target, so a killed process never leaves a
half-written file behind; every JSON file is read through `read_json`, so a missing or broken
one is the standard one-line error naming it; `file_sha256` is the one content hash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from omama.errors import bad_file


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        # mkstemp makes 0600 files; a cache or run folder on a shared cluster must stay
        # readable as the umask allows, like the HDF5 shards beside it
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError as exc:
        raise bad_file(path.parent, f"cannot write here ({exc.strerror})") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise bad_file(
            path, f"write failed ({exc.strerror}); the previous file is intact"
        ) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(obj: Any, path: str | Path, indent: int | None = None) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent))


def write_torch(obj: Any, path: str | Path) -> None:
    """torch.save through a file object: the archive name inside is then fixed ("archive"),
    not the random temp name, so the same tensors always give the same bytes."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError:  # torch reports a failed write (disk full, quota) this way
            raise OSError(errno.EIO, "short write: disk full or over quota?") from None


def save_npz_deterministic(path: str | Path, array: np.ndarray, level: int = 1) -> None:
    """Write `arr_0` as np.savez_compressed does (one deflated `arr_0.npy` member, read back
    by np.load), but with a fixed zip timestamp, so the same array gives the same bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    info = zipfile.ZipInfo("arr_0.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)


def beside(path: str | Path, suffix: str) -> Path:
    """The path next to `path` whose name is its stem plus `suffix`:
    `beside("out/pred.json", "_gt.json")` is `out/pred_gt.json`."""
    path = Path(path)
    return path.with_name(path.stem + suffix)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Load a JSON file; a missing, unreadable or malformed one is one line naming `path`."""
    path = Path(path)
    if not path.exists():
        raise bad_file(path, f"{what} missing")
    if not path.is_file():
        raise bad_file(path, f"{what} is not a file")
    try:
        with open(path, encoding="utf-8") as fp:
            return json.load(fp)
    except json.JSONDecodeError as exc:
        raise bad_file(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise bad_file(path, "not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise bad_file(path, f"cannot read {what} ({exc.strerror or exc})") from None


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
