"""The fused reverse sweep in JAX: several flows from one forward and one reverse ``lax.scan``.

Forward: one ``lax.scan`` over the horizon that keeps, per step, either the VJP residuals of the
policy and the physics (``memory="residuals"``: ``jax.vjp`` closures are pytrees of arrays, so the
scan stacks them) or only (x_t, a_t) (``memory="recompute"``: each step is re-linearised in the
sweep; memory O(H·(|x|+|a|)) plus one step's activations). The local cost gradients ∂c_t/∂x_{t+1}
and ∂c_t/∂a_t are the same for every flow and are taken in the forward pass.

Reverse: one ``lax.scan`` carrying the adjoints λ of F flows stacked on a leading axis, so each
step is one F-batched VJP through the physics and one through the policy (DESIGN §2)::

    μ_t = ∂c_t/∂a_t + (∂g/∂a)ᵀ λ_{t+1}
    λ_t = ∂c_{t-1}/∂x_t + k_phys·(∂g/∂x)ᵀ λ_{t+1} + k_in·(∂π∘obs/∂x)ᵀ μ_t   (local term at a cut)
    ∇θ += (∂π/∂θ)ᵀ μ_t

No Jacobian is ever formed: every product is a VJP.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from gradstop.flows import Flow
from gradstop.rollout import Rollout

__all__ = ["sweep", "MEMORY_POLICIES"]

MEMORY_POLICIES = ("residuals", "recompute")


def _tree_scale(k, tree):
    return jax.tree.map(lambda v: k.reshape(k.shape + (1,) * (v.ndim - k.ndim)).astype(v.dtype) * v, tree)


def sweep(params, static, sim, flows: tuple[Flow, ...], horizon: int, x0, memory: str = "residuals"):
    """One forward and one reverse sweep for the single-pass ``flows``.

    Args:
      params, static: the policy split by ``eqx.partition(policy, eqx.is_inexact_array)``.
      sim: the simulator.
      flows: F non-combining flows; their adjoints are stacked on a leading axis of size F.
      horizon: H.
      x0: initial states (pytree of (B, ...) arrays).
      memory: 'residuals' or 'recompute'.

    Returns:
      ``(rollout, grads, lam0)``: the forward :class:`Rollout` (values only), the parameter
      gradients with a leading axis F, and the adjoints λ_0 (leading axis F).
    """
    if memory not in MEMORY_POLICIES:
        raise ValueError(f"unknown memory policy {memory!r}; choose one of {MEMORY_POLICIES}")
    F = len(flows)
    k_phys = jnp.asarray([f.k_phys for f in flows])
    k_in = jnp.asarray([f.k_in for f in flows])
    period = np.asarray([f.truncate or 0 for f in flows])
    truncating = bool(period.any())
    batch = jax.tree.leaves(x0)[0].shape[0]

    def act(p, x):
        return eqx.combine(p, static)(sim.obs(x))

    def step_cost(x_next, a):
        # mean over the batch: the loss is a batch mean, so its local gradients carry 1/B
        return jnp.sum(sim.cost(x_next, a)) / batch

    # -- forward ----------------------------------------------------------------------------------
    def forward(x, _):
        if memory == "residuals":
            a, pi_vjp = jax.vjp(act, params, x)
            x_next, g_vjp = jax.vjp(sim.step, x, a)
            saved = (pi_vjp, g_vjp)
        else:
            a = act(params, x)
            x_next = sim.step(x, a)
            saved = (x, a)
        cost = sim.cost(x_next, a)
        cx, ca = jax.grad(step_cost, argnums=(0, 1))(x_next, a)
        return x_next, (x_next, a, cost, cx, ca, saved)

    x_final, (xs, actions, costs, cxs, cas, saved) = jax.lax.scan(forward, x0, None, length=horizon)
    terminal = sim.terminal_cost(x_final)
    tx = jax.grad(lambda x: jnp.sum(sim.terminal_cost(x)) / batch)(x_final)
    states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x0, xs)
    out = Rollout(states, actions, costs, terminal, jnp.mean(costs.sum(0) + terminal))

    # -- reverse ----------------------------------------------------------------------------------
    def stack(tree):
        return jax.tree.map(lambda v: jnp.broadcast_to(v, (F,) + v.shape), tree)

    # local term of λ_t is ∂c_{t-1}/∂x_t: shift cx by one step (zero for t = 0)
    local = jax.tree.map(lambda c: jnp.concatenate([jnp.zeros_like(c[:1]), c[:-1]]), cxs)
    lam_H = stack(jax.tree.map(lambda c, t: c[-1] + t, cxs, tx))
    grads0 = jax.tree.map(lambda p: jnp.zeros((F,) + p.shape, p.dtype), params)

    def backward(carry, inputs):
        lam, grads = carry
        t, ca, loc, res = inputs
        if memory == "residuals":
            pi_vjp, g_vjp = res
        else:
            x, a = res
            _, pi_vjp = jax.vjp(act, params, x)
            _, g_vjp = jax.vjp(sim.step, x, a)
        lam_x, lam_a = jax.vmap(g_vjp)(lam)                    # one F-batched VJP through the physics
        mu = jax.tree.map(lambda c, l: c[None] + l, ca, lam_a)
        g_theta, mu_x = jax.vmap(pi_vjp)(mu)                   # one F-batched VJP through the policy
        grads = jax.tree.map(jnp.add, grads, g_theta)
        lam = jax.tree.map(lambda lo, gx, px: lo[None] + gx + px, loc, _tree_scale(k_phys, lam_x), _tree_scale(k_in, mu_x))
        if truncating:
            cut = jnp.asarray(period > 0) & (t % jnp.maximum(jnp.asarray(period), 1) == 0) & (t > 0)
            lam = jax.tree.map(lambda l, lo: jnp.where(cut.reshape((F,) + (1,) * lo.ndim), lo[None], l), lam, loc)
        return (lam, grads), None

    (lam0, grads), _ = jax.lax.scan(backward, (lam_H, grads0), (jnp.arange(horizon), cas, local, saved), reverse=True)
    return jax.lax.stop_gradient(out), grads, lam0
