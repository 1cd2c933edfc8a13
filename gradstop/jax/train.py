"""BPTT in JAX: one jitted update (sample x0, rollout gradient along the flow, optax Adam)."""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import trange

from gradstop.rollout import rollout
from gradstop.training import History, check_train_args

__all__ = ["bptt"]


def bptt(policy, sim, *, stop="none", horizon: int, iters: int, lr: float = 1e-3, batch: int = 16,
         clip_norm: float | None = None, key=0, impl: str = "native", progress: bool = False):
    """JAX twin of :func:`gradstop.bptt` (same arguments); returns ``(new_policy, history)``."""
    check_train_args(stop, horizon, iters, lr, batch, clip_norm)
    params, static = eqx.partition(policy, eqx.is_inexact_array)
    dtype = jax.tree.leaves(params)[0].dtype
    optimizer = optax.adam(lr)
    if clip_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
    opt_state = optimizer.init(params)

    @jax.jit
    def update(params, opt_state, key):
        def loss_fn(p):
            x0 = sim.reset(key, batch, dtype=dtype)
            return rollout(eqx.combine(p, static), sim, stop=stop, horizon=horizon, x0=x0, impl=impl).loss

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, _global_norm(grads)

    key = jax.random.key(key) if isinstance(key, int) else key
    losses, norms, seconds = np.empty(iters), np.empty(iters), np.empty(iters)
    start = time.perf_counter()
    bar = trange(iters, desc=f"bptt[{stop}]", disable=not progress, leave=False)
    for i in bar:
        key, sub = jax.random.split(key)
        params, opt_state, loss, norm = update(params, opt_state, sub)
        losses[i], norms[i] = float(loss), float(norm)  # float() blocks until the update is done
        seconds[i] = time.perf_counter() - start
        bar.set_postfix(loss=f"{losses[i]:.4g}", refresh=False)
    return eqx.combine(params, static), History(losses, norms, seconds)


def _global_norm(tree):
    # spelled out: optax renamed its helper across versions (global_norm, tree_l2_norm, tree_norm)
    return jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(tree)))
