"""What the zeroth- and α-order flows cost, measured side by side in one run: the numbers in docs/mixing.md.

One update direction (the gradient of ``gs.rollout(...).loss``) on the 1-pole cartpole swing-up
(MLP 64×64 tanh, H = 100, 8 initial states), per flow: ``none`` (the first-order reference),
``zero``, ``alpha:0.5``, and ``alpha:auto`` (which takes per-sample gradients for its variances),
each with N = 1 and N = 4 noisy rollouts per initial state; JAX jitted (compile excluded), PyTorch eager.
PyTorch's ``alpha:auto`` runs twice: batched with torch.func (the default) and one sample at a time
(``gradstop.torch.mixing.VECTORISE = False``, the reference path), so their ratio is what batching saves.

    python experiments/mixing_cost.py                 # the measurement (a few minutes)
    python experiments/mixing_cost.py --quick         # a smoke run

The contenders are interleaved over ``--rounds`` rounds; the table gives each flow's median time and
the median of its per-round ratio to ``none``. Timings on these 2-core VMs drift: only same-run
ratios mean much.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FLOWS = ["none", "zero", "alpha:0.5", "alpha:auto", "zero+samples:4", "alpha:0.5+samples:4", "alpha:auto+samples:4"]
ONE_AT_A_TIME = " (one sample at a time)"  # a torch contender: alpha:auto without torch.func's batching


def _jax_case(flow, horizon, batch):
    import equinox as eqx
    import jax

    import gradstop as gs
    from sims import make

    sim = make("cartpole", backend="jax", poles=1)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(64, 64))
    x0 = sim.reset(0, batch)
    grad = eqx.filter_jit(lambda p, k: eqx.filter_grad(
        lambda q: gs.rollout(q, sim, stop=flow, horizon=horizon, x0=x0, key=k).loss)(p))
    key = jax.random.PRNGKey(1)
    jax.block_until_ready(grad(policy, key))  # compile

    def once():
        jax.block_until_ready(grad(policy, key))

    return once


def _torch_case(flow, horizon, batch):
    import gradstop as gs
    from gradstop.torch import mixing
    from sims import make

    sim = make("cartpole", backend="torch", poles=1)
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(64, 64))
    x0 = sim.reset(0, batch)
    flow, batched = flow.removesuffix(ONE_AT_A_TIME), not flow.endswith(ONE_AT_A_TIME)

    def once():
        policy.zero_grad(set_to_none=True)
        mixing.VECTORISE = batched
        try:
            gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, key=1).loss.backward()
        finally:
            mixing.VECTORISE = True

    once()  # warm-up
    return once


def measure(backend, flows, horizon, batch, rounds):
    make = _jax_case if backend == "jax" else _torch_case
    cases = {f: make(f, horizon, batch) for f in flows}
    times = {f: [] for f in flows}
    for _ in range(rounds):
        for f, once in cases.items():
            tick = time.perf_counter()
            once()
            times[f].append(time.perf_counter() - tick)
    base = np.asarray(times["none"])
    return [dict(backend=backend, flow=f, median_seconds=float(np.median(t)),
                 ratio_to_none=float(np.median(np.asarray(t) / base))) for f, t in times.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="H = 10, 2 rounds, N = 1 only")
    parser.add_argument("--out", default="docs/gallery/mixing-cost")
    ns = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    flows = FLOWS[:4] if ns.quick else FLOWS
    horizon, rounds = (10, 2) if ns.quick else (ns.horizon, ns.rounds)
    slow = [f + ONE_AT_A_TIME for f in flows if f.startswith("alpha:auto")]
    rows = measure("jax", flows, horizon, ns.batch, rounds) + measure("torch", flows + slow, horizon, ns.batch, rounds)
    print(f"one update direction, 1-pole cartpole, MLP 64×64, H = {horizon}, batch {ns.batch}, {rounds} rounds")
    print(f"{'backend':8} {'flow':46} {'median s':>10} {'× none':>8}")
    for r in rows:
        print(f"{r['backend']:8} {r['flow']:46} {r['median_seconds']:10.4f} {r['ratio_to_none']:8.2f}")
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(horizon=horizon, batch=ns.batch, rounds=rounds, sim="cartpole poles=1", hidden=[64, 64],
                    command="python experiments/mixing_cost.py" + (" --quick" if ns.quick else ""))
    (out / "mixing_cost.json").write_text(json.dumps(dict(settings=settings, rows=rows), indent=1) + "\n")
    print(f"wrote {out / 'mixing_cost.json'}")


if __name__ == "__main__":
    main()
