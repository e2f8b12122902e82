"""The loss log of a run: OUT/steps.jsonl, one JSON line per log period, appended at saves.

A run logs its mean loss every --log-every steps for its whole length: on the full train
split that is thousands of records an epoch. Rewriting all of them into state.pt and log.json
at every save made the saves of a run quadratic in its length. Instead each save appends the
records logged since the one before to `steps.jsonl`, and state.pt keeps how much of the file
is good: its line and byte count at that save. An append starts at that offset (the bytes
past it cut off first), so records written by a save whose state.pt never landed (a kill
between the two) are written again, once, when the resumed run reaches them. log.json, the
whole history with its steps, is written at the end of each epoch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from omama.errors import bad_file
from omama.train.saver import Write

STEPS_FILE = "steps.jsonl"


def write_at(chunk: tuple[int, bytes], path: Path) -> None:
    """Write `data` at byte `offset` of `path` and end the file there, then fsync: an append
    that first drops whatever a save without its state.pt left past `offset`."""
    offset, data = chunk
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if os.fstat(fd).st_size < offset:
                raise bad_file(path, f"shorter than the {offset} bytes state.pt counts")
            os.pwrite(fd, data, offset)
            os.ftruncate(fd, offset + len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise bad_file(path, f"write failed ({exc.strerror})") from None


@dataclass
class StepLog:
    """How much of OUT/steps.jsonl is written: `lines` records in its first `size` bytes."""

    path: Path
    lines: int = 0
    size: int = 0

    def append(self, steps: list[dict]) -> Write:
        """The write of the records of `steps` past those already in the file."""
        data = "".join(json.dumps(row) + "\n" for row in steps[self.lines :]).encode()
        write = Write(write_at, (self.size, data), self.path)
        self.lines, self.size = len(steps), self.size + len(data)
        return write

    def mark(self) -> dict[str, int]:
        """What state.pt keeps of it."""
        return {"lines": self.lines, "bytes": self.size}

    @classmethod
    def resume(cls, path: Path, mark: dict[str, int]) -> tuple[StepLog, list[dict]]:
        """The log as a save left it (`mark` from its state.pt) and its records."""
        lines, size = mark["lines"], mark["bytes"]
        try:
            with open(path, "rb") as fh:
                data = fh.read(size)
        except OSError as exc:
            raise bad_file(path, f"cannot read the run's loss log ({exc.strerror})") from None
        try:
            rows = [json.loads(line) for line in data.decode().splitlines()]
        except ValueError:
            rows = None
        if len(data) != size or rows is None or len(rows) != lines:
            raise bad_file(
                path,
                f"does not hold the {lines} loss records state.pt counts in its first "
                f"{size} bytes; the run's loss log is damaged",
            )
        return cls(path, lines, size), rows
