"""``gradstop.diagnose`` in JAX: the fused sweep with ``trace=True``, jitted (see ``gradstop.diagnose``)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from gradstop import _checks as front
from gradstop.gradients import assemble
from gradstop.jax import fused
from gradstop.jax.rollout import _footprint, _initial_states

__all__ = ["trace", "traced_sweep"]


def traced_sweep(policy, sim, components, horizon: int, memory: str = "residuals", contributions: bool = True):
    """A jitted ``f(params, x0) -> (rollout, grads (leading axis F), record)``; ``params`` as
    ``eqx.partition(policy, eqx.is_inexact_array)[0]``."""
    static = eqx.partition(policy, eqx.is_inexact_array)[1]

    @jax.jit
    def run(params, x0):
        out, grads, _, record = fused.sweep(params, static, sim, tuple(components), horizon, x0, memory, trace=True,
                                           contributions=contributions)
        return out, grads, record

    return run


def trace(policy, sim, *, flows, components, horizon: int, x0=None, key=None, batch: int | None = None,
          memory: str = "residuals", contributions: bool = True):
    """``(loss, grads by requested flow, flat gradient vectors by component, record, rollout)``, as NumPy
    where ``gradstop.diagnose`` reads them."""
    with front.explained(sim, horizon, lambda: _footprint(policy, sim, x0, batch), memory):
        x0 = _initial_states(policy, sim, x0, key, batch)
        params = eqx.partition(policy, eqx.is_inexact_array)[0]
        out, stacked, record = traced_sweep(policy, sim, components, horizon, memory, contributions)(params, x0)
    by_name = {c.name: jax.tree.map(lambda v, i=i: v[i], stacked) for i, c in enumerate(components)}
    flat = {name: np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(g)]) for name, g in by_name.items()}
    grads = assemble(out.loss, list(flows), by_name, jax.tree.map, jax.tree.leaves, jnp).grads
    return float(out.loss), grads, flat, {k: np.asarray(v) for k, v in record.items()}, out
