"""The one exception type users see: a single line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class OmamaError(Exception):
    """A user-facing failure; the CLI prints it as one line and exits non-zero."""


def bad_file(path: str | Path, problem: str) -> OmamaError:
    """Build the standard `<file>: <problem>` error."""
    return OmamaError(f"{path}: {problem}")
