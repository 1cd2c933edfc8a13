"""The model-free reference: Brax's PPO and SAC against gradstop's BPTT and SHAC on one Brax task, by wall-clock.

    .venv-peer/bin/python -m experiments.model_free [--quick] [--seeds 3] [--out DIR]     (make peer-venv first)

All four train on ``brax:<env>`` (reacher, spring pipeline) with episodes of ``--episode-length``
steps and one action per step, and are scored the same way: the deterministic policy's episode
reward (summed over the episode, averaged over evaluation environments), against the wall-clock of
this machine from the start of training, compile included, and against environment steps.

- **PPO** and **SAC**: ``brax.training.agents`` with Brax's published reacher settings where they
  exist (PPO: lr 3e-4, entropy 1e-3, γ 0.95, reward scaling 5, observation normalisation, 8 updates
  per batch), scaled to a 2-core CPU: 64 environments, unrolls of 20, 8 minibatches of 64 (the
  published run uses 2048 environments, unrolls of 50, 32 minibatches, action_repeat 4 and 50 M
  steps). SAC: lr 6e-4, γ 0.97, reward scaling 5, 64 environments, batches of 256, replay from
  8192 samples. Budgets: ``--ppo-steps``, ``--sac-steps``.
- **BPTT** and **SHAC**: ``experiments/training_curves.py``'s reacher settings (SHAC's published
  defaults, actor lr 1e-3), with the flow each trained best with there (``--bptt-flow``,
  ``--shac-flow``), for ``--bptt-updates`` and ``--shac-updates``.

Brax 0.14.2's agents need jax 0.9.2 (``jax.device_put_replicated``), so this script runs in the
``.venv-peer`` venv (``make peer-venv``); gradstop itself runs unchanged there. Each finished
(method, seed) is kept in ``OUT/runs/`` (gradstop's runs as a sweep, Brax's as one JSON each), so
a rerun skips it. Writes ``curves.csv`` (every evaluation), ``final.csv``, ``model-free.png`` and
``settings.json``. ``--quick`` (16 environments, a few thousand steps each, 1 seed) is a smoke run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import tyro

from gradstop.study.figures import claim_folder, run_script, write_settings
from gradstop.study.results import save_figure, write_csv
from gradstop.trainers.files import atomic_write_json

SCRIPT = "model_free"
METHODS = ("ppo", "sac", "bptt", "shac")
COLORS = {"ppo": "tab:green", "sac": "tab:red", "bptt": "tab:blue", "shac": "tab:purple"}


@dataclasses.dataclass
class Args:
    env: str = "reacher"
    """Brax environment (a state-dependent reward)"""
    pipeline: str = "spring"
    """Brax physics pipeline"""
    episode_length: int = 128
    """steps per episode, training and evaluation"""
    methods: tuple[str, ...] = METHODS
    """which methods to run"""
    seeds: int = 3
    """seeds per method"""
    envs: int = 64
    """parallel environments of every method"""
    evals: int = 9
    """evaluations per run of PPO and SAC (the untrained policy included)"""
    ppo_steps: int = 2_000_000
    """PPO's environment steps"""
    sac_steps: int = 200_000
    """SAC's environment steps"""
    bptt_updates: int = 64
    """BPTT's updates (each an episode of every environment)"""
    shac_updates: int = 256
    """SHAC's updates (each a 32-step window of every environment)"""
    bptt_flow: str = "none"
    """BPTT's flow (the best on reacher in the training-curves figure)"""
    shac_flow: str = "none"
    """SHAC's flow (the best on reacher in the training-curves figure)"""
    flows_from: str | None = None
    """take BPTT's and SHAC's flows from this training-curves table.csv: each algorithm's flow with the lowest
    median final test loss on --env (overrides --bptt-flow and --shac-flow)"""
    quick: bool = False
    """a smoke run: 16 environments, small budgets, 1 seed"""
    out: str = "results/model-free"
    """the figure's folder (resumed if it holds this figure's runs)"""
    force: bool = False
    """accepted for gradstop figures (finished runs are kept; the figure is redrawn)"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args = dataclasses.replace(args, envs=16, evals=3, ppo_steps=16 * 20 * 8 * 4, sac_steps=4096, bptt_updates=2,
                                   shac_updates=4, seeds=1, episode_length=32)
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {METHODS}")
    if args.flows_from:
        args = dataclasses.replace(args, **{f"{algo}_flow": flow for algo, flow in best_flows(args.flows_from, args.env).items()})
    return args


def best_flows(table: str, env: str) -> dict:
    """{"bptt": flow, "shac": flow}: each algorithm's flow with the lowest median final test loss on ``env`` in a
    training-curves ``table.csv``."""
    import csv

    path = Path(table)
    if not path.is_file():
        raise ValueError(f"--flows-from {table}: no such file (the training-curves figure writes table.csv)")
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("task") == env and r.get("median")]
    best = {}
    for algo in ("bptt", "shac"):
        mine = [r for r in rows if r["algo"] == algo]
        if not mine:
            raise ValueError(f"--flows-from {table} has no finished {algo} runs on {env}")
        best[algo] = min(mine, key=lambda r: float(r["median"]))["flow"]
    return best


def check_jax() -> None:
    from experiments import require_peer_jax

    require_peer_jax(SCRIPT)


# -- Brax's agents -----------------------------------------------------------------------------------
def run_brax(args: Args, method: str, seed: int) -> list[dict]:
    """One PPO or SAC run: a row per evaluation (wall-clock from the call, compile included)."""
    from brax import envs

    env = envs.get_environment(args.env, backend=args.pipeline)
    rows, start = [], time.perf_counter()

    def progress(step, metrics):
        rows.append(dict(method=method, seed=seed, env_steps=int(step), wall_s=time.perf_counter() - start,
                         eval_reward=float(metrics["eval/episode_reward"])))

    common = dict(environment=env, episode_length=args.episode_length, num_envs=args.envs, num_evals=args.evals, seed=seed,
                  num_eval_envs=args.envs, deterministic_eval=True, progress_fn=progress, normalize_observations=True,
                  reward_scaling=5.0)
    if method == "ppo":
        from brax.training.agents.ppo import train as ppo

        ppo.train(num_timesteps=args.ppo_steps, learning_rate=3e-4, entropy_cost=1e-3, discounting=0.95, unroll_length=20,
                  batch_size=args.envs, num_minibatches=8, num_updates_per_batch=8, **common)
    else:
        from brax.training.agents.sac import train as sac

        sac.train(num_timesteps=args.sac_steps, learning_rate=6e-4, discounting=0.97, batch_size=256,
                  min_replay_size=min(8192, args.sac_steps // 2), max_replay_size=1_000_000, grad_updates_per_step=1,
                  **common)
    return rows


# -- gradstop ---------------------------------------------------------------------------------------
def gradstop_runs(args: Args):
    from experiments import training_curves as tc
    from gradstop.study.sweep import Run

    task = ("brax:" + args.env, {"pipeline": args.pipeline}, args.episode_length, None, 1e-3)
    runs = []
    for method, updates, flow in (("bptt", args.bptt_updates, args.bptt_flow), ("shac", args.shac_updates, args.shac_flow)):
        if method not in args.methods:
            continue
        for seed in range(args.seeds):
            targs = dataclasses.replace(tc.Args(), updates=updates, envs=args.envs, test_size=args.envs)
            config = tc.config(targs, args.env, method, flow, seed, spec=task)
            # the training-curves figure's run-name token (SHAC's published variant: shac-published), so runs of
            # gradstop's earlier SHAC variant, named method=shac, are never taken for the published one's
            runs.append(Run(f"method={tc.RUN_NAME[method]},flow={flow.replace(':', '_')},seed={seed}", config))
    return runs


def gradstop_rows(runs, records) -> list[dict]:
    rows = []
    for r in runs:
        rec = records.get(r.name)
        if rec is None:
            continue
        method = r.config.algo
        steps = r.config.batch * (r.config.window if method == "shac" else r.config.horizon)
        compile_s = (rec["summary"] or {}).get("compile_seconds", 0.0)
        rows += [dict(method=method, seed=r.config.seed, env_steps=int(e["update"]) * steps, wall_s=e["seconds"] + compile_s,
                      eval_reward=e["test_reward"]) for e in rec["evals"]]
    return rows


# -- the figure -------------------------------------------------------------------------------------
def plot(path, rows, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
    for ax, x, label in ((axes[0], "wall_s", "wall-clock on this machine (s, compile included)"),
                         (axes[1], "env_steps", "environment steps")):
        for method in args.methods:
            seeds = sorted({r["seed"] for r in rows if r["method"] == method})
            for k, seed in enumerate(seeds):
                mine = sorted((r for r in rows if r["method"] == method and r["seed"] == seed), key=lambda r: r["env_steps"])
                ax.plot([r[x] for r in mine], [r["eval_reward"] for r in mine], color=COLORS[method], marker="o",
                        markersize=2.5, linewidth=1.1, alpha=0.85, label=method.upper() if k == 0 else None)
        if x == "env_steps":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("episode reward (deterministic policy)")
        ax.grid(alpha=0.3)
    flows = f"BPTT {args.bptt_flow}, SHAC {args.shac_flow}"
    axes[0].legend(fontsize=8, title=f"method (a line per seed; {flows})", title_fontsize=7)
    fig.suptitle(f"brax:{args.env} ({args.pipeline}), episodes of {args.episode_length}, {args.envs} environments", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


FILES = ["curves.csv", "final.csv", "model-free.png"]


def main(argv=None) -> None:
    args = parse(argv)
    check_jax()
    from gradstop.study.sweep import read_runs, run_sweep

    started = time.perf_counter()
    out = claim_folder(args.out, SCRIPT, force=args.force, resumable=True)
    runs = gradstop_runs(args)
    if runs:
        report = run_sweep(runs, out)  # the sweep's manifest also marks the folder as this figure's
        print(report.describe(), flush=True)
    else:
        (out / "runs").mkdir(exist_ok=True)
    brax_rows = []
    for method in (m for m in args.methods if m in ("ppo", "sac")):
        for seed in range(args.seeds):
            record = out / "runs" / f"method={method},seed={seed}.json"
            if not record.exists():
                print(f"{method} seed {seed}: training", flush=True)
                atomic_write_json(record, {"settings": dataclasses.asdict(args), "rows": run_brax(args, method, seed)})
            brax_rows += json.loads(record.read_text())["rows"]
    rows = brax_rows + gradstop_rows(runs, read_runs(out, runs))
    write_csv(out / "curves.csv", ["method", "seed", "env_steps", "wall_s", "eval_reward"],
              [[r[k] for k in ("method", "seed", "env_steps", "wall_s", "eval_reward")] for r in rows])
    final = []
    for method in args.methods:
        for seed in range(args.seeds):
            mine = sorted((r for r in rows if r["method"] == method and r["seed"] == seed), key=lambda r: r["env_steps"])
            if mine:
                final.append(dict(method=method, seed=seed, first_reward=mine[0]["eval_reward"], final_reward=mine[-1]["eval_reward"],
                                  best_reward=max(r["eval_reward"] for r in mine), env_steps=mine[-1]["env_steps"],
                                  wall_s=mine[-1]["wall_s"]))
    write_csv(out / "final.csv", list(final[0]) if final else ["method"], [list(f.values()) for f in final])
    plot(out / "model-free.png", rows, args)
    import jax

    summary = {m: float(np.median([f["final_reward"] for f in final if f["method"] == m])) for m in args.methods
               if any(f["method"] == m for f in final)}
    write_settings(out, SCRIPT, args, seconds=time.perf_counter() - started, complete=len(final) == len(args.methods) * args.seeds,
                   files=FILES, seeds=list(range(args.seeds)), median_final_reward=summary, jax=jax.__version__,
                   flows_from=args.flows_from)
    print("median final episode reward: " + ", ".join(f"{m} {v:.2f}" for m, v in summary.items()))


if __name__ == "__main__":
    run_script(main)
