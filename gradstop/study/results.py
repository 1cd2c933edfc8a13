"""Results folders: written completely or not at all, never over an existing one.

A run writes into a hidden staging folder next to its destination and renames it into place at
the end, so an interrupted run leaves no half-written results folder, and an existing folder is
never touched.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import shutil
from pathlib import Path

from gradstop._io import atomic_write, jsonable
from gradstop._plot import FLOW_COLORS, flow_color, plot_curves, plot_lines, save_figure


__all__ = ["run_folder", "unique_path", "write_csv", "write_json", "jsonable", "plot_curves", "plot_lines", "flow_color",
           "save_figure", "aligned_by_seed"]


def aligned_by_seed(rows) -> list[list[dict]]:
    """One cell's evaluation rows (dicts with "seed" and "update") as one list per seed, in the order the seeds
    first appear, each sorted by update and cut to the evaluations every seed reached (a part-finished run would
    bias the later points); [] for no rows."""
    by_seed: dict = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r)
    if not by_seed:
        return []
    n = min(len(v) for v in by_seed.values())
    return [sorted(v, key=lambda r: r["update"])[:n] for v in by_seed.values()]

def unique_path(root: Path | str, name: str) -> Path:
    """``root/name-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``, … appended if that exists."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_absent(dest: Path | str, error=None) -> Path:
    """``dest`` as a Path, after checking that no results folder is there: a script calls it before it runs, so
    that a taken ``--out`` fails at once rather than after the measurements (:func:`run_folder` checks again).
    A taken ``dest`` goes to ``error`` (a script's ``parser.error``, which exits) if given, else raises
    FileExistsError."""
    dest = Path(dest)
    if dest.exists():
        message = f"results folder {dest} already exists: choose another --out, or move it away first"
        if error is not None:
            error(message)
        raise FileExistsError(message)
    return dest


@contextlib.contextmanager
def run_folder(dest: Path | str, *, replace: bool = False):
    """Yield a staging folder; on success publish it as ``dest``.

    ``dest`` must not exist, unless ``replace``: then the finished staging folder takes its place (the old
    folder is moved aside first and removed once the new one is in place; a failed run leaves it untouched).

    Raises:
      FileExistsError: ``dest`` exists without ``replace`` (before the run, or was created during it — then
        the staged results are kept beside it and the error names them).
    """
    dest = Path(dest) if replace else check_absent(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if replace and dest.exists():
        os.rename(dest, old)
    try:
        os.rename(staging, dest)  # atomic; fails rather than replace a non-empty folder
    except OSError as err:
        raise FileExistsError(f"{dest} appeared while the run was writing; its results are kept in {staging}") from err
    if old.exists():
        shutil.rmtree(old)


def write_csv(path: Path, header: list[str], rows) -> None:
    """A CSV file, written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, buf.getvalue().encode())


def write_json(path: Path, data) -> None:
    """A JSON file, written atomically."""
    atomic_write(path, (json.dumps(data, indent=2, default=jsonable) + "\n").encode())
