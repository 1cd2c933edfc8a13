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

import numpy as np

__all__ = ["run_folder", "unique_path", "write_csv", "write_json", "jsonable", "plot_curves", "plot_lines", "flow_color",
           "save_figure"]

# One colour per flow base, the same in every figure gradstop draws (matplotlib's tab10).
FLOW_COLORS = {"none": "tab:blue", "input": "tab:orange", "state": "tab:green", "all": "tab:red",
               "combined": "tab:purple", "directional": "tab:brown", "decay": "tab:pink", "truncate": "tab:olive"}


def flow_color(name: str) -> str:
    """The colour of a flow in every figure: by its base (``input+truncate:32`` is input's), a modifier-only
    flow (``decay:0.9``, ``truncate:16``) by its modifier; anything else tab:gray."""
    from gradstop.flows import parse_flow

    try:
        flow = parse_flow(name)
    except ValueError:
        return "tab:gray"
    if flow.base == "none" and flow.decay != 1.0:
        return FLOW_COLORS["decay"]
    if flow.base == "none" and flow.truncate is not None:
        return FLOW_COLORS["truncate"]
    return FLOW_COLORS[flow.base]


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


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never a part."""
    from gradstop.trainers.files import atomic_write  # here, not at the top: that module imports this one

    atomic_write(path, data)


def write_csv(path: Path, header: list[str], rows) -> None:
    """A CSV file, written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _replace(path, buf.getvalue().encode())


def write_json(path: Path, data) -> None:
    """A JSON file, written atomically."""
    _replace(path, (json.dumps(data, indent=2, default=jsonable) + "\n").encode())


def save_figure(fig, path) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    _replace(path, buf.getvalue())


def jsonable(value):
    """``json.dump``'s ``default``: NumPy scalars and arrays as Python values, anything else as its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def plot_curves(path: Path, curves: dict[str, np.ndarray], *, title: str, ylabel: str = "loss", log: bool = True,
                legend: str = "flow") -> None:
    """One line per named curve against the iteration, saved as PNG."""
    lines = {label: (np.arange(1, len(v) + 1), np.asarray(v)) for label, v in curves.items()}
    plot_lines(path, lines, title=title, xlabel="iteration", ylabel=ylabel, log=log, legend=legend)


def plot_lines(path, lines: dict[str, tuple], *, title: str, xlabel: str, ylabel: str, log: bool = True,
               legend: str | None = None) -> None:
    """One line per label from its (x, y), saved as PNG to ``path`` (a path or a binary file);
    log y-axis when every finite value is positive and they span a decade or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, (x, y) in lines.items():
        ax.plot(x, y, label=label, linewidth=1.4)
    finite = [np.asarray(y)[np.isfinite(y)] for _, y in lines.values()]
    values = np.concatenate(finite) if finite else np.asarray([])
    if log and all(v.size and np.all(v > 0) for v in finite) and values.max() > 10 * values.min():
        ax.set_yscale("log")  # only where the values span a decade or more
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title=legend)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
