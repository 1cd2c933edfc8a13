"""The array operations ``gradstop.check_gradients`` needs, in JAX (pytree states welcome: only their
inexact leaves are perturbed and differentiated)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gradstop as gs

__all__ = ["Ops"]


def _inexact(tree):
    return eqx.filter(tree, eqx.is_inexact_array)


class Ops:
    def __init__(self, seed: int):
        self.seed = seed

    @staticmethod
    def require_float64() -> None:
        if not jax.config.jax_enable_x64:
            raise ValueError("check_gradients compares with finite differences in float64, and JAX computes float64 only "
                             "in 64-bit mode: call jax.config.update('jax_enable_x64', True) before building any array "
                             "(or set the environment variable JAX_ENABLE_X64=1); the gradstop CLI does this itself")

    # -- policies ---------------------------------------------------------------------------------
    @staticmethod
    def default_policy(sim, seed: int):
        return gs.jax.mlp(seed, sim.obs_dim, sim.action_dim, hidden=(32, 32), dtype=jnp.float64)

    @staticmethod
    def as_float64(policy):
        return jax.tree.map(lambda v: v.astype(jnp.float64) if eqx.is_inexact_array(v) else v, policy)

    @staticmethod
    def dtype_of(policy):
        return jax.tree.leaves(_inexact(policy))[0].dtype

    def dtype_name(self, policy) -> str:
        return str(self.dtype_of(policy))

    @staticmethod
    def functional(policy):
        params, static = eqx.partition(policy, eqx.is_inexact_array)
        return params, lambda p, o: eqx.combine(p, static)(o)

    # -- states and actions -----------------------------------------------------------------------
    def reset(self, sim, batch: int, dtype):
        return sim.reset(self.seed, batch, dtype=jnp.float64 if dtype == "float64" else dtype)

    @staticmethod
    def cast(x, dtype):
        return jax.tree.map(lambda v: v.astype(dtype) if eqx.is_inexact_array(v) else v, x)

    def visited_state(self, policy, sim, batch: int, steps: int):
        x = self.reset(sim, batch, "float64")
        for _ in range(steps):
            x = sim.step(x, policy(sim.obs(x)))
        return x

    @staticmethod
    def uniform_action(sim, x, batch: int, scale: float, rng):
        return jnp.asarray(rng.uniform(-scale, scale, (batch, sim.action_dim)), jnp.float64)

    # -- the dot-product test's algebra -------------------------------------------------------------
    @staticmethod
    def prepare(fn):
        """``fn`` compiled once: eager JAX would compile each of its primitives for every new shape."""
        return jax.jit(fn)

    @staticmethod
    def vjp(fn, arg):
        """(inexact part of fn(arg), u -> VJP with respect to arg's inexact part)."""
        part, rest = eqx.partition(arg, eqx.is_inexact_array)
        out, pullback = jax.vjp(lambda z: _inexact(fn(eqx.combine(z, rest))), part)
        return out, lambda u: pullback(u)[0]

    @staticmethod
    def randn_like(tree, rng):
        return jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape), v.dtype), _inexact(tree))

    @staticmethod
    def axpy(arg, eps: float, v):
        part, rest = eqx.partition(arg, eqx.is_inexact_array)
        return eqx.combine(jax.tree.map(lambda a, b: a + eps * b, part, v), rest)

    @staticmethod
    def inner(u, y) -> float:
        return float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(_inexact(y)))))

    @staticmethod
    def inner_abs(u, y) -> float:
        return float(sum(jnp.sum(jnp.abs(a * b)) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(_inexact(y)))))

    # -- flows --------------------------------------------------------------------------------------
    @staticmethod
    def flow_gradients(policy, sim, names, horizon: int, x0, impl: str) -> dict[str, np.ndarray]:
        out = jax.jit(lambda p, x: gs.gradients(p, sim, flows=names, horizon=horizon, x0=x, impl=impl).grads)(policy, x0)
        return {k: np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(_inexact(g))])
                for k, g in out.items()}

    @staticmethod
    def loss_directional(policy, sim, horizon: int, x0, rng, eps: float) -> tuple[float, float]:
        """(finite difference, analytic) derivative of the rollout loss along a random parameter direction."""
        params, static = eqx.partition(policy, eqx.is_inexact_array)
        loss = jax.jit(lambda p: gs.rollout(eqx.combine(p, static), sim, horizon=horizon, x0=x0).loss)
        v = jax.tree.map(lambda w: jnp.asarray(rng.standard_normal(w.shape), w.dtype), params)
        grad = jax.grad(loss)(params)
        analytic = float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(v))))
        shifted = [loss(jax.tree.map(lambda p, d, s=s: p + s * eps * d, params, v)) for s in (1.0, -1.0)]
        return float(shifted[0] - shifted[1]) / (2 * eps), analytic
