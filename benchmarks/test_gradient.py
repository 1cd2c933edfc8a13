"""Time (and, in JAX, compiled memory) of one gradient: framework × impl × flow × horizon × batch.

    pytest benchmarks --benchmark-json out.json          # the whole grid
    pytest benchmarks --quick --benchmark-disable        # smoke test

Sim: ``neural`` (state 12, control 6, hidden 128: the published efficiency benchmark's shape),
policy MLP 12→128→128→6, float32, the same weights in both frameworks. ``flow`` ``none+input``
is the pair from ``gs.gradients`` (native: two autodiff passes; fused: one sweep). JAX is timed
jitted with ``block_until_ready``; its compile time and XLA's compiled temp memory
(``memory_analysis``) go into ``extra_info``. torch is eager. Tests never assert on time.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import gradstop as gs
from sims import make

HORIZONS = [1, 10, 25, 50, 100, 150]
BATCHES = [1, 256]
FLOWS = ["none", "input", "combined", "none+input"]


def grid(test):
    """The benchmark grid, shared by both frameworks' tests."""
    for mark in (pytest.mark.parametrize("impl", ["native", "fused"]),
                 pytest.mark.parametrize("flow", FLOWS),
                 pytest.mark.parametrize("horizon", HORIZONS, ids=[f"H{h}" for h in HORIZONS]),
                 pytest.mark.parametrize("batch", BATCHES, ids=[f"b{b}" for b in BATCHES])):
        test = mark(test)
    return test


def _problem(backend, batch):
    sim = make("neural", backend=backend)
    ref = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(128, 128))
    x0 = np.asarray(make("neural", backend="numpy").reset(0, batch), dtype=np.float32)
    if backend == "jax":
        import jax.numpy as jnp

        return sim, ref, jnp.asarray(x0)
    import torch

    return sim, gs.copy_weights(ref, gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(128, 128))), torch.as_tensor(x0)


def _jax_fn(sim, flow, horizon, impl):
    import jax

    if flow == "none+input":
        return lambda p, x0: gs.gradients(p, sim, flows=["none", "input"], horizon=horizon, x0=x0, impl=impl).grads
    return jax.grad(lambda p, x0: gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x0, impl=impl).loss)


@grid
def test_jax(benchmark, batch, horizon, flow, impl):
    import jax

    sim, policy, x0 = _problem("jax", batch)
    fn = jax.jit(_jax_fn(sim, flow, horizon, impl))
    start = time.perf_counter()
    compiled = fn.lower(policy, x0).compile()
    jax.block_until_ready(compiled(policy, x0))
    benchmark.extra_info.update(framework="jax", impl=impl, flow=flow, horizon=horizon, batch=batch,
                                compile_s=time.perf_counter() - start,
                                memory_bytes=compiled.memory_analysis().temp_size_in_bytes,
                                memory_method="XLA compiled memory_analysis().temp_size_in_bytes")
    benchmark(lambda: jax.block_until_ready(compiled(policy, x0)))


@grid
def test_torch(benchmark, batch, horizon, flow, impl):
    sim, policy, x0 = _problem("torch", batch)

    def one_gradient():
        if flow == "none+input":
            return gs.gradients(policy, sim, flows=["none", "input"], horizon=horizon, x0=x0, impl=impl).grads
        policy.zero_grad(set_to_none=True)
        gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl=impl).loss.backward()

    one_gradient()  # warm-up
    benchmark.extra_info.update(framework="torch", impl=impl, flow=flow, horizon=horizon, batch=batch)
    benchmark(one_gradient)
