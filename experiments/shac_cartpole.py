"""SHAC's published cartpole swing-up config on the task it was published on (``diffrl_cartpole``), against
gradstop's earlier SHAC variant on the same task, seeds and budget.

    python -m experiments.shac_cartpole [--quick] [--seeds 10] [--arms published earlier]
                                        [--out DIR] [--ray local|auto|HOST:PORT] [--plot-only]

Arms (PyTorch, float32, each seed the same initial weights, initial states and test set in both arms):

    published   ``gradstop train --algo shac --sim diffrl_cartpole --horizon 240 --epochs 50 --updates-per-epoch 10``:
                SHAC's published defaults (``ALGO_DEFAULTS["shac"]``: the Gaussian actor with log-std −1, LayerNorm
                in actor and critic, the orthogonal critic, observation normalisation, per-step dones, episodes
                that end inside a window (240 is not a multiple of 32), the time-limit bootstrap, the guards, tanh on
                the actor's sample) and the yaml's settings (docs/simulators.md lists each with its source). 500
                windows of 32 steps × 64 environments: the published 500 epochs.
    published-w30  the same with ``--window 30``, so that every episode ends at a window's end, as the earlier
                variant needs: the pair (published-w30, earlier) changes only the variant, the pair (published,
                published-w30) only the window.
    earlier     ``published-w30`` with every one of those switches at gradstop's earlier variant
                (``SHAC_EARLIER``): a deterministic, unbounded actor, no LayerNorm, a uniform-initialised critic
                with its own Adam, no observation normalisation, the time limit as terminal, dones at window
                ends, no guards. The simulator's clip to [−1, 1] still bounds the force.

Every 10 windows (an epoch) the trainer evaluates the actor's mean on 64 fixed test initial states drawn
as published (``init="published"``) over one 240-step episode: ``test_reward`` is the episode's summed
reward (the published code's return), ``test_success`` the fraction of test states ending within 12° of
upright (gradstop's measure; the paper reports rewards only).

Writes ``curves.csv`` (every evaluation of every run), ``final.csv`` (a row per run), ``table.csv`` (per arm
the IQM and median of the final episode reward and success with 95% stratified-bootstrap intervals over
seeds, ``gradstop.study.stats``), ``pairs.csv`` (``published-w30`` against ``earlier``, ``published`` against
``published-w30``, each on the same seeds: the geometric-mean ratio of final episode costs, −reward, with its
interval and verdict) and
``shac-cartpole.png`` (IQM and its 95% interval band against environment steps and against wall-clock).
Runs are a resumable sweep in ``OUT/runs``. ``--quick`` (2 seeds, 2 windows, 8 environments) runs in
about a minute.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tyro

from gradstop.study import stats
from gradstop.study.figures import SweepOptions, adopt_runs, finish_sweep_figure, run_script, sweep_runs, write_tables
from gradstop.study.results import aligned_by_seed, save_figure
from gradstop.study.sweep import Run
from gradstop.trainers.config import SHAC_EARLIER, TrainConfig

SCRIPT = "shac_cartpole"
EPISODE = 240  # the published episode_length
ARMS = {"published": dict(window=32), "published-w30": dict(window=30), "earlier": dict(window=30, **SHAC_EARLIER)}
COLORS = {"published": "#1f77b4", "published-w30": "#17becf", "earlier": "#d62728"}
# (arm, base): each pair compares on the same seeds; the first holds the window, the second changes only it
PAIRS = (("published-w30", "earlier"), ("published", "published-w30"))


@dataclasses.dataclass
class Args(SweepOptions):
    arms: tuple[str, ...] = tuple(ARMS)
    """SHAC variants (see the module docstring)"""
    seeds: int = 10
    """seeds per arm: initial weights, initial states, exploration noise and test set"""
    epochs: int = 50
    """evaluations per run"""
    updates_per_epoch: int = 10
    """actor windows between evaluations (50 × 10: the published 500 epochs of one window each)"""
    batch: int = 64
    """environments (the published num_actors)"""
    test_size: int = 64
    """test initial states, drawn once per seed as published"""
    quick: bool = False
    """a smoke run: 2 seeds, 2 epochs of 1 window, 8 environments, 8 test states (tests)"""
    out: str = "results/shac-cartpole"
    """the figure's folder (resumed if it holds this figure's runs)"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args = dataclasses.replace(args, seeds=2, epochs=2, updates_per_epoch=1, batch=8, test_size=8)
    bad = [a for a in args.arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arms {bad}; choose from {list(ARMS)}")
    if min(args.seeds, args.epochs, args.updates_per_epoch, args.batch, args.test_size) < 1:
        raise ValueError("--seeds, --epochs, --updates-per-epoch, --batch and --test-size must be ≥ 1")
    return args


def config(args: Args, arm: str, seed: int) -> TrainConfig:
    return TrainConfig(algo="shac", sim="diffrl_cartpole", backend="torch", horizon=EPISODE,
                       flow="none", epochs=args.epochs, updates_per_epoch=args.updates_per_epoch, batch=args.batch,
                       test_size=args.test_size, seed=seed, checkpoint_every=5, **ARMS[arm])


def runs(args: Args) -> list[Run]:
    # seed-major: a sweep stopped part-way has both arms at the same number of seeds
    return [Run(f"arm={arm},seed={seed}", config(args, arm, seed)) for seed in range(args.seeds) for arm in args.arms]


def _describe(run: Run) -> dict:
    return dict(kv.split("=", 1) for kv in run.name.split(","))


def tables(args, all_runs, records):
    curves, final = [], []
    for r in all_runs:
        d, rec = _describe(r), records.get(r.name)
        steps = r.config.batch * r.config.window
        evals = (rec or {}).get("evals", [])
        last = evals[-1] if evals else {}
        final.append(dict(arm=d["arm"], seed=int(d["seed"]), status=rec["status"] if rec else "pending",
                          final_test_reward=last.get("test_reward"), final_test_success=last.get("test_success"),
                          train_seconds=((rec or {}).get("summary") or {}).get("seconds"),
                          env_steps=steps * r.config.epochs * r.config.updates_per_epoch))
        for e in evals:
            curves.append(dict(arm=d["arm"], seed=int(d["seed"]), update=e["update"], env_steps=e["update"] * steps,
                               seconds=e["seconds"], test_reward=e["test_reward"], test_success=e["test_success"]))
    table = []
    for arm in args.arms:
        cell = [f for f in final if f["arm"] == arm and f["status"] == "done" and f["final_test_reward"] is not None]
        row = dict(arm=arm, runs=args.seeds, done=len(cell))
        for what in ("reward", "success"):
            values = [f[f"final_test_{what}"] for f in cell]
            keys = [f"{what}_{m}{s}" for m in ("iqm", "median") for s in ("", "_low", "_high")]
            if len(values) >= 2:
                s = stats.summarize(values, cell=f"{arm} final {what}")
                row.update(zip(keys, (s["iqm"].value, s["iqm"].low, s["iqm"].high,
                                      s["median"].value, s["median"].low, s["median"].high)))
            else:
                row.update(dict.fromkeys(keys))
        seconds = [f["train_seconds"] for f in cell if f["train_seconds"] is not None]
        row["median_train_seconds"] = float(np.median(seconds)) if seconds else None
        table.append(row)
    return curves, final, table, pairs(args, final)


def pairs(args, final) -> list[dict]:
    """Each pair of ``PAIRS`` whose arms both ran, on the seeds both finished: the geometric-mean ratio of final
    episode costs (−reward, positive on this task), its interval and its verdict."""
    cost = {(f["arm"], f["seed"]): -f["final_test_reward"] for f in final
            if f["status"] == "done" and f["final_test_reward"] is not None}
    rows = []
    for arm, base in PAIRS:
        if arm not in args.arms or base not in args.arms:
            continue
        seeds = sorted(s for (a, s) in cost if a == arm and (base, s) in cost)
        row = dict(arm=arm, base=base, seeds=len(seeds), cost_ratio=None, low=None, high=None, verdict=None)
        if len(seeds) >= 2:
            e = stats.paired_log_ratio({s: cost[(arm, s)] for s in seeds}, {s: cost[(base, s)] for s in seeds},
                                       cell=f"{arm} vs {base}")
            row.update(cost_ratio=float(np.exp(e.value)), low=float(np.exp(e.low)), high=float(np.exp(e.high)),
                       verdict=stats.verdict(e, below=f"{arm} ends with the lower cost",
                                             above=f"{arm} ends with the higher cost"))
        rows.append(row)
    return rows


def bands(curves, arm: str):
    """Per evaluation every seed of the arm has reached: {x: its median over seeds} for x in env_steps and seconds,
    and the IQM of the episode reward with its interval, and the number of seeds; None for fewer than 2 seeds."""
    rows = aligned_by_seed(c for c in curves if c["arm"] == arm)
    if len(rows) < 2:
        return None
    xs = {key: np.median([[c[key] for c in r] for r in rows], 0) for key in ("env_steps", "seconds")}
    return xs, *stats.iqm_curve([[c["test_reward"] for c in r] for r in rows], cell=arm), len(rows)


def plot(path, curves, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2), dpi=120)
    computed = {arm: bands(curves, arm) for arm in args.arms}  # once per arm, for both axes
    for ax, key in zip(axes, ("env_steps", "seconds")):
        for arm in args.arms:
            b = computed[arm]
            if b is None:
                continue
            xs, mid, low, high, n = b
            xs = xs[key]
            ax.plot(xs, mid, color=COLORS[arm], label=f"{arm} ({n} seeds)", linewidth=1.3)
            ax.fill_between(xs, low, high, color=COLORS[arm], alpha=0.18)
        ax.set_xlabel("environment steps" if key == "env_steps" else "training wall-clock (s)")
        ax.set_ylabel("test episode reward")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="SHAC (IQM, 95% interval)", title_fontsize=7)
    fig.suptitle("SHAC on DiffRL's cartpole swing-up (diffrl_cartpole): published config (window 32 and 30), earlier variant",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


FILES = ["curves.csv", "final.csv", "table.csv", "pairs.csv", "shac-cartpole.png"]


def main(argv=None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    all_runs = runs(args)
    adopted = adopt_runs(args.out, all_runs)
    if adopted:
        print(f"reusing {len(adopted)} finished runs under the names used now (e.g. {next(iter(adopted))} -> "
              f"{next(iter(adopted.values()))}; the list: renamed.json)", flush=True)
    out, records, report = sweep_runs(args, SCRIPT, all_runs, "shac-cartpole")
    curves, final, table, paired = tables(args, all_runs, records)
    write_tables(out, {"curves.csv": curves, "final.csv": final, "table.csv": table, "pairs.csv": paired})
    plot(out / "shac-cartpole.png", curves, args)
    finish_sweep_figure(out, SCRIPT, args, started=started, runs=all_runs, records=records, report=report, files=FILES,
                        arms={a: ARMS[a] for a in args.arms})


if __name__ == "__main__":
    run_script(main)
