"""Every command checks its paths before any work: inputs that are there, outputs it can
write, and no output that lands on one of its own inputs (or on another output).

Each problem is the standard one line, `"<file>: <problem>"`, and exit code 2, before a
backbone, a checkpoint or a split is touched: a bad `--out` never costs a whole evaluation.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from omama.config import flag_name
from omama.errors import OmamaError, bad_file


def input_file(path: Path | None, name: str, what: str = "file") -> None:
    """`path` (the option `name`) must be a readable file, when given."""
    if path is None:
        return
    path = Path(path)
    if not path.exists():
        raise bad_file(path, f"{what} missing ({flag_name(name)})")
    if path.is_dir():
        raise bad_file(path, f"is a folder, not a {what} ({flag_name(name)})")
    if not os.access(path, os.R_OK):
        raise bad_file(path, f"cannot read the {what} (Permission denied)")


def input_dir(path: Path | None, name: str, what: str = "folder") -> None:
    """`path` (the option `name`) must be a folder, when given."""
    if path is None:
        return
    path = Path(path)
    if not path.exists():
        raise bad_file(path, f"{what} missing ({flag_name(name)})")
    if not path.is_dir():
        raise bad_file(path, f"not a folder ({flag_name(name)} wants the {what})")


def _existing_ancestor(path: Path) -> Path:
    here = path.absolute().parent
    while not here.exists():
        here = here.parent
    return here


def writable(path: Path | None, name: str, folder: bool = False) -> None:
    """`path` can be written (created, with its missing parent folders): its nearest existing
    parent is a folder that takes a new file; an existing `path` is a file (or, with
    `folder`, a folder)."""
    if path is None:
        return
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise bad_file(path, f"not a folder ({flag_name(name)} names one to write into)")
        if not folder and path.is_dir():
            raise bad_file(path, f"is a folder ({flag_name(name)} names a file to write)")
        where = path if folder else path.parent
    else:
        where = _existing_ancestor(path)
        if not where.is_dir():
            what = "cannot create the folder" if folder else "cannot write here"
            raise bad_file(path, f"{what} ({where} is not a directory)")
    try:  # the one sure test: make (and remove) a file there
        fd, probe = tempfile.mkstemp(prefix=".omama-probe.", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise bad_file(path, f"cannot write here ({where}: {exc.strerror})") from None


def _same(a: Path, b: Path) -> bool:
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def distinct(inputs: Mapping[str, Path | None], outputs: Mapping[str, Path | None]) -> None:
    """No output is one of the inputs, and no two outputs are the same file. Keys are what
    the message calls each path (an option name, or e.g. "the ground truth written beside
    --out")."""
    outs = [(k, Path(v)) for k, v in outputs.items() if v is not None]
    ins = [(k, Path(v)) for k, v in inputs.items() if v is not None]
    for i, (out_name, out) in enumerate(outs):
        for in_name, src in ins:
            if _same(out, src):
                raise OmamaError(
                    f"{out}: {_show(out_name)} would overwrite {_show(in_name)}, an input of "
                    "this command; choose another output path"
                )
        for other_name, other in outs[:i]:
            if _same(out, other):
                raise OmamaError(
                    f"{out}: {_show(out_name)} and {_show(other_name)} name the same file; "
                    "choose another path for one of them"
                )


def _show(name: str) -> str:
    return name if " " in name else flag_name(name)
