"""The zeroth- and α-order flows in JAX (``zero``, ``alpha:α``, ``alpha:auto``; see ``gradstop.mixing``).

One noise-free rollout gives the loss's value and V_0; the M = B·N rollouts with noise w (values only)
give ĝ0's coefficients and observations; the M rollouts with noise w' give ĝ1 through the first-order
flow, in whichever implementation the rollout was asked for (native or fused). A fixed α attaches
α·L1 + (1 − α)·S0, where L1 is the noisy rollouts' loss and S0 = (1/M) Σ_i c_i Σ_h ⟨π(o_{i,h}), w_{i,h}⟩ the
score surrogate, c_i = (V(w_i) − V_0)/σ² a constant: its gradient is ĝα and needs no per-sample
gradients. ``alpha:auto`` needs them (for σ0² and σ1²): both estimators run per sample under
``jax.vmap`` and the update ⟨sg(ĝα), θ − sg(θ)⟩ is attached to the loss.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from gradstop import mixing as neutral
from gradstop.flows import Flow

__all__ = ["rollout", "draw_noise"]


def draw_noise(flow, horizon: int, batch: int, action_dim: int, key, dtype):
    """Standard-normal draws for a mixing flow: (2, N, H, B, action_dim), ĝ0's first, ĝ1's second."""
    shape = (2, flow.mixing.samples, horizon, batch, action_dim)
    return jax.random.normal(key, shape, dtype)


def rollout(policy, sim, flow, horizon: int, x0, noise, first_order):
    """The mixing flow's Rollout: the noise-free rollout's fields, a loss whose gradient is ĝα, and ``mixing``.

    ``first_order(policy, sim, flow, x0)`` is the backend's rollout of a first-order flow (the requested impl).
    """
    mix = flow.mixing
    params, static = eqx.partition(policy, eqx.is_inexact_array)
    x0 = jax.lax.stop_gradient(x0)
    batch = jax.tree.leaves(x0)[0].shape[0]
    m = neutral.check_samples(flow, batch)
    noisy = neutral.ActionNoise(sim, horizon, jnp.concatenate)
    repeated = jax.tree.map(lambda v: jnp.concatenate([v] * mix.samples, 0), x0)  # row n·B + b starts at x0[b]
    w = mix.sigma * noise.astype(_dtype(params))

    def rows(g):  # (N, H, B, a) -> (M, H, a), row n·B + b
        return jnp.swapaxes(w[g], 1, 2).reshape(m, horizon, sim.action_dim)

    base = jax.lax.stop_gradient(first_order(policy, sim, Flow(), x0))
    v0 = jnp.concatenate([base.costs.sum(0) + base.terminal] * mix.samples, 0)
    nan = jnp.asarray(jnp.nan, base.loss.dtype)

    if mix.needs_zeroth_order:
        w0 = rows(0)
        r0 = jax.lax.stop_gradient(first_order(policy, noisy, Flow(), noisy.wrap(repeated, w0)))
        obs = jax.lax.stop_gradient(jax.vmap(noisy.obs)(jax.tree.map(lambda v: v[:-1], r0.states)))  # (H, M, o)
        coef = (r0.costs.sum(0) + r0.terminal - v0) / mix.sigma**2  # (M,)
        w0_t = jnp.swapaxes(w0, 0, 1)  # (H, M, a)

    if mix.needs_first_order:
        start1 = noisy.wrap(repeated, rows(1))

    if not mix.auto:
        alpha = mix.alpha
        loss = base.loss
        if alpha > 0.0:
            l1 = first_order(policy, noisy, flow.first_order, start1).loss
            loss = loss + alpha * (l1 - jax.lax.stop_gradient(l1))
        if alpha < 1.0:
            s0 = jnp.mean(coef * jnp.sum(jax.vmap(policy)(obs) * w0_t, (0, 2)))
            loss = loss + (1.0 - alpha) * (s0 - jax.lax.stop_gradient(s0))
        stats = dict(alpha=jnp.asarray(alpha, base.loss.dtype), bias=nan, eps=nan, var0=nan, var1=nan)
        return base._replace(loss=loss, mixing=stats)

    def score(p, o_i, w_i, c_i):  # c_i Σ_h ⟨π(o_{i,h}), w_{i,h}⟩ of one sample; o_i (H, o), w_i (H, a)
        return c_i * jnp.sum(eqx.combine(p, static)(o_i) * w_i)

    def path(p, start_i):  # V of one noisy sample through the first-order flow
        one = jax.tree.map(lambda v: v[None], start_i)
        return first_order(eqx.combine(p, static), noisy, flow.first_order, one).loss

    g0s = jax.vmap(jax.grad(score), in_axes=(None, 1, 1, 0))(params, obs, w0_t, coef)
    g1s = jax.vmap(jax.grad(path), in_axes=(None, 0))(params, start1)
    leaves0, leaves1 = jax.tree.leaves(g0s), jax.tree.leaves(g1s)
    g0 = [v.mean(0) for v in leaves0]
    g1 = [v.mean(0) for v in leaves1]
    var0, var1 = neutral.spread(leaves0, g0, jnp), neutral.spread(leaves1, g1, jnp)
    bias = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(g1, g0)))
    dim = sum(math.prod(v.shape) for v in jax.tree.leaves(params))
    eps = neutral.bernstein_bound(var0, m, dim, mix.bound, mix.delta, jnp)
    alpha = jax.lax.stop_gradient(neutral.choose_alpha(var0, var1, bias, eps, mix.tol, jnp))
    g = [jax.lax.stop_gradient(alpha * a + (1.0 - alpha) * b) for a, b in zip(g1, g0)]
    attach = sum(jnp.vdot(gi, p - jax.lax.stop_gradient(p)) for gi, p in zip(g, jax.tree.leaves(params)))
    stats = jax.lax.stop_gradient(dict(alpha=alpha, bias=bias, eps=eps, var0=var0, var1=var1))
    # the attached update reaches the parameters of the policy the caller differentiates
    return base._replace(loss=base.loss + attach, mixing=stats)


def _dtype(params):
    leaves = jax.tree.leaves(params)
    return leaves[0].dtype if leaves else jnp.zeros(()).dtype
