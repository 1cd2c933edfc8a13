"""gradstop BPTT against Brax's own analytic policy gradient (``brax.training.agents.apg``), side by side.

The same Brax task, pipeline and budget of environment steps; Brax APG trains over windows of
``--window`` steps from its running environments, gradstop trains by BPTT over whole episodes
with the flow ``truncate:<window>`` (the same gradient cut every ``window`` steps). Both report
the episode reward of their deterministic policy (sum over ``--episode-length`` steps) against
wall-clock time (compile time reported separately) and environment steps per second.

Brax 0.14.2's agents call ``jax.device_put_replicated``, which jax 0.10 removed, so this script
needs jax 0.9.2: ``make peer`` builds ``.venv-peer`` with the ``peer`` extra (``jax[cpu]==0.9.2``)
and runs it. Writes ``OUT/peer.csv`` (one row per evaluation), ``OUT/peer.json`` (settings,
versions, summary) and ``OUT/peer.png``.

    .venv-peer/bin/python experiments/apg_peer.py --out results/apg-peer            # the full comparison
    .venv-peer/bin/python experiments/apg_peer.py --quick --out /tmp/peer           # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Args:
    env: str = "reacher"
    """Brax environment (a state-dependent reward: reacher, hopper, halfcheetah)"""
    pipeline: str = "spring"
    """Brax physics pipeline (spring: the cheapest differentiable one)"""
    episode_length: int = 128
    """steps per episode, training and evaluation"""
    window: int = 32
    """APG's horizon_length; gradstop's flow is truncate:<window>"""
    envs: int = 64
    """parallel environments (APG num_envs; gradstop's batch of initial states)"""
    budget: int = 2_000_000
    """environment steps per method"""
    evals: int = 9
    """evaluations per run (the untrained policy included)"""
    lr: float = 1e-3
    """Adam learning rate of both"""
    hidden: tuple = (32, 32, 32, 32)
    """policy MLP (Brax APG's default)"""
    seed: int = 0
    out: str = "results/apg-peer"
    quick: bool = False


def run_apg(args: Args) -> tuple[list[dict], int]:
    """Brax APG: one row per evaluation (wall-clock from the call, compile included), and its update count."""
    import functools

    from brax import envs
    from brax.training.agents.apg import networks as apg_networks
    from brax.training.agents.apg import train as apg

    updates = args.budget // (args.envs * args.window)
    rows, start = [], time.perf_counter()

    def progress(step, metrics):
        rows.append({"method": "brax-apg", "wall_s": time.perf_counter() - start, "env_steps": None,
                     "eval_reward": float(metrics["eval/episode_reward"]), "sps": float(metrics.get("training/sps", np.nan))})

    env = envs.get_environment(args.env, backend=args.pipeline)
    network = functools.partial(apg_networks.make_apg_networks, hidden_layer_sizes=args.hidden)
    apg.train(environment=env, episode_length=args.episode_length, policy_updates=updates, horizon_length=args.window,
              num_envs=args.envs, num_evals=args.evals, learning_rate=args.lr, seed=args.seed, deterministic_eval=True,
              num_eval_envs=args.envs, network_factory=network, progress_fn=progress)
    per_eval = round(updates / max(args.evals - 1, 1)) * args.envs * args.window
    for i, r in enumerate(rows):
        r["env_steps"] = i * per_eval
    return rows, updates


def run_gradstop(args: Args) -> tuple[list[dict], dict]:
    from gradstop.trainers import TrainConfig, train

    updates_total = max(1, args.budget // (args.envs * args.episode_length))
    epochs = max(1, args.evals - 1)
    cfg = TrainConfig(sim=f"brax:{args.env}", sim_params={"pipeline": args.pipeline}, flow=f"truncate:{args.window}",
                      horizon=args.episode_length, batch=args.envs, updates_per_epoch=max(1, updates_total // epochs),
                      epochs=epochs, test_size=args.envs, hidden=args.hidden, lr=args.lr, beta1=0.7, beta2=0.95, seed=args.seed)
    result = train(cfg)
    per_epoch = cfg.updates_per_epoch * args.envs * args.episode_length
    rows = [{"method": "gradstop-bptt", "wall_s": e["seconds"] + result.summary["compile_seconds"],
             "env_steps": int(e["epoch"]) * per_epoch, "eval_reward": e["test_reward"],
             "sps": result.summary["steps_per_second"]} for e in result.evals]
    return rows, result.summary


def main(args: Args) -> dict:
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"apg_peer: {out} exists: choose another --out")
    import jax

    if not hasattr(jax, "device_put_replicated"):
        raise SystemExit(f"apg_peer: Brax's training agents need jax.device_put_replicated, which jax {jax.__version__} "
                         "removed: run it with jax 0.9.2 (`make peer` builds .venv-peer with the 'peer' extra)")
    apg_rows, apg_updates = run_apg(args)
    ours, summary = run_gradstop(args)
    rows = apg_rows + ours
    report = {"settings": {**dataclasses.asdict(args), "hidden": list(args.hidden)}, "apg_updates": apg_updates,
              "gradstop_summary": summary, "versions": {n: _version(n) for n in ("jax", "jaxlib", "brax", "gradstop")},
              "python": sys.version.split()[0],
              "final": {m: [r for r in rows if r["method"] == m][-1] for m in ("brax-apg", "gradstop-bptt")}}
    _write(out, rows, report, args)
    return report


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _write(out: Path, rows, report, args) -> None:
    from gradstop.study.results import plot_lines
    from gradstop.trainers.files import atomic_write, atomic_write_json

    staging = out.with_name(f".{out.name}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    header = ["method", "wall_s", "env_steps", "eval_reward", "sps"]
    text = ",".join(header) + "\n" + "".join(",".join(str(r[k]) for k in header) + "\n" for r in rows)
    atomic_write(staging / "peer.csv", text.encode())
    atomic_write_json(staging / "peer.json", report)
    lines = {m: (np.asarray([r["wall_s"] for r in rows if r["method"] == m]),
                 np.asarray([r["eval_reward"] for r in rows if r["method"] == m])) for m in ("brax-apg", "gradstop-bptt")}
    buf = io.BytesIO()
    plot_lines(buf, lines, title=f"brax:{args.env} ({args.pipeline}), {args.envs} envs, window {args.window}, "
               f"{args.budget:,} steps each", xlabel="wall-clock (s, compile included)", ylabel="episode reward", log=False,
               legend="method")
    atomic_write(staging / "peer.png", buf.getvalue())
    staging.rename(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        if f.type == "bool":
            parser.add_argument(f"--{f.name.replace('_', '-')}", action="store_true")
        elif f.name == "hidden":
            parser.add_argument("--hidden", type=lambda s: tuple(int(h) for h in s.split(",")), default=f.default)
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type={"int": int, "float": float}.get(f.type, str), default=f.default)
    args = Args(**vars(parser.parse_args()))
    if args.quick:
        args = dataclasses.replace(args, episode_length=32, envs=8, budget=8 * 32 * 8, evals=3, hidden=(16, 16))
    report = main(args)
    for method, row in report["final"].items():
        print(f"{method:>14}: episode reward {row['eval_reward']:.2f} after {row['wall_s']:.0f} s, {row['sps']:.3g} steps/s")
