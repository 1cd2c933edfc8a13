"""How fast can this machine run the cartpole study? Its run, scheduled four ways, measured side by side.

    python -m experiments.sweep_throughput [--epochs 40] [--rounds 2] [--populations 2 4] [--json out.json]

The study's run (``experiments.cartpole_study.config``: the published multi-pole setting, 1000 epochs of
32 updates, H = 100, MLP 2×100, JAX fused) is compute-bound at batch 8, and a sweep spends hours on it.
This script trains the same run for ``--epochs`` epochs in fresh worker processes, several ways:

- ``1 run, 1 thread``: one worker, XLA held to one intra-op thread (as a Ray worker of a sweep is);
- ``2 runs in parallel, 1 thread each``: two such workers at once (``--ray local --ray-cpus 2``, today's sweep);
- ``1 run, all threads``: one worker with XLA's default threading;
- ``population of S per worker, 2 workers``: each worker trains S seeds as one vmapped program
  (``gradstop.trainers.train_population``), two workers at once, one thread each.

Each worker reports its training seconds (compile excluded, as ``summary.json`` counts them); a way's
throughput is the member-epochs it trained divided by the longest worker's training seconds (workers of
one way start together and compile the same program). The ways are interleaved over ``--rounds``
rounds; the report gives each way's median throughput and its ratio to today's sweep within each round,
flows ``none`` and ``combined`` at 2 poles (``--poles``). Stop any sweep first: the numbers are only
meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tyro

ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclasses.dataclass
class Args:
    epochs: int = 40
    """epochs per run (32 updates each)"""
    rounds: int = 2
    """rounds; every way runs once per round, in turn"""
    populations: tuple[int, ...] = (2, 4)
    """population sizes S to try (per worker)"""
    poles: int = 2
    """pole count of the study's cell"""
    flows: tuple[str, ...] = ("none", "combined")
    """flows to measure"""
    quick: bool = False
    """a smoke run: 2 epochs on 16 states, one round, S = 2 (tests)"""
    json: str = ""
    """also write the measurements here"""


def study_config(args: Args, flow: str, seed: int = 0):
    """The cartpole study's main-part run for this cell, cut to ``args.epochs`` epochs."""
    from experiments import cartpole_study

    study = cartpole_study.parse(["--quick"] if args.quick else [])
    return cartpole_study.config(study, args.poles, flow, seed, "raw", epochs=args.epochs, eval_every=args.epochs)


def worker(spec: dict) -> dict:
    """Train ``spec``'s run (or population) in this process; its training seconds."""
    from gradstop.trainers import TrainConfig, train, train_population

    config = TrainConfig.from_dict(spec["config"])
    if spec["population"] > 1:
        results = train_population(config, seeds=range(spec["population"]))
        return {"seconds": results[0].summary["seconds"], "members": len(results)}
    return {"seconds": train(config).summary["seconds"], "members": 1}


def launch(config, *, workers: int, population: int, one_thread: bool) -> float:
    """Start ``workers`` worker processes at once; the member-epochs per second of their training."""
    env = {**os.environ, "OMP_NUM_THREADS": "1" if one_thread else os.environ.get("OMP_NUM_THREADS", "")}
    if one_thread:
        env["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), ONE_THREAD) if f)
    spec = json.dumps({"config": config.to_dict(), "population": population})
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.sweep_throughput", "--worker", spec], env=env, cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a worker failed ({p.returncode}): {err.strip().splitlines()[-1] if err.strip() else ''}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    slowest = max(o["seconds"] for o in outs)
    return sum(o["members"] for o in outs) * config.epochs / slowest


def ways(args: Args) -> dict:
    """name -> (workers, population per worker, one thread)."""
    out = {"1 run, 1 thread": (1, 1, True), "2 runs in parallel, 1 thread each": (2, 1, True),
           "1 run, all threads": (1, 1, False)}
    for s in args.populations:
        out[f"population of {s} per worker, 2 workers"] = (2, s, True)
    return out


BASELINE = "2 runs in parallel, 1 thread each"


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args = dataclasses.replace(args, epochs=2, rounds=1, populations=(2,))
    if args.epochs < 1 or args.rounds < 1 or any(s < 2 for s in args.populations):
        raise ValueError("--epochs and --rounds must be ≥ 1 and every --populations size ≥ 2")
    table = ways(args)
    rows, started = [], time.perf_counter()
    for r in range(args.rounds):
        for flow in args.flows:
            config = study_config(args, flow)
            for name, (workers, population, one_thread) in table.items():
                rate = launch(config, workers=workers, population=population, one_thread=one_thread)
                rows.append(dict(round=r, flow=flow, way=name, member_epochs_per_s=rate))
                print(f"round {r} {flow:>8} {name:<42} {rate:8.2f} member-epochs/s", flush=True)
    report = {"settings": dataclasses.asdict(args), "rows": rows, "seconds": time.perf_counter() - started, "summary": []}
    print(f"\nmedian over {args.rounds} round(s); ratio: to '{BASELINE}' in the same round and flow, median")
    for flow in args.flows:
        for name in table:
            mine = {r["round"]: r["member_epochs_per_s"] for r in rows if r["flow"] == flow and r["way"] == name}
            base = {r["round"]: r["member_epochs_per_s"] for r in rows if r["flow"] == flow and r["way"] == BASELINE}
            ratios = [mine[k] / base[k] for k in mine]
            rate = float(np.median(list(mine.values())))
            report["summary"].append(dict(flow=flow, way=name, member_epochs_per_s=rate, ratio_to_sweep=float(np.median(ratios)),
                                          ratio_min=min(ratios), ratio_max=max(ratios),
                                          seconds_per_1000_epoch_run=1000 / rate))
            print(f"{flow:>8} {name:<42} {rate:8.2f} member-epochs/s  ×{np.median(ratios):.2f} "
                  f"[{min(ratios):.2f}, {max(ratios):.2f}]  ≈ {1000 / rate:.0f} s per 1000-epoch run")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        from gradstop.study.figures import run_script

        run_script(main)
