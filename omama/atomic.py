"""Write-then-rename so that a killed process never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
