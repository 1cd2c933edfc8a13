"""First-order methods on locomotion: SHAC and BPTT against Brax's PPO on hopper, at equal wall-clock budgets.

    .venv-peer/bin/python -m experiments.locomotion [--quick] [--seeds 3] [--budget 400] [--out DIR]     (make peer-venv first)

Every run trains on ``brax:hopper`` (spring pipeline, Brax's own reward; a fall ends the episode, which
``terminate_when_unhealthy`` signals with ``done``) with 64 environments and episodes of ``--episode-length``
steps, for ``--budget`` seconds of this machine's wall-clock, compile and evaluations included: a run
stops after the first epoch (PPO: evaluation period) that brings it to the budget, and is evaluated
there. The budget was fixed before any run. Each run is its own process on one core (XLA and torch at one
thread), ``--parallel`` of them at a time, so every method trains under the same conditions.
Scored the same way for all: the deterministic policy's episode reward on 64 test episodes, summed up
to each episode's first ``done`` (as Brax's evaluator counts it).

- **PPO** (``brax.training.agents.ppo``): Brax's published hopper settings (learning rate 3e-4, entropy 1e-2,
  γ 0.97, reward scaling 10, observation normalisation, unrolls of 20, 8 updates per batch), scaled to 64
  environments as the model-free figure scales reacher's: batches of 64 in 8 minibatches (published: 2048
  environments, batches of 512 in 32 minibatches). PPO trains on auto-resetting episodes.
- **SHAC** (``gradstop train --algo shac``): its published defaults and DiffRL's hopper config
  (examples/cfg/shac/hopper.yaml: actor lr 2e-3, critic lr 2e-4, actor 128-64-32 and critic 64-64 ELU,
  windows of 32, episodes of 1000 ending inside windows, linear decay over 2000 windows, of which the
  budget runs the first ones), 64 environments (published 256).
- **BPTT** (``gradstop train``): every update a whole episode from fresh initial states, flow
  ``truncate:32`` (Brax APG's ``horizon_length`` 32), Adam lr 1e-3, global-norm clipping 1, MLP 64×64 tanh.

None of these settings was tuned here. Brax 0.14.2's agents need jax 0.9.2, so the script runs in
``.venv-peer`` (``make peer-venv``); gradstop runs unchanged there. Each finished (method, seed) is kept in
``OUT/runs/`` (a gradstop run folder, or PPO's JSON), so a rerun skips it; an interrupted gradstop run
resumes from its checkpoint. A gradstop run that stops early — SHAC's published guards (|V| or the actor's
gradient norm past 1e6), or a non-finite update — is a result: ``stopped.json`` in its folder says why,
and its last evaluation is its final reward (``final.csv``'s ``status`` says so). Writes ``curves.csv`` (every evaluation: seconds, environment steps, reward),
``final.csv`` (a row per run), ``table.csv`` (per method the IQM and median of the final reward with 95%
stratified-bootstrap intervals over seeds, ``gradstop.study.stats``), ``locomotion.png`` and ``settings.json``.
``--quick`` (8 environments, episodes of 32, a 30-second budget, 2 seeds) is a smoke run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tyro

from gradstop.study import stats
from gradstop.study.figures import claim_folder, run_script, write_settings
from gradstop.study.results import save_figure, write_csv
from gradstop.trainers.config import TrainConfig
from gradstop.trainers.files import atomic_write_json

SCRIPT = "locomotion"
METHODS = ("ppo", "shac", "bptt")
COLORS = {"ppo": "tab:green", "shac": "tab:purple", "bptt": "tab:blue"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


@dataclasses.dataclass
class Args:
    env: str = "hopper"
    """Brax environment"""
    pipeline: str = "spring"
    """Brax physics pipeline"""
    episode_length: int = 1000
    """steps per episode, training and evaluation"""
    methods: tuple[str, ...] = METHODS
    """which methods to run"""
    seeds: int = 3
    """seeds per method"""
    envs: int = 64
    """parallel environments of every method (and test episodes)"""
    budget: float = 400.0
    """wall-clock seconds per run, compile and evaluations included (fixed before any run)"""
    parallel: int = 2
    """runs at a time, one core each"""
    ppo_steps_per_second: float = 8000.0
    """PPO's expected training rate here: sets its evaluation period to about a tenth of the budget (not its budget)"""
    quick: bool = False
    """a smoke run: 8 environments, episodes of 32, a 30-second budget, 2 seeds"""
    out: str = "results/locomotion"
    """the figure's folder (resumed if it holds this figure's runs)"""
    force: bool = False
    """accepted for gradstop figures (finished runs are kept; the figure is redrawn)"""
    worker: str | None = None
    """(internal) run one METHOD:SEED in this process and exit"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args = dataclasses.replace(args, envs=8, episode_length=32, budget=30.0, seeds=2)
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {METHODS}")
    if args.budget <= 0 or args.seeds < 1 or args.parallel < 1:
        raise ValueError("--budget must be > 0, --seeds and --parallel ≥ 1")
    return args


def check_jax() -> None:
    from experiments import require_peer_jax

    require_peer_jax(SCRIPT, ", or leave PPO out (--methods shac bptt)")


def run_name(method: str, seed: int) -> str:
    return f"method={method},seed={seed}"


# -- gradstop's runs --------------------------------------------------------------------------------
def config(args: Args, method: str, seed: int) -> TrainConfig:
    common = dict(sim=f"brax:{args.env}", sim_params={"pipeline": args.pipeline}, horizon=args.episode_length,
                  batch=args.envs, test_size=args.envs, seed=seed, max_seconds=args.budget, checkpoint_every=1)
    if method == "shac":
        window = min(32, args.episode_length)
        return TrainConfig(algo="shac", window=window, lr=2e-3, critic_lr=2e-4, hidden=(128, 64, 32), critic_hidden=(64, 64),
                           epochs=100, updates_per_epoch=20, **common)
    return TrainConfig(algo="bptt", flow="truncate:32", lr=1e-3, clip_norm=1.0, hidden=(64, 64), activation="tanh",
                       epochs=100_000, updates_per_epoch=1, eval_every=3, **common)


def gradstop_rows(args: Args, method: str, seed: int, folder: Path) -> list[dict]:
    from gradstop.trainers.files import MetricsLog
    from gradstop.trainers.run import eval_columns

    cfg = config(args, method, seed)
    if (folder / "summary.json").exists():
        compile_s, status = json.loads((folder / "summary.json").read_text())["compile_seconds"], "done"
    else:  # stopped early (stopped.json, with the compile time of its last checkpoint, which its evaluations do not pass)
        stopped = json.loads((folder / STOPPED).read_text())
        compile_s, status = stopped["compile_seconds"], "stopped at update {update}: {message}".format(**stopped)
    steps = cfg.batch * (cfg.window if method == "shac" else cfg.horizon)
    evals = MetricsLog(folder / "eval.csv", eval_columns(cfg)).read()
    return [dict(method=method, seed=seed, env_steps=int(e["update"]) * steps, seconds=float(e["seconds"]) + compile_s,
                 reward=float(e["test_reward"]), status=status) for e in evals]


# -- Brax's PPO -------------------------------------------------------------------------------------
class _Budget(Exception):
    pass


def run_ppo(args: Args, seed: int) -> list[dict]:
    """One PPO run: a row per evaluation, the seconds from the call (compile and evaluations included); it stops at the
    first evaluation at or past the budget."""
    from brax import envs
    from brax.training.agents.ppo import train as ppo

    env = envs.get_environment(args.env, backend=args.pipeline)
    rows, start = [], time.perf_counter()

    def progress(step, metrics):
        rows.append(dict(method="ppo", seed=seed, env_steps=int(step), seconds=time.perf_counter() - start,
                         reward=float(metrics["eval/episode_reward"])))
        if rows[-1]["seconds"] >= args.budget:
            raise _Budget

    # an evaluation period of about a tenth of the budget at the expected rate; far more steps than the budget runs
    period = max(args.envs * 20 * 8, int(args.budget * args.ppo_steps_per_second / 10))
    try:
        ppo.train(environment=env, num_timesteps=period * 100, num_evals=101, episode_length=args.episode_length,
                  num_envs=args.envs, num_eval_envs=args.envs, batch_size=args.envs, num_minibatches=8,
                  num_updates_per_batch=8, unroll_length=20, learning_rate=3e-4, entropy_cost=1e-2, discounting=0.97,
                  reward_scaling=10.0, normalize_observations=True, action_repeat=1, deterministic_eval=True, seed=seed,
                  progress_fn=progress)
    except _Budget:
        pass
    return rows


# -- one run, in its own process --------------------------------------------------------------------
def work(args: Args, method: str, seed: int) -> None:
    out = Path(args.out) / "runs"
    if method == "ppo":
        check_jax()
        atomic_write_json(out / f"{run_name(method, seed)}.json",
                          {"settings": dataclasses.asdict(args), "rows": run_ppo(args, seed)})
    else:
        from gradstop.trainers import NonFiniteError, train

        folder = out / run_name(method, seed)
        try:
            train(config(args, method, seed), out=folder)
        except NonFiniteError as stop:  # SHAC's published guards, or a non-finite update: a result, recorded as such
            from gradstop.trainers.jax import checkpoint

            meta = checkpoint.read_meta((folder / "checkpoint.npz").read_bytes())  # its last evaluations' compile time
            atomic_write_json(folder / STOPPED, {"message": str(stop), "update": stop.update, "epoch": stop.epoch,
                                                 "compile_seconds": meta["compile_seconds"]})


STOPPED = "stopped.json"  # a gradstop run that stopped before its budget (its last checkpoint and evaluations stay)


def finished(args: Args, method: str, seed: int) -> bool:
    runs = Path(args.out) / "runs"
    if method == "ppo":
        return (runs / f"{run_name(method, seed)}.json").exists()
    return any((runs / run_name(method, seed) / f).exists() for f in ("summary.json", STOPPED))


def launch(args: Args, argv: list[str], method: str, seed: int) -> None:
    """Run one (method, seed) in a fresh process on one thread (so no run inherits another's compile caches)."""
    log = Path(args.out) / "runs" / f"{run_name(method, seed)}.log"
    with open(log, "a") as f:
        proc = subprocess.run([sys.executable, "-m", "experiments.locomotion", *argv, "--out", args.out,
                               "--worker", f"{method}:{seed}"], env={**os.environ, **ONE_THREAD}, stdout=f,
                              stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode:
        raise RuntimeError(f"{method} seed {seed} failed (exit status {proc.returncode}); its output: {log}")


# -- the figure -------------------------------------------------------------------------------------
def tables(args: Args, rows: list[dict]) -> tuple[list, list]:
    final, table = [], []
    for method in args.methods:
        for seed in range(args.seeds):
            mine = sorted((r for r in rows if r["method"] == method and r["seed"] == seed), key=lambda r: r["seconds"])
            if mine:
                final.append(dict(method=method, seed=seed, first_reward=mine[0]["reward"], final_reward=mine[-1]["reward"],
                                  best_reward=max(r["reward"] for r in mine), seconds=mine[-1]["seconds"],
                                  env_steps=mine[-1]["env_steps"], evaluations=len(mine),
                                  status=mine[-1].get("status", "done")))
        values = [f["final_reward"] for f in final if f["method"] == method]
        row = dict(method=method, seeds=len(values))
        keys = [f"{m}{s}" for m in ("iqm", "median") for s in ("", "_low", "_high")]
        if len(values) >= 2:
            s = stats.summarize(values, cell=f"{method} final reward")
            row.update(zip(keys, (s["iqm"].value, s["iqm"].low, s["iqm"].high, s["median"].value, s["median"].low,
                                  s["median"].high)))
        else:
            row.update(dict.fromkeys(keys))
        row["median_env_steps"] = float(np.median([f["env_steps"] for f in final if f["method"] == method])) if values else None
        table.append(row)
    return final, table


def plot(path, rows: list[dict], args: Args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=120)
    for ax, x, label in ((axes[0], "seconds", "wall-clock on one core (s, compile and evaluation included)"),
                         (axes[1], "env_steps", "environment steps")):
        for method in args.methods:
            for k, seed in enumerate(range(args.seeds)):
                mine = sorted((r for r in rows if r["method"] == method and r["seed"] == seed and (x == "seconds" or r[x] > 0)),
                              key=lambda r: r["seconds"])  # the untrained policy (0 steps) is off a log axis
                if mine:
                    ax.plot([r[x] for r in mine], [r["reward"] for r in mine], color=COLORS[method], marker="o",
                            markersize=2.5, linewidth=1.1, alpha=0.85, label=method.upper() if k == 0 else None)
        if x == "seconds":
            ax.axvline(args.budget, color="0.4", linestyle=":", linewidth=1)
        else:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("episode reward (deterministic policy)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="method (a line per seed)", title_fontsize=7)
    fig.suptitle(f"brax:{args.env} ({args.pipeline}), episodes of {args.episode_length}, {args.envs} environments, "
                 f"{args.budget:g} s per run", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


FILES = ["curves.csv", "final.csv", "table.csv", "locomotion.png"]


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.worker:
        method, seed = args.worker.split(":")
        work(args, method, int(seed))
        return
    if "ppo" in args.methods:
        check_jax()
    started = time.perf_counter()
    out = claim_folder(args.out, SCRIPT, force=args.force, resumable=True)
    (out / "runs").mkdir(exist_ok=True)
    if not (out / "settings.json").exists():  # marks the folder as this figure's before its first run
        write_settings(out, SCRIPT, args, seconds=0.0, complete=False, files=[])
    todo = [(m, s) for s in range(args.seeds) for m in args.methods if not finished(args, m, s)]  # seed-major
    passed = [a for a in argv if a != "--force"]
    if "--out" in passed:
        i = passed.index("--out")
        del passed[i: i + 2]
    with ThreadPoolExecutor(args.parallel) as pool:
        for job in [pool.submit(launch, args, passed, m, s) for m, s in todo]:
            job.result()
    rows = []
    for method in args.methods:
        for seed in range(args.seeds):
            if method == "ppo":
                rows += json.loads((out / "runs" / f"{run_name(method, seed)}.json").read_text())["rows"]
            else:
                rows += gradstop_rows(args, method, seed, out / "runs" / run_name(method, seed))
    write_csv(out / "curves.csv", ["method", "seed", "env_steps", "seconds", "reward"],
              [[r[k] for k in ("method", "seed", "env_steps", "seconds", "reward")] for r in rows])
    final, table = tables(args, rows)
    write_csv(out / "final.csv", list(final[0]), [list(f.values()) for f in final])
    write_csv(out / "table.csv", list(table[0]), [list(t.values()) for t in table])
    plot(out / "locomotion.png", rows, args)
    import jax

    write_settings(out, SCRIPT, args, seconds=time.perf_counter() - started, complete=len(final) == len(args.methods) * args.seeds,
                   files=FILES, seeds=list(range(args.seeds)), jax=jax.__version__)
    print("\n".join(f"{t['method']}: final reward IQM {t['iqm']} [{t['iqm_low']}, {t['iqm_high']}] over {t['seeds']} seeds"
                    for t in table))


if __name__ == "__main__":
    run_script(main)
