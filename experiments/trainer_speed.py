"""Trainer speed, measured side by side in one run: the numbers behind docs/trainers.md.

1. The literature epoch (2-pole cartpole, preset 'literature', MLP 2×100 tanh, 256 training
   states in batches of 8 = 32 updates, H = 100, Adam): gradstop's BPTT trainer against the same
   epoch written directly on the public API (one jitted ``lax.scan`` of ``gs.rollout`` gradients).
2. A population of S seeds as one vmapped program against S runs one after another (JAX).
3. One update in JAX and in PyTorch on identical networks, sim and data (compile excluded): BPTT in
   the literature setting, SHAC with its published defaults on the cartpole swing-up.

    python experiments/trainer_speed.py               # the full measurement (a few minutes)
    python experiments/trainer_speed.py --quick       # a smoke run (seconds)

Each comparison interleaves its contenders over ``--rounds`` rounds and reports medians and the
median of per-round ratios; timings on these 2-core VMs drift, so only same-run ratios mean much.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np


@dataclasses.dataclass
class Args:
    rounds: int = 5
    epochs: int = 10
    population: int = 8
    quick: bool = False
    json: str = ""


def literature(backend="jax", **kw):
    from gradstop.trainers import TrainConfig

    base = dict(sim="cartpole", preset="literature", sim_params={"poles": 2}, backend=backend, flow="none", horizon=100,
                data="fixed", train_size=256, test_size=256, batch=8, hidden=(100, 100), zero_last=True, lr=1e-3)
    return TrainConfig(**{**base, **kw})


def time_epochs(program, data, epochs):
    program.compile(data, 0)
    ticks = []
    for e in range(epochs):
        tick = time.perf_counter()
        program.run_epoch(data, e)
        ticks.append(time.perf_counter() - tick)
    return float(np.median(ticks))


def direct_epoch_seconds(config, epochs):
    """The same epoch on the public API alone: jit(lax.scan over minibatches of value_and_grad + optax)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import gradstop as gs
    from gradstop.trainers.data import Data
    from gradstop.trainers.run import make_sim

    sim = make_sim(config)
    data = Data.from_config(sim, config)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=config.hidden)
    params, static = eqx.partition(policy, eqx.is_inexact_array)
    tx = optax.adam(config.lr)

    @jax.jit
    def epoch(params, opt_state, x0s):
        def body(carry, x0):
            p, s = carry
            loss, g = jax.value_and_grad(lambda q: gs.rollout(eqx.combine(q, static), sim, stop=config.flow,
                                                             horizon=config.horizon, x0=x0).loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), x0s)
        return params, opt_state, losses

    state = (params, tx.init(params))
    x0s = jnp.asarray(data.epoch(0), jnp.float32)
    jax.block_until_ready(epoch(*state, x0s))
    ticks = []
    for e in range(epochs):
        x0s = jnp.asarray(data.epoch(e), jnp.float32)
        tick = time.perf_counter()
        *state, losses = epoch(*state, x0s)
        jax.block_until_ready(losses)
        ticks.append(time.perf_counter() - tick)
    return float(np.median(ticks))


def main(args: Args) -> dict:
    from gradstop.trainers import train_population
    from gradstop.trainers.data import Data
    from gradstop.trainers.run import make_sim, program_for

    report = {"settings": dataclasses.asdict(args)}
    cfg = literature(epochs=args.epochs)
    if args.quick:
        cfg = dataclasses.replace(cfg, horizon=10, train_size=32, hidden=(16, 16))

    # 1. the literature epoch: trainer vs the public API by hand, interleaved
    rows = []
    for r in range(args.rounds):
        for flow in ("none", "combined"):
            c = dataclasses.replace(cfg, flow=flow)
            sim = make_sim(c)
            trainer = time_epochs(program_for(c, sim), Data.from_config(sim, c), args.epochs)
            direct = direct_epoch_seconds(c, args.epochs) if flow == "none" else float("nan")
            rows.append({"round": r, "flow": flow, "trainer_s": trainer, "direct_s": direct})
    report["epoch"] = rows
    for flow in ("none", "combined"):
        t = [x["trainer_s"] for x in rows if x["flow"] == flow]
        d = [x["direct_s"] for x in rows if x["flow"] == flow]
        ratio = np.median([a / b for a, b in zip(t, d)]) if flow == "none" else float("nan")
        print(f"literature epoch, flow {flow:>8}: trainer {np.median(t):.3f} s" +
              (f", public API by hand {np.median(d):.3f} s, trainer/by-hand {ratio:.2f}" if flow == "none" else ""))

    # 2. population of S seeds vs S sequential runs (JAX), whole runs, compile excluded
    s = args.population
    pc = dataclasses.replace(cfg, epochs=args.epochs, eval_every=args.epochs)
    ratios, pop_t, seq_t = [], [], []
    for r in range(max(1, args.rounds // 2)):
        together = train_population(pc, seeds=range(s))[0].summary["seconds"]  # the population's clock (all members share it)
        alone = sum(_sequential_seconds(pc, seed) for seed in range(s))
        pop_t.append(together)
        seq_t.append(alone)
        ratios.append(alone / together)
    report["population"] = {"S": s, "population_s": pop_t, "sequential_s": seq_t, "speedup": ratios}
    print(f"population S={s}: one vmapped program {np.median(pop_t):.3f} s vs {s} sequential runs {np.median(seq_t):.3f} s: "
          f"speed-up {np.median(ratios):.2f}x")

    # 3. one update, JAX vs PyTorch, same networks, sim and data: BPTT (literature setting) and SHAC (its defaults)
    from gradstop.trainers import TrainConfig

    shac = TrainConfig.for_algo("shac", sim="cartpole", epochs=args.epochs, updates_per_epoch=4)
    if args.quick:
        shac = dataclasses.replace(shac, batch=8, window=8, horizon=16, hidden=(16,), critic_hidden=(16,), critic_iterations=2)
    report["update"] = {}
    for name, base in (("bptt", cfg), ("shac", shac)):
        per = {}
        for r in range(max(1, args.rounds // 2)):
            for backend in ("jax", "torch"):
                c = dataclasses.replace(base, backend=backend)
                sim = make_sim(c)
                per.setdefault(backend, []).append(time_epochs(program_for(c, sim), Data.from_config(sim, c), args.epochs)
                                                   / c.steps_per_epoch)
        report["update"][name] = per
        j, t = np.median(per["jax"]), np.median(per["torch"])
        print(f"one {name.upper()} update: JAX {j * 1e3:.2f} ms, torch {t * 1e3:.2f} ms, torch/JAX "
              f"{np.median(np.asarray(per['torch']) / np.asarray(per['jax'])):.1f}x")
    return report


def _sequential_seconds(config, seed):
    from gradstop.trainers import train

    return train(dataclasses.replace(config, seed=seed)).summary["seconds"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        if f.type == "bool":
            parser.add_argument(f"--{f.name}", action="store_true")
        elif f.type == "str":
            parser.add_argument(f"--{f.name}", default=f.default, help="also write the measurements to this JSON file")
        else:
            parser.add_argument(f"--{f.name}", type=int, default=f.default)
    ns = parser.parse_args()
    args = Args(**vars(ns))
    if args.quick:
        args.rounds, args.epochs, args.population = 1, 2, 2
    report = main(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
