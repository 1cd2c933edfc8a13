"""``gradstop.precision`` in JAX: every horizon's gradient from one compiled program per dtype.

A horizon-n rollout's loss equals the horizon-H rollout's (H = the longest) with the running costs
after step n masked out and the terminal cost read at x_n; its gradient is the same, since the masked
steps pass back exact zeros. ``n`` is then an argument, not a shape: one compile serves every horizon.
(Where the forward overflows after step n, the zeros can meet inf and give NaN: that horizon is
then reported as non-finite.)
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from gradstop.flows import combine_gradients
from gradstop.gradients import components_of
from gradstop.jax.check import Ops
from gradstop.jax.rollout import _initial_states, _single

__all__ = ["gradients_by_horizon", "require_float64"]

require_float64 = Ops.require_float64


def gradients_by_horizon(policy, sim, flows, horizons, x0, key, batch: int | None, dtype: str) -> dict[str, np.ndarray]:
    """flow -> (len(horizons), P) flat gradients in ``dtype`` (from the float64 x0, cast once)."""
    x0 = _initial_states(Ops.as_float64(policy), sim, None if x0 is None else Ops.cast(x0, jnp.float64), key, batch)
    target = jnp.float64 if dtype == "float64" else jnp.float32
    policy, x0 = Ops.cast(policy, target), Ops.cast(x0, target)
    program = _program(sim, tuple(flows), max(horizons))
    rows = [program(policy, x0, jnp.asarray(n)) for n in horizons]
    return {f.name: np.stack([np.asarray(r[f.name], np.float64) for r in rows]) for f in flows}


@functools.lru_cache(maxsize=16)
def _program(sim, flows: tuple, longest: int):
    """The compiled ``f(policy, x0, n) -> {flow: flat gradient of the horizon-n loss}``, one per (sim, flows,
    longest horizon): later calls with other weights, states or n (same shapes and dtypes) reuse it."""
    components = components_of(list(flows))

    def loss_at(params, static, x0, n, flow):
        out = _single(eqx.combine(params, static), sim, flow, longest, x0)
        costs = jnp.where((jnp.arange(longest) < n)[:, None], out.costs, 0.0)
        x_n = jax.tree.map(lambda v: v[n], out.states)
        return jnp.mean(costs.sum(0) + sim.terminal_cost(x_n))

    @eqx.filter_jit
    def grads(policy, x0, n):
        params, static = eqx.partition(policy, eqx.is_inexact_array)
        by_name = {c.name: jax.grad(loss_at)(params, static, x0, n, c) for c in components}
        out = {}
        for flow in flows:
            if flow.combining:
                g_none, g_input = (by_name[c.name] for c in flow.components())
                g = jax.tree.map(lambda a, b, base=flow.base: combine_gradients(base, a, b, jnp), g_none, g_input)
            else:
                g = by_name[flow.name]
            out[flow.name] = jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(g)])
        return out

    return grads
