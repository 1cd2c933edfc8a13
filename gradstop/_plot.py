"""Plotting shared by every figure gradstop draws: one colour per flow, lines saved as PNG (matplotlib, Agg)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from gradstop._io import atomic_write

__all__ = ["FLOW_COLORS", "flow_color", "plot_curves", "plot_lines", "save_figure"]

# One colour per flow base, the same in every figure gradstop draws (matplotlib's tab10).
FLOW_COLORS = {"none": "tab:blue", "input": "tab:orange", "state": "tab:green", "all": "tab:red",
               "combined": "tab:purple", "directional": "tab:brown", "decay": "tab:pink", "truncate": "tab:olive",
               "zero": "tab:cyan", "alpha": "black", "alpha:auto": "tab:gray"}


def flow_color(name: str) -> str:
    """The colour of a flow in every figure: by its base (``input+truncate:32`` is input's), a modifier-only
    flow (``decay:0.9``, ``truncate:16``) by its modifier, a zeroth-/α-order flow by its kind (``zero``, a fixed
    ``alpha:α``, ``alpha:auto``); anything else tab:gray."""
    from gradstop.flows import parse_flow

    try:
        flow = parse_flow(name)
    except ValueError:
        return "tab:gray"
    if flow.mixing is not None:
        kind = "alpha:auto" if flow.mixing.auto else "zero" if flow.mixing.alpha == 0.0 else "alpha"
        return FLOW_COLORS[kind]
    if flow.base == "none" and flow.decay != 1.0:
        return FLOW_COLORS["decay"]
    if flow.base == "none" and flow.truncate is not None:
        return FLOW_COLORS["truncate"]
    return FLOW_COLORS[flow.base]


def save_figure(fig, path) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def plot_curves(path: Path, curves: dict[str, np.ndarray], *, title: str, ylabel: str = "loss", log: bool = True,
                legend: str = "flow") -> None:
    """One line per named curve against the iteration, saved as PNG."""
    lines = {label: (np.arange(1, len(v) + 1), np.asarray(v)) for label, v in curves.items()}
    plot_lines(path, lines, title=title, xlabel="iteration", ylabel=ylabel, log=log, legend=legend)


def plot_lines(path, lines: dict[str, tuple], *, title: str, xlabel: str, ylabel: str, log: bool = True,
               legend: str | None = None) -> None:
    """One line per label from its (x, y), saved as PNG to ``path`` (a path or a binary file);
    log y-axis when every finite value is positive and they span a decade or more. With ``legend="flow"`` the labels
    are flows and take their colours (:func:`flow_color`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, (x, y) in lines.items():  # a legend of flows takes each flow's colour, as in every gradstop figure
        ax.plot(x, y, label=label, linewidth=1.4, **({"color": flow_color(label)} if legend == "flow" else {}))
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
