"""The demo (`make demo`): on a 2-pole cartpole swing-up, the gradient flow decides how far BPTT gets.

    python -m experiments.demo [--poles 2] [--seeds 3] [--epochs 40] [--out results/demo] [--quick]

Trains three flows — full BPTT (``none``), the gradient stopped at the policy input (``input``) and their
sign-checked combination (``combined``; Schnell & Thuerey, ICLR 2024) — from the same initial weights and data,
three seeds each, in the multi-pole study's published setting (``experiments.cartpole_study``) on a smaller
training set (64 initial states, so it runs in about a minute). Then it writes, in ``OUT``:

- ``demo.png``: the test loss over training, the median over seeds with the seeds' range as a band;
- ``filmstrip.png``: for each flow, the untrained and the trained policy of seed 0 from the same test state;
- ``swingup.gif``: the trained policies side by side, one panel per flow (``gradstop play`` draws any run);
- ``final.csv`` (a row per run) and ``settings.json``;

and prints one sentence saying which flow got furthest. Run it again to resume: finished runs are skipped.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import tyro

from gradstop.study.figures import SweepOptions, run_script, sweep_runs, write_settings, write_tables
from gradstop.study.results import flow_color, save_figure
from gradstop.study.sweep import Run
from gradstop.trainers.config import TrainConfig

SCRIPT = "demo"


@dataclasses.dataclass
class Args(SweepOptions):
    poles: int = 2
    """poles on the cart"""
    flows: tuple[str, ...] = ("none", "input", "combined")
    """gradient flows to compare"""
    seeds: int = 3
    """seeds per flow (initial weights, training and test states)"""
    epochs: int = 40
    """epochs of train_size // batch updates"""
    train_size: int = 64
    """training initial states, drawn once per seed"""
    test_size: int = 128
    """test initial states, drawn once per seed"""
    eval_every: int = 2
    """evaluate the test loss every this many epochs"""
    frames: int = 6
    """frames per policy in the filmstrip"""
    quick: bool = False
    """a smoke run (tests): 1 pole, 2 seeds, 2 epochs on 16 states"""
    out: str = "results/demo"
    """the demo's folder (resumed if it holds this demo)"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args = dataclasses.replace(args, poles=1, seeds=2, epochs=2, train_size=16, test_size=16, eval_every=1, frames=3)
    if args.seeds < 1 or args.epochs < 1 or args.poles < 1:
        raise ValueError(f"--seeds, --epochs and --poles must be ≥ 1, got {args.seeds}, {args.epochs}, {args.poles}")
    return args


# -- the runs: the study's published setting, smaller training set ------------------------------------
def runs(args: Args) -> list[Run]:
    out = []
    for flow in args.flows:
        for seed in range(args.seeds):
            config = TrainConfig(sim="cartpole", preset="literature", sim_params={"poles": args.poles}, horizon=100,
                                 flow=flow, impl="fused", data="fixed", train_size=args.train_size,
                                 test_size=args.test_size, batch=8, shuffle=False, epochs=args.epochs,
                                 eval_every=args.eval_every, hidden=(100, 100), activation="tanh", zero_last=True,
                                 weight_init="glorot", optimizer="adam", lr=1e-3, adam_eps=1e-7, seed=seed,
                                 checkpoint_every=10)
            out.append(Run(f"flow={flow.replace(':', '_')},seed={seed}", config))
    return out


# -- the figures ----------------------------------------------------------------------------------------
def plot_loss(path: Path, args: Args, all_runs: list[Run], records: dict) -> dict:
    """Median test loss over seeds per flow, the seeds' range as a band; returns {flow: final losses}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    finals = {}
    for flow in args.flows:
        curves = [records[r.name]["evals"] for r in all_runs if r.config.flow == flow and r.name in records]
        if not curves:
            continue
        x = np.asarray([e["update"] for e in curves[0]])
        y = np.asarray([[e["test_loss"] for e in c][: len(x)] for c in curves], dtype=float)
        finals[flow] = y[:, -1]
        color = flow_color(flow)
        ax.plot(x, np.median(y, axis=0), color=color, label=f"{flow}", linewidth=1.6)
        if len(y) > 1:
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=color, alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("update (batches of 8 initial states)")
    ax.set_ylabel(f"test loss 1 − mean cos θ ({args.test_size} states)")
    ax.set_title(f"BPTT on the {args.poles}-pole cartpole swing-up, published setting\n"
                 f"median of {args.seeds} seeds, band: min–max over seeds", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="gradient flow")
    fig.tight_layout()
    save_figure(fig, path)
    return finals


def sentence(finals: dict, args: Args) -> str:
    """What the loss figure shows, in one sentence computed from the final test losses."""
    medians = {f: float(np.median(v)) for f, v in finals.items()}
    order = sorted(medians, key=medians.get)
    best, rest = order[0], order[1:]
    wins = {f: int(np.sum(finals[best] < finals[f])) for f in rest}
    parts = ", ".join(f"{f} {medians[f]:.3g} (lower on {wins[f]} of {len(finals[f])} seeds)" for f in rest)
    return (f"After {args.epochs} epochs on the {args.poles}-pole swing-up, {best} reaches the lowest median test loss, "
            f"{medians[best]:.3g}, against {parts}: same weights, data and optimizer, only the gradient flow differs.")


def render(out: Path, all_runs: list[Run], args: Args) -> list[str]:
    """The filmstrip (untrained and trained policy of seed 0 per flow) and the GIF of the trained ones, all from the
    same test state."""
    import importlib

    from gradstop.trainers.load import initial_states, load_run, trajectories
    from sims import draw

    loaded = [load_run(out / "runs" / r.name) for r in all_runs if r.config.seed == 0]
    config, sim, _ = loaded[0]
    x0 = initial_states(sim, seed=10_000, episodes=1)  # a state no run trained on
    rows, titles, trained = [], [], []
    for config, sim, policy in loaded:
        untrained = importlib.import_module(f"gradstop.trainers.{config.backend}.bptt").make_policy(config, sim)
        for label, p in (("untrained", untrained), ("trained", policy)):
            states = trajectories(p, sim, steps=config.horizon, x0=x0)[:, 0]
            rows.append(states)
            titles.append(f"{config.flow}, {label}")
        trained.append(rows[-1])
    for name in ("filmstrip.png", "swingup.gif"):
        (out / name).unlink(missing_ok=True)  # redrawn from the runs every time
    draw.filmstrip(sim, rows, out / "filmstrip.png", titles=titles, count=args.frames)
    draw.animate(sim, trained, out / "swingup.gif", titles=[c.flow for c, _, _ in loaded], fps=25.0)
    return ["filmstrip.png", "swingup.gif"]


# -- main -----------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    all_runs = runs(args)
    out, records, _ = sweep_runs(args, SCRIPT, all_runs, f"demo: {len(args.flows)} flows × {args.seeds} seeds")
    final = [dict(flow=r.config.flow, seed=r.config.seed, status=records.get(r.name, {}).get("status", "pending"),
                  final_test_loss=(records.get(r.name, {}).get("summary") or {}).get("final_test_loss"))
             for r in all_runs]
    write_tables(out, {"final.csv": final})
    complete = all(row["status"] == "done" for row in final)
    files = ["final.csv"]
    if complete:
        finals = plot_loss(out / "demo.png", args, all_runs, records)
        files += ["demo.png"] + render(out, all_runs, args)
        print(sentence(finals, args))
    write_settings(out, SCRIPT, args, seconds=time.perf_counter() - started, complete=complete, files=files)
    print(f"demo written to {out}: {', '.join(files)}")


if __name__ == "__main__":
    run_script(main)
