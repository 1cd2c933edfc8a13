"""The study's experiment scripts: one file per figure, each ``python -m experiments.<module> [--quick] [--out DIR]``.

``FIGURES`` lists the gallery (docs/results.md) in the order ``gradstop figures`` makes it. Each
script has ``parse(argv)`` (its settings, ``--quick`` applied) and ``main(argv)``, and writes PNG +
CSV + ``settings.json`` (``gradstop.figures``). The other scripts here are measurements for the
docs (benchmark ratios, trainer speed), not figures of the gallery.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Figure:
    module: str
    """the script, experiments/<module>.py"""
    title: str
    """what the figure shows"""
    cost: str
    """its full run's wall-clock on a 2-core CPU, as measured"""
    sweep: bool = False
    """backed by a sweep of training runs (resumable; takes --ray)"""
    python: Callable[[], Path] | None = None
    """the interpreter it needs, if not this one"""
    inputs: Callable[[Path], list[str]] | None = None
    """arguments that feed it another figure's results, given the gallery's folder (full mode only)"""


def best_flows_of_training_curves(root: Path) -> list[str]:
    """model-free trains BPTT and SHAC with the flow each did best with in the training-curves figure, once it exists."""
    table = root / "training-curves" / "table.csv"
    return ["--flows-from", str(table)] if table.exists() else []


def peer_python() -> Path:
    """The venv with jax 0.9.2 that Brax's own training agents need, built on first use by the Makefile's own recipe
    (``make peer-venv``: ``.venv-peer`` beside the main venv, the ``peer`` extra, torch pinned by constraints.txt)."""
    repo = Path(__file__).resolve().parents[1]
    python = repo / ".venv-peer" / "bin" / "python"
    if python.exists() and (repo / ".venv-peer" / ".installed-stamp").exists():
        return python
    make = shutil.which("make")
    if make is None:
        raise RuntimeError("the model-free and locomotion figures need .venv-peer (jax 0.9.2 for Brax's agents), which `make peer-venv` "
                           "builds, and this machine has no make: install make, or build the venv as the Makefile does")
    print(f"building {python.parents[1]} for Brax's agents (jax 0.9.2; once, about two minutes) ...", flush=True)
    done = subprocess.run([make, "-C", str(repo), "peer-venv"])
    if done.returncode != 0:
        raise RuntimeError(f"`make peer-venv` exited {done.returncode}: check that PyPI is reachable, then run it "
                           "again to see the whole error")
    return python


def require_peer_jax(script: str, otherwise: str = "") -> None:
    """Raise ImportError, naming the fix, where this jax lacks what Brax 0.14.2's training agents call
    (``jax.device_put_replicated``, removed after 0.9.2); ``otherwise``: another way out, for the message."""
    import jax

    if not hasattr(jax, "device_put_replicated"):
        raise ImportError(f"Brax's training agents need jax.device_put_replicated, which jax {jax.__version__} removed: "
                          f"run this script with jax 0.9.2, in the venv `make peer-venv` builds (.venv-peer/bin/python -m "
                          f"experiments.{script}){otherwise}")


FIGURES = {
    "runtime-memory": Figure("runtime_memory", "time and peak memory of one gradient against the horizon, native vs "
                             "fused, JAX vs PyTorch", "≈ 5.5 min (the benchmark suite, 144 cases)"),
    "gradient-norms": Figure("gradient_norms", "gradient norm and cos(∇input, ∇none) against the horizon, per sim and flow",
                             "≈ 1 min"),
    "precision-drift": Figure("precision_drift", "float32 against float64 gradients over the horizon", "≈ 35 s"),
    "training-curves": Figure("training_curves", "BPTT and SHAC training curves per flow on pointmass, cartpole and "
                              "Brax reacher", "≈ 2 h on 2 Ray workers (600 runs; 1 h 20 min for the 354 added to 240 earlier ones)", sweep=True),
    "shac-cartpole": Figure("shac_cartpole", "SHAC's published cartpole config on DiffRL's cartpole, against gradstop's "
                            "earlier SHAC variant", "≈ 36 min on 2 Ray workers (30 runs of 500 windows)", sweep=True),
    "cartpole-study": Figure("cartpole_study", "final test loss per flow on the 1–4-pole cartpole, the published setting",
                             "≈ 17 h on 2 Ray workers at 65 s a run (1856 runs: 10 seeds, variants, tuning)", sweep=True),
    "alpha-order": Figure("alpha_order", "first-order flows against zeroth- and α-order gradients on contact tasks, "
                          "the swing-up and Brax hopper", "12 min on 2 Ray workers for the 180 runs of the first three "
                          "tasks; the hopper's 60 about 50 min (--population 6)", sweep=True),
    "bias-variance": Figure("bias_variance", "the first-order gradient's disagreement with the zeroth-order one, and both "
                            "variances, against the horizon on the contact tasks, the swing-up and Brax hopper",
                            "26 min (beside a sweep)"),
    "model-free": Figure("model_free", "Brax PPO and SAC against gradstop BPTT and SHAC on reacher, by wall-clock",
                         "11.5 min (4 methods × 3 seeds; builds .venv-peer on first use)", python=peer_python,
                         inputs=best_flows_of_training_curves),
    "locomotion": Figure("locomotion", "SHAC and BPTT against Brax PPO on hopper at equal wall-clock budgets",
                         "48 min (3 methods × 3 seeds of 400 s, two at a time; builds .venv-peer on first use)",
                         python=peer_python),
}
