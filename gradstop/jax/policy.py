"""MLP controller for the JAX backend: an equinox module, so it is a pytree of its weights.

``jax.grad`` differentiates it directly (its only non-array field is static), and optax updates it
like any parameter tree. Weights are stored (in, out), as in flax, so a layer is ``h @ w + b``:
with the transposed (out, in) layout XLA's CPU backend copies a transpose of every weight matrix
on every step of a scan (measured: 3-6× slower forward at batch 1). :func:`get_weights` and
:func:`set_weights` speak ``torch.nn.Linear``'s (out, in) layout, so weights move between
frameworks unchanged.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from gradstop import _policy

__all__ = ["MLP", "mlp", "get_weights", "set_weights"]

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "elu": jax.nn.elu}


class MLP(eqx.Module):
    """Multi-layer perceptron mapping a batch of observations (..., obs_dim) to actions (..., action_dim)."""

    weights: tuple
    biases: tuple
    activation: str = eqx.field(static=True, default="tanh")

    def __call__(self, obs):
        act = _ACTIVATIONS[self.activation]
        h = obs
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = act(h)
        return h

    @property
    def in_features(self) -> int:
        return self.weights[0].shape[0]

    @property
    def out_features(self) -> int:
        return self.weights[-1].shape[1]


def mlp(key, obs_dim: int, action_dim: int, hidden=(64, 64), activation: str = "tanh", dtype=None,
        zero_last: bool = False) -> MLP:
    """An MLP policy with PyTorch's default initialisation (uniform ±1/√fan_in).

    Args:
      key: a JAX PRNG key or int seed.
      obs_dim, action_dim: input and output sizes (``sim.obs_dim``, ``sim.action_dim``).
      hidden: widths of the hidden layers.
      activation: 'tanh', 'relu' or 'elu'.
      dtype: parameter dtype (default: JAX's default float).
      zero_last: start the last layer's weights and bias at zero, so the initial policy outputs 0
        (the multi-pole cartpole setting of Schnell & Thuerey, ICLR 2024).

    Example::

        policy = gs.jax.mlp(jax.random.key(0), sim.obs_dim, sim.action_dim, hidden=(64, 64))
    """
    sizes = _policy.layer_sizes(obs_dim, action_dim, hidden, activation)
    key = jax.random.key(key) if isinstance(key, int) else key
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    weights, biases = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / np.sqrt(n_in)
        weights.append(jax.random.uniform(kw, (n_out, n_in), dtype, -bound, bound).T)
        biases.append(jax.random.uniform(kb, (n_out,), dtype, -bound, bound))
    if zero_last:  # drawn first, then zeroed: the hidden layers match a zero_last=False policy's
        weights[-1], biases[-1] = jnp.zeros_like(weights[-1]), jnp.zeros_like(biases[-1])
    return MLP(tuple(weights), tuple(biases), activation)


def get_weights(policy: MLP) -> list[np.ndarray]:
    """The policy's weights as NumPy arrays [W_0, b_0, W_1, b_1, ...] (W: (out, in), torch's layout)."""
    return [np.asarray(a) for w, b in zip(policy.weights, policy.biases) for a in (w.T, b)]


def set_weights(policy: MLP, weights) -> MLP:
    """A copy of ``policy`` holding ``weights`` (as from either backend's ``get_weights``), cast to its dtype."""
    _policy.check_weights(get_weights(policy), weights)
    dtype = policy.weights[0].dtype
    arrays = [jnp.asarray(np.asarray(w), dtype=dtype) for w in weights]
    return MLP(tuple(w.T for w in arrays[0::2]), tuple(arrays[1::2]), policy.activation)
