"""Several flows' gradients at once in JAX (see ``gradstop.gradients``); jit-compatible."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from gradstop import _checks as front
from gradstop.flows import Flow
from gradstop.gradients import FlowGradients, assemble, components_of
from gradstop.jax import fused
from gradstop.jax.rollout import _footprint, _initial_states, _single

__all__ = ["gradients"]


def gradients(policy, sim, *, flows, horizon: int, x0=None, key=None, batch: int | None = None, impl: str = "fused",
              memory: str = "residuals") -> FlowGradients:
    """JAX twin of :func:`gradstop.gradients` (same arguments); gradients are pytrees like ``policy``."""
    flows = list(flows)
    with front.explained(sim, horizon, lambda: _footprint(policy, sim, x0, batch), front.kept(impl, memory)):
        x0 = _initial_states(policy, sim, x0, key, batch)
        params, static = eqx.partition(policy, eqx.is_inexact_array)
        components = components_of(flows)
        if impl == "fused":
            out, stacked, _ = fused.sweep(params, static, sim, components, horizon, x0, memory)
            by_name = {c.name: jax.tree.map(lambda v, i=i: v[i], stacked) for i, c in enumerate(components)}
        else:
            def loss_of(p, flow):
                return _single(eqx.combine(p, static), sim, flow, horizon, x0).loss

            by_name = {c.name: jax.grad(loss_of)(params, c) for c in components}
            out = _single(eqx.combine(params, static), sim, Flow(), horizon, x0)
    out = jax.lax.stop_gradient(out)
    return assemble(out.loss, flows, by_name, jax.tree.map, jax.tree.leaves, jnp, rollout=out)
