"""Files a run writes that must survive a SIGKILL at any moment.

- :func:`atomic_write`: write a temporary file beside the target, fsync it, ``os.replace`` it
  into place, fsync the folder. A reader sees the old file or the new one, never a mix.
- :class:`MetricsLog`: a CSV that only grows by whole rows, flushed and fsynced after each
  append. A checkpoint records the log's byte size; resuming truncates the log back to it
  (dropping rows of updates that are about to be recomputed, and any torn last line), so the
  finished log is row for row the log of an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from gradstop._io import atomic_write, atomic_write_json, empty_but_unfinished_writes, is_unfinished_write

__all__ = ["atomic_write", "atomic_write_json", "MetricsLog"]


def _cell(value) -> str:
    """Full-precision text of a value: ``repr`` of floats round-trips exactly."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else repr(float(value))
    return str(value)


class MetricsLog:
    """An append-only CSV of metrics rows with a fixed header."""

    def __init__(self, path: Path | str, header: list[str]):
        self.path, self.header = Path(path), list(header)
        if not self.path.exists() or self.path.stat().st_size == 0:
            atomic_write(self.path, self._line(self.header))

    def _line(self, values) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_cell(v) for v in values])
        return buf.getvalue().encode()

    def size(self) -> int:
        return self.path.stat().st_size

    def truncate(self, size: int) -> None:
        """Cut the log back to ``size`` bytes (a checkpoint's record of it)."""
        with open(self.path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        """Cut the log back to its header (a run that starts over)."""
        self.truncate(len(self._line(self.header)))

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        data = b"".join(self._line([row[k] for k in self.header]) for row in rows)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        """The rows, with numbers parsed (ints where the text is an integer, floats otherwise); a ValueError naming
        the file and line where a row is cut short or the header is not this log's."""
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is not None and list(reader.fieldnames) != self.header:
                raise ValueError(f"{self.path} is not this run's log: its header is {','.join(reader.fieldnames)}, "
                                 f"expected {','.join(self.header)}")
            rows = []
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise ValueError(f"{self.path}, line {reader.line_num}: the row is cut short or has extra cells "
                                     "(the file was truncated or edited); restore it, or delete the run's summary.json "
                                     "and checkpoint to retrain it")
                rows.append({k: _number(v) for k, v in row.items()})
            return rows


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
