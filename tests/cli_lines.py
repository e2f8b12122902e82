"""The one-line error of a command, as every test of bad input reads it."""

from __future__ import annotations


def error_line(stderr: str, prog: str) -> str:
    """The single `prog: error: ...` line of `stderr` (progress bars may sit above it); no
    traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def one_error_line(capsys, prog: str) -> str:
    """`error_line` of what the command wrote to stderr since the last read."""
    return error_line(capsys.readouterr().err, prog)
