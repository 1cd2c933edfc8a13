"""Training curves per gradient flow, BPTT and SHAC, on pointmass, cartpole and a Brax task (JAX).

    python -m experiments.training_curves [--quick] [--tasks pointmass cartpole reacher] [--seeds 10]
                                          [--out DIR] [--ray local|auto|HOST:PORT] [--plot-only]

Every flow — none, input, state, all, combined, directional, decay:0.9, truncate:10 — trains with
each algorithm on each task from the same initial weights and data for each seed:

- **SHAC** (Xu et al., ICLR 2022) with its published cartpole defaults (``TrainConfig.for_algo("shac")``:
  64 environments, the actor's window h = 32, actor and critic MLPs 64×64 ELU with LayerNorm, the
  Gaussian actor (log-std −1, tanh on its sample), the orthogonal critic, observation normalisation,
  per-step dones, the time-limit bootstrap, actor Adam lr 1e-2 decaying linearly to 1e-3 of it, betas
  (0.7, 0.95), global-norm clipping 1, critic lr 1e-3, TD(λ = 0.95), γ 0.99); on reacher the actor's lr
  is 1e-3 (Brax APG's default, the setting docs/trainers.md's APG comparison trained with). The flow
  acts on the actor's window.
- **shac-earlier**: the same with gradstop's earlier SHAC variant (``SHAC_EARLIER``: a deterministic,
  unbounded actor, no LayerNorm, a uniform critic with its own Adam, raw observations, the time limit
  as terminal, dones at window ends), on the first ``--earlier-seeds`` seeds: what following the
  published details changed.
- **BPTT** over whole episodes with the same actor, optimizer, schedule, clipping and 64 initial
  states per update: SHAC's actor update without the critic and with the window grown to the
  episode, the baseline of the SHAC paper.

All evaluate the deterministic policy (a Gaussian's mean) on ``--test-size`` fixed test states over one episode
(``episode`` steps): the test loss is the episode's summed cost (Brax: minus its reward). All get
``updates`` updates (BPTT's each see episode/32 times SHAC's environment steps). Tasks:

    pointmass   3-D point mass to the origin (gradstop's default), episodes of 128 steps, 256 updates, lr 1e-2
    cartpole    1-pole swing-up with running cost (gradstop's default cartpole), 256 steps, 256 updates, lr 1e-2
    reacher     brax:reacher on the spring pipeline, episodes of 128 steps, 64 updates, lr 1e-3

Runs are a sweep (``gradstop.sweep``) in ``OUT/runs/<name>``: resumable, ``--ray`` spreads them.
Writes ``curves.csv`` (every evaluation of every run: updates, environment steps, wall-clock,
test loss), ``final.csv`` (a row per run), ``table.csv`` (final test loss per task, algorithm and
flow: the IQM and median over seeds with 95% stratified-bootstrap intervals, ``gradstop.study.stats``, and
the quartiles), ``pairs.csv`` (seed-paired geometric-mean ratios of final test losses with their intervals:
SHAC against shac-earlier, and SHAC against BPTT, per task and flow), ``training-curves.png`` (the IQM over
seeds and its 95% interval band, against updates and against training wall-clock) and ``settings.json``.
``--quick`` (pointmass, flows none and combined, 2 seeds, 4 updates) runs in well under a minute.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tyro

from gradstop.study import stats
from gradstop.study.figures import (SweepOptions, adopt_runs, finish_sweep_figure, read_settings, run_script, sweep_runs,
                                    write_tables)
from gradstop.study.results import aligned_by_seed, flow_color, save_figure
from gradstop.study.sweep import Run
from gradstop.trainers.config import ALGO_DEFAULTS, SHAC_EARLIER, TrainConfig

SCRIPT = "training_curves"
# task -> (sim, sim_params, episode length, updates per run, actor learning rate)
TASKS = {
    "pointmass": ("pointmass", {}, 128, 256, 1e-2),
    "cartpole": ("cartpole", {"poles": 1}, 256, 256, 1e-2),
    "reacher": ("brax:reacher", {"pipeline": "spring"}, 128, 64, 1e-3),
}
ALGOS = ("bptt", "shac", "shac-earlier")
# an algorithm's token in run names: SHAC's runs of the earlier variant were named algo=shac, and are adopted
# (gradstop.study.figures.adopt_runs) as shac-earlier's
RUN_NAME = {"bptt": "bptt", "shac": "shac-published", "shac-earlier": "shac-earlier"}


@dataclasses.dataclass
class Args(SweepOptions):
    tasks: tuple[str, ...] = tuple(TASKS)
    """tasks (see the module docstring)"""
    algos: tuple[str, ...] = ALGOS
    """algorithms"""
    flows: tuple[str, ...] = ("none", "input", "state", "all", "combined", "directional", "decay:0.9", "truncate:10")
    """gradient flows"""
    seeds: int = 10
    """seeds per (task, algorithm, flow): initial weights, data and the critic's"""
    earlier_seeds: int = 5
    """seeds of shac-earlier: the first ones of --seeds (all of them if it has fewer)"""
    updates: int | None = None
    """updates per run (default: the task's, 256 or 64)"""
    envs: int = 64
    """parallel environments / initial states per update (SHAC's published 64)"""
    test_size: int = 64
    """test initial states, drawn once per seed"""
    impl: str = "fused"
    """rollout implementation (the same gradients either way)"""
    quick: bool = False
    """a smoke run: pointmass, flows none and combined, 2 seeds, 4 updates, 16 environments (tests)"""
    out: str = "results/training-curves"
    """the figure's folder (resumed if it holds this figure's runs)"""

def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args = dataclasses.replace(args, tasks=("pointmass",), algos=("bptt", "shac"), flows=("none", "combined"),
                                   seeds=2, updates=4, envs=16, test_size=8)
    for name, values, valid in (("tasks", args.tasks, TASKS), ("algos", args.algos, ALGOS)):
        bad = [v for v in values if v not in valid]
        if bad:
            raise ValueError(f"unknown {name} {bad}; choose from {list(valid)}")
    if args.seeds < 1 or args.earlier_seeds < 0:
        raise ValueError(f"--seeds must be ≥ 1 and --earlier-seeds ≥ 0, got {args.seeds} and {args.earlier_seeds}")
    return args


# -- the grid ---------------------------------------------------------------------------------------
SHAC = ALGO_DEFAULTS["shac"]
UPDATES_PER_EPOCH = 8  # SHAC's published epoch; the curves get a point per epoch


def config(args: Args, task: str, algo: str, flow: str, seed: int, spec: tuple | None = None) -> TrainConfig:
    """One run: ``task``'s entry of ``TASKS`` (or ``spec``, a tuple like one), the algorithm and its actor settings."""
    sim, params, episode, updates, lr = spec or TASKS[task]
    updates = args.updates or updates
    per_epoch = min(UPDATES_PER_EPOCH, updates)
    actor = dict(lr=lr, schedule=SHAC["schedule"], lr_final=SHAC["lr_final"], beta1=SHAC["beta1"], beta2=SHAC["beta2"],
                 clip_norm=SHAC["clip_norm"], hidden=SHAC["hidden"], activation=SHAC["activation"])
    common = dict(sim=sim, sim_params=params, flow=flow, impl=args.impl, data="fresh", batch=args.envs,
                  updates_per_epoch=per_epoch, epochs=max(1, updates // per_epoch), test_size=args.test_size, seed=seed,
                  horizon=episode, checkpoint_every=4, **actor)
    if algo == "shac":
        return TrainConfig.for_algo("shac", **common)
    if algo == "shac-earlier":
        return TrainConfig.for_algo("shac", **common, **SHAC_EARLIER)
    return TrainConfig.for_algo("bptt", **common)


def runs(args: Args) -> list[Run]:
    # seed-major: a sweep stopped part-way has every cell at the same number of seeds
    return [Run(f"task={task},algo={RUN_NAME[algo]},flow={flow.replace(':', '_')},seed={seed}",
                config(args, task, algo, flow, seed))
            for seed in range(args.seeds) for task in args.tasks for algo in args.algos for flow in args.flows
            if algo != "shac-earlier" or seed < args.earlier_seeds]


def describe(run: Run) -> dict:
    d = dict(kv.split("=", 1) for kv in run.name.split(","))
    d["algo"] = next(a for a, token in RUN_NAME.items() if token == d["algo"])
    return d


# -- the figure -------------------------------------------------------------------------------------
def tables(all_runs, records):
    curves, final = [], []
    for r in all_runs:
        d, rec = describe(r), records.get(r.name)
        steps_per_update = r.config.batch * (r.config.window if r.config.algo == "shac" else r.config.horizon)
        s = (rec or {}).get("summary") or {}
        final.append(dict(task=d["task"], algo=d["algo"], flow=r.config.flow, seed=int(d["seed"]),
                          status=rec["status"] if rec else "pending", final_test_loss=s.get("final_test_loss"),
                          best_test_loss_selected_on_test=s.get("best_test_loss"), final_test_reward=s.get("final_test_reward"),
                          train_seconds=s.get("seconds"), compile_seconds=s.get("compile_seconds")))
        for e in (rec or {}).get("evals", []):
            curves.append(dict(task=d["task"], algo=d["algo"], flow=r.config.flow, seed=int(d["seed"]), update=e["update"],
                               env_steps=e["update"] * steps_per_update, seconds=e["seconds"], test_loss=e["test_loss"],
                               test_reward=e["test_reward"]))
    table, groups = [], {}
    for row in final:
        groups.setdefault((row["task"], row["algo"], row["flow"]), []).append(row)
    for (task, algo, flow), rows in groups.items():
        v = np.asarray([r["final_test_loss"] for r in rows if r["status"] == "done" and r["final_test_loss"] is not None])
        q = np.percentile(v, [25, 50, 75]) if v.size else [None] * 3
        row = dict(task=task, algo=algo, flow=flow, runs=len(rows), done=int(v.size),
                   nonfinite=sum(r["status"] == "nonfinite" for r in rows))
        keys = ("iqm", "iqm_low", "iqm_high", "median", "median_low", "median_high")
        if v.size >= 2:
            e = stats.summarize(v, cell=f"{task} {algo} {flow} final")
            row.update(zip(keys, (e["iqm"].value, e["iqm"].low, e["iqm"].high,
                                  e["median"].value, e["median"].low, e["median"].high)))
        else:
            row.update(dict.fromkeys(keys))
            row["median"] = float(q[1]) if v.size else None
        row.update(q25=None if q[0] is None else float(q[0]), q75=None if q[2] is None else float(q[2]))
        table.append(row)
    return curves, final, table


PAIRS = (("shac", "shac-earlier"), ("shac", "bptt"))


def pairs(args, final) -> list[dict]:
    """Per task and flow, each pair of ``PAIRS`` on the seeds both finished: the geometric-mean ratio of final test
    losses (first / second), its 95% interval and its verdict (``gradstop.study.stats``)."""
    loss = {(f["task"], f["algo"], f["flow"], f["seed"]): f["final_test_loss"] for f in final
            if f["status"] == "done" and f["final_test_loss"] is not None}
    rows = []
    for task, flow in dict.fromkeys((f["task"], f["flow"]) for f in final):
        for a, b in (p for p in PAIRS if set(p) <= set(args.algos)):
            seeds = sorted(s for (t, al, fl, s) in loss if (t, al, fl) == (task, a, flow) and (task, b, flow, s) in loss)
            row = dict(task=task, flow=flow, algo=a, base=b, seeds=len(seeds), ratio=None, low=None, high=None, verdict=None)
            if len(seeds) >= 2:
                e = stats.paired_log_ratio({s: loss[(task, a, flow, s)] for s in seeds},
                                           {s: loss[(task, b, flow, s)] for s in seeds}, cell=f"{task} {flow} {a} vs {b}")
                row.update(ratio=float(np.exp(e.value)), low=float(np.exp(e.low)), high=float(np.exp(e.high)),
                           verdict=stats.verdict(e))
            rows.append(row)
    return rows


def _band(curves, task, algo, flow):
    """({x: its median over seeds} for x in update and seconds, IQM, its 95% interval) over seeds at the evaluations
    every seed reached; with one seed or a non-finite value, the median and the min–max band; None for no runs."""
    rows = aligned_by_seed(c for c in curves if (c["task"], c["algo"], c["flow"]) == (task, algo, flow))
    if not rows:
        return None
    ys = np.asarray([[c["test_loss"] for c in r] for r in rows], float)
    xs = {x: np.median(np.asarray([[c[x] for c in r] for r in rows], float), 0) for x in ("update", "seconds")}
    if len(ys) < 2 or not np.isfinite(ys).all():
        return xs, np.nanmedian(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
    return xs, *stats.iqm_curve(ys, cell=f"{task} {algo} {flow}")


def plot(path, curves, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in args.tasks if any(c["task"] == t for c in curves)] or list(args.tasks)
    cols = [(algo, x) for algo in args.algos for x in ("update", "seconds")]
    fig, axes = plt.subplots(len(tasks), len(cols), figsize=(3.5 * len(cols), 2.9 * len(tasks)), dpi=120, squeeze=False)
    bands = {(t, a, f): _band(curves, t, a, f) for t in tasks for a in args.algos for f in args.flows}  # once per cell
    for i, task in enumerate(tasks):
        for j, (algo, x) in enumerate(cols):
            ax = axes[i, j]
            values = []
            for flow in args.flows:
                band = bands[(task, algo, flow)]
                if band is None:
                    continue
                xs, med, lo, hi = band
                xs = xs[x]
                ax.plot(xs, med, color=flow_color(flow), label=flow, linewidth=1.2)
                ax.fill_between(xs, lo, hi, color=flow_color(flow), alpha=0.12)
                values.append(med[np.isfinite(med)])
            v = np.concatenate(values) if values else np.asarray([])
            if v.size and np.all(v > 0) and v.max() > 10 * v.min():
                ax.set_yscale("log")
            ax.set_title(f"{task}: {algo.upper()}", fontsize=9)
            ax.set_xlabel("update" if x == "update" else "training wall-clock (s, compile excluded)")
            if j == 0:
                ax.set_ylabel("test loss (Brax: −reward)" if TASKS[task][0].startswith("brax:") else "test loss (episode cost)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=6.5, title="flow (IQM over seeds, 95% interval)", title_fontsize=6.5)
    fig.suptitle(f"training curves per flow: {args.seeds} seeds each (shac-earlier {min(args.earlier_seeds, args.seeds)}; JAX, "
                 f"{args.envs} environments per update)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


FILES = ["curves.csv", "final.csv", "table.csv", "pairs.csv", "training-curves.png"]


def main(argv=None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    all_runs = runs(args)
    earlier = read_settings(args.out)
    adopted = adopt_runs(args.out, all_runs) if earlier is None or earlier.get("script") == SCRIPT else {}
    if adopted:
        print(f"reusing {len(adopted)} finished runs under the names used now (e.g. {next(iter(adopted))} -> "
              f"{next(iter(adopted.values()))}; the list: renamed.json)", flush=True)
    out, records, report = sweep_runs(args, SCRIPT, all_runs, "training curves")
    curves, final, table = tables(all_runs, records)
    write_tables(out, {"curves.csv": curves, "final.csv": final, "table.csv": table, "pairs.csv": pairs(args, final)})
    plot(out / "training-curves.png", curves, args)
    finish_sweep_figure(out, SCRIPT, args, started=started, runs=all_runs, records=records, report=report, files=FILES,
                        tasks={t: dict(zip(("sim", "sim_params", "episode", "updates", "lr"), TASKS[t])) for t in args.tasks})


if __name__ == "__main__":
    run_script(main)
