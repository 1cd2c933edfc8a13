"""Fitting the world model's MLP in JAX: Adam (optax) on minibatches, one jitted ``lax.scan`` per epoch."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradstop import _policy
from gradstop.jax.policy import get_weights, mlp, set_weights
from gradstop.trainers.world_model import batches_of

__all__ = ["fit_mlp"]


def fit_mlp(inputs: np.ndarray, target: np.ndarray, config) -> list[np.ndarray]:
    """Fit an MLP inputs -> target (mean squared error); its weights as [W_0 (out, in), b_0, …]."""
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    hidden = (config.model_hidden, config.model_hidden)
    net = mlp(config.seed, inputs.shape[1], target.shape[1], hidden=hidden, dtype=dtype)
    net = set_weights(net, _policy.init_weights(_policy.layer_sizes(inputs.shape[1], target.shape[1], hidden, "tanh"),
                                                config.seed, stream=2))
    params, static = eqx.partition(net, eqx.is_inexact_array)
    tx = optax.adam(config.model_lr)
    X, Y = jnp.asarray(inputs, dtype), jnp.asarray(target, dtype)

    def mse(p, idx):
        return jnp.mean((eqx.combine(p, static)(X[idx]) - Y[idx]) ** 2)

    @jax.jit
    def epoch(params, opt_state, batches):
        def step(carry, idx):
            p, s = carry
            loss, g = jax.value_and_grad(mse)(p, idx)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state

    state = (params, tx.init(params))
    for e in range(config.model_epochs):
        state = epoch(*state, jnp.asarray(batches_of(len(inputs), config.model_batch, config.seed, e)))
    return get_weights(eqx.combine(state[0], static))

