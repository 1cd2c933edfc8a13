"""First-order flows against the zeroth- and α-order estimates (Suh et al., ICML 2022): contact tasks, swing-up, hopper.

    python -m experiments.alpha_order [--quick] [--tasks bounce-hard bounce-soft swingup hopper] [--seeds 10]
                                      [--out DIR] [--ray local|auto|HOST:PORT] [--plot-only]

Every flow — ``none``, the stopping flows ``input`` and ``decay:0.9``, ``zero``, ``alpha:0.5`` and
``alpha:auto`` (the last three with N = 4 noisy rollouts per initial state, σ = 0.1, and alpha:auto's
defaults γ = 1, L = 10, δ = 0.05: the same for every task, set beforehand, not tuned) — trains with
BPTT from the same initial weights, data and noise stream for each seed (JAX, float32, MLP 64×64 tanh,
Adam lr 1e-3, 16 fresh initial states per update, ``--updates`` updates). Tasks:

    bounce-hard   the ball that must bounce off a wall and the floor (sims.contact, hard impacts), H = 40
    bounce-soft   the same with the soft, stiff contact (k = 2000), H = 40
    swingup       the 1-pole cartpole swing-up (gradstop's default cartpole), H = 100
    hopper        Brax's hopper on the spring pipeline from its reset states, H = 32 (Brax APG's
                  horizon_length), the costs counted up to each episode's first done (``until_done``):
                  its loss is minus the reward, of either sign, so it is compared by paired differences
                  on a linear scale where the other tasks, whose losses are positive, take ratios and
                  a log scale

A zeroth-/α-order update simulates more: the noise-free rollout and N noisy ones per initial state for
each estimator it needs (``zero``: 1 + N rollouts per state, ``alpha:…``: 1 + 2N, a first-order flow: 1).
``table.csv`` gives, per task and flow, the IQM of the final test loss with its 95% stratified-bootstrap
interval (``gradstop.study.stats``), and the test loss at equal environment steps (the budget of a
first-order run) and at equal wall-clock (the median wall-clock of ``none``'s runs), each the last
evaluation within that budget, and the mean α that ``alpha:auto`` chose; ``pairs.csv`` each flow
against ``none`` on the same seeds (the geometric-mean ratio of final test losses, or for the hopper
the mean difference, its interval and verdict). ``curves.csv`` holds every evaluation (update, environment steps, wall-clock, test loss).
``alpha-order.png``: the median test loss over seeds and its quartile band, against environment steps
and against wall-clock. Runs are a resumable sweep in
``OUT/runs``. ``--quick`` (bounce-hard, three flows, 2 seeds, 4 updates) runs in about a minute.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tyro

from gradstop.flows import parse_flow
from gradstop.study import stats
from gradstop.study.figures import SweepOptions, finish_sweep_figure, run_script, sweep_runs, write_tables
from gradstop.study.results import aligned_by_seed, flow_color, save_figure
from gradstop.study.sweep import Run
from gradstop.trainers.config import TrainConfig

SCRIPT = "alpha_order"


@dataclasses.dataclass(frozen=True)
class Task:
    sim: str
    sim_params: dict
    horizon: int
    until_done: bool = False
    """a terminating task: each rollout's costs stop at its episode's first done"""
    positive: bool = True
    """losses > 0: runs are compared by ratio, on a log scale; False: by difference, on a linear one"""


TASKS = {
    "bounce-hard": Task("bounce", {"contact": "hard"}, 40),
    "bounce-soft": Task("bounce", {"contact": "soft"}, 40),
    "swingup": Task("cartpole", {"poles": 1}, 100),
    "hopper": Task("brax:hopper", {"pipeline": "spring"}, 32, until_done=True, positive=False),
}
FLOWS = ("none", "input", "decay:0.9", "zero+samples:4", "alpha:0.5+samples:4", "alpha:auto+samples:4")
UPDATES_PER_EPOCH = 8


@dataclasses.dataclass
class Args(SweepOptions):
    tasks: tuple[str, ...] = tuple(TASKS)
    """tasks (see the module docstring)"""
    flows: tuple[str, ...] = FLOWS
    """gradient flows"""
    seeds: int = 10
    """seeds per (task, flow): initial weights, data and the noise stream"""
    updates: int = 400
    """updates per run"""
    batch: int = 16
    """initial states per update"""
    test_size: int = 64
    """test initial states, drawn once per seed"""
    quick: bool = False
    """a smoke run: bounce-hard (or the --tasks given), flows none, zero and alpha:auto, 2 seeds, 4 updates, batch 4"""
    out: str = "results/alpha-order"
    """the figure's folder (resumed if it holds this figure's runs)"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        tasks = ("bounce-hard",) if args.tasks == tuple(TASKS) else args.tasks  # --tasks given: those
        args = dataclasses.replace(args, tasks=tasks, flows=("none", "zero+samples:2", "alpha:auto+samples:2"),
                                   seeds=2, updates=4, batch=4, test_size=8)
    bad = [t for t in args.tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown tasks {bad}; choose from {list(TASKS)}")
    for flow in args.flows:
        parse_flow(flow)  # a bad flow fails here, before any run
    if args.seeds < 1 or args.updates < 1 or args.batch < 1:
        raise ValueError(f"--seeds, --updates and --batch must be ≥ 1, got {args.seeds}, {args.updates}, {args.batch}")
    return args


def config(args: Args, task: str, flow: str, seed: int) -> TrainConfig:
    t = TASKS[task]
    per_epoch = min(UPDATES_PER_EPOCH, args.updates)
    return TrainConfig(sim=t.sim, sim_params=t.sim_params, horizon=t.horizon if not args.quick else 10, flow=flow,
                       data="fresh", batch=args.batch, updates_per_epoch=per_epoch, epochs=max(1, args.updates // per_epoch),
                       test_size=args.test_size, hidden=(64, 64), lr=1e-3, seed=seed, checkpoint_every=5,
                       until_done=t.until_done)


def runs(args: Args) -> list[Run]:
    # seed-major: a sweep stopped part-way has every cell at the same number of seeds
    return [Run(f"task={task},flow={flow.replace(':', '_').replace('+', '-')},seed={seed}", config(args, task, flow, seed))
            for seed in range(args.seeds) for task in args.tasks for flow in args.flows]


def rollouts_per_state(flow: str) -> int:
    """Rollouts one update simulates per initial state: 1 for a first-order flow; the noise-free one and N noisy
    ones per estimator for a zeroth-/α-order flow."""
    mix = parse_flow(flow).mixing
    if mix is None:
        return 1
    return 1 + mix.samples * (int(mix.needs_zeroth_order) + int(mix.needs_first_order))


def _describe(run: Run) -> dict:
    return dict(kv.split("=", 1) for kv in run.name.split(","))


def mean_alpha(out, run: Run, summary: dict) -> float | None:
    """The mean α over a finished run's updates: None for a first-order flow; a fixed α's own value; ``alpha:auto``'s
    from its summary.json (``mean_alpha``) or, for a run written before summaries kept it, its updates.csv where
    that is still on this machine (sweep folders in git leave per-update logs out), else None (unknown)."""
    from gradstop.trainers.files import MetricsLog
    from gradstop.trainers.run import update_columns

    mix = parse_flow(run.config.flow).mixing
    if mix is None:
        return None
    if not mix.auto:
        return float(mix.alpha)
    if summary.get("mean_alpha") is not None:
        return float(summary["mean_alpha"])
    path = out / "runs" / run.name / "updates.csv"
    alphas = [float(u["alpha"]) for u in MetricsLog(path, update_columns(run.config)).read()] if path.exists() else []
    return float(np.mean(alphas)) if alphas else None


def tables(args, out, all_runs, records):
    curves, final = [], []
    for r in all_runs:
        d, rec = _describe(r), records.get(r.name)
        steps = r.config.batch * r.config.horizon * rollouts_per_state(r.config.flow)
        s = (rec or {}).get("summary") or {}
        final.append(dict(task=d["task"], flow=r.config.flow, seed=int(d["seed"]), status=rec["status"] if rec else "pending",
                          final_test_loss=s.get("final_test_loss"), train_seconds=s.get("seconds"),
                          env_steps=steps * r.config.epochs * r.config.updates_per_epoch,
                          mean_alpha=mean_alpha(out, r, s) if rec else None))
        for e in (rec or {}).get("evals", []):
            curves.append(dict(task=d["task"], flow=r.config.flow, seed=int(d["seed"]), update=e["update"],
                               env_steps=e["update"] * steps, seconds=e["seconds"], test_loss=e["test_loss"]))
    table = []
    for task in args.tasks:
        done = [f for f in final if f["task"] == task and f["status"] == "done" and f["final_test_loss"] is not None]
        first = [f["env_steps"] for f in done if parse_flow(f["flow"]).mixing is None]
        steps_budget = min(first) if first else None
        clock = [f["train_seconds"] for f in done if f["flow"] == "none"]
        clock_budget = float(np.median(clock)) if clock else None
        for flow in args.flows:
            cell = [f for f in done if f["flow"] == flow]
            row = dict(task=task, flow=flow, runs=args.seeds, done=len(cell), rollouts_per_state=rollouts_per_state(flow))
            row.update(_summary([f["final_test_loss"] for f in cell], f"{task} {flow} final", "final"))
            for what, key, budget in (("at_equal_steps", "env_steps", steps_budget), ("at_equal_seconds", "seconds", clock_budget)):
                values = [_at_budget(curves, task, flow, f["seed"], key, budget) for f in cell] if budget else []
                row.update(_summary([v for v in values if v is not None], f"{task} {flow} {what}", what))
            row["steps_budget"], row["seconds_budget"] = steps_budget, clock_budget
            alphas = [f["mean_alpha"] for f in cell if f["mean_alpha"] is not None]
            row["mean_alpha"] = float(np.mean(alphas)) if alphas else None
            table.append(row)
    return curves, final, table, pairs(args, final)


def pairs(args, final) -> list[dict]:
    """Each flow against ``none`` on the same seeds, with its interval and verdict: the geometric-mean ratio of the
    final test losses (``gradstop.study.stats.paired_log_ratio``), or for a task whose losses can be ≤ 0 the mean
    difference (``paired_difference``)."""
    rows = []
    for task in args.tasks:
        loss = {(f["flow"], f["seed"]): f["final_test_loss"] for f in final
                if f["task"] == task and f["status"] == "done" and f["final_test_loss"] is not None}
        for flow in args.flows:
            if flow == "none":
                continue
            seeds = sorted(s for (fl, s) in loss if fl == flow and ("none", s) in loss)
            row = dict(task=task, flow=flow, seeds=len(seeds), ratio=None, ratio_low=None, ratio_high=None,
                       difference=None, difference_low=None, difference_high=None, verdict=None)
            if len(seeds) >= 2:
                mine, base = {s: loss[(flow, s)] for s in seeds}, {s: loss[("none", s)] for s in seeds}
                cell = f"{task} {flow} vs none"
                if TASKS[task].positive:
                    e = stats.paired_log_ratio(mine, base, cell=cell)
                    row.update(ratio=float(np.exp(e.value)), ratio_low=float(np.exp(e.low)), ratio_high=float(np.exp(e.high)))
                else:
                    e = stats.paired_difference(mine, base, cell=cell)
                    row.update(difference=e.value, difference_low=e.low, difference_high=e.high)
                row["verdict"] = stats.verdict(e)
            rows.append(row)
    return rows


def _summary(values, cell: str, prefix: str) -> dict:
    """IQM with its interval (``gradstop.study.stats``) where there are enough seeds, else empty cells."""
    keys = [f"{prefix}_iqm", f"{prefix}_iqm_low", f"{prefix}_iqm_high"]
    if len(values) < 2:
        return dict.fromkeys(keys)
    s = stats.summarize(values, cell=cell)["iqm"]
    return dict(zip(keys, (s.value, s.low, s.high)))


def _at_budget(curves, task, flow, seed, key, budget):
    """The test loss of the last evaluation of one run within ``budget`` (of ``key``: env_steps or seconds)."""
    within = [c for c in curves if (c["task"], c["flow"], c["seed"]) == (task, flow, seed) and c[key] <= budget]
    return max(within, key=lambda c: c["update"])["test_loss"] if within else None


def plot(path, curves, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(args.tasks), 2, figsize=(8.0, 2.9 * len(args.tasks)), dpi=120, squeeze=False)
    for i, task in enumerate(args.tasks):
        for j, key in enumerate(("env_steps", "seconds")):
            ax = axes[i, j]
            for flow in args.flows:
                rows = aligned_by_seed(c for c in curves if (c["task"], c["flow"]) == (task, flow))
                if not rows:
                    continue
                xs = np.median([[c[key] for c in r] for r in rows], 0)
                ys = np.asarray([[c["test_loss"] for c in r] for r in rows], float)
                q25, q50, q75 = np.nanpercentile(ys, [25, 50, 75], axis=0)
                ax.plot(xs, q50, color=flow_color(flow), label=flow, linewidth=1.2)
                ax.fill_between(xs, q25, q75, color=flow_color(flow), alpha=0.12)
            if TASKS[task].positive:
                ax.set_yscale("log")
            ax.set_title(task, fontsize=9)
            ax.set_xlabel("environment steps" if key == "env_steps" else "training wall-clock (s)")
            ax.set_ylabel("test loss" if TASKS[task].positive else "test loss (−reward)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6.5, title="flow (median and quartiles over seeds)", title_fontsize=6.5)
    counts = [len({c["seed"] for c in curves if (c["task"], c["flow"]) == cell})
              for cell in {(c["task"], c["flow"]) for c in curves}] or [0]
    seeds = f"{max(counts)}" if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
    fig.suptitle(f"first-, zeroth- and α-order gradients: {seeds} seeds a flow (see table.csv), BPTT, JAX; a population's "
                 "members share its wall-clock", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


FILES = ["curves.csv", "final.csv", "table.csv", "pairs.csv", "alpha-order.png"]


def main(argv=None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    all_runs = runs(args)
    out, records, report = sweep_runs(args, SCRIPT, all_runs, "alpha-order")
    curves, final, table, paired = tables(args, out, all_runs, records)
    write_tables(out, {"curves.csv": curves, "final.csv": final, "table.csv": table, "pairs.csv": paired})
    plot(out / "alpha-order.png", curves, args)
    finish_sweep_figure(out, SCRIPT, args, started=started, runs=all_runs, records=records, report=report, files=FILES,
                        tasks={t: dataclasses.asdict(TASKS[t]) for t in args.tasks})


if __name__ == "__main__":
    run_script(main)
