"""MLP controller for the JAX backend: an equinox module, so it is a pytree of its weights.

``jax.grad`` differentiates it directly (its only non-array field is static), and optax updates it
like any parameter tree. Weights are stored (in, out), as in flax, so a layer is ``h @ w + b``:
with the transposed (out, in) layout XLA's CPU backend copies a transpose of every weight matrix
on every step of a scan (measured: 3-6× slower forward at batch 1). :func:`get_weights` and
:func:`set_weights` speak ``torch.nn.Linear``'s (out, in) layout, so weights move between
frameworks unchanged.
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from gradstop import _policy
from gradstop._checks import check_key

__all__ = ["MLP", "mlp", "Gaussian", "gaussian", "get_weights", "set_weights"]

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "elu": jax.nn.elu}


class MLP(eqx.Module):
    """Multi-layer perceptron mapping a batch of observations (..., obs_dim) to actions (..., action_dim).

    ``norms`` (empty, or one (scale, offset) pair per hidden layer): a LayerNorm after each hidden
    activation, as ``torch.nn.LayerNorm`` computes it (biased variance, ε = 1e-5)."""

    weights: tuple
    biases: tuple
    activation: str = eqx.field(static=True, default="tanh")
    norms: tuple = ()

    def __call__(self, obs):
        act = _ACTIVATIONS[self.activation]
        h = obs
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = act(h)
                if self.norms:
                    h = _layer_norm(h, *self.norms[i])
        return h

    @property
    def in_features(self) -> int:
        return self.weights[0].shape[0]

    @property
    def out_features(self) -> int:
        return self.weights[-1].shape[1]


def _layer_norm(h, scale, offset):
    mean = jnp.mean(h, -1, keepdims=True)
    var = jnp.mean((h - mean) ** 2, -1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + _policy.LAYER_NORM_EPS) * scale + offset


def mlp(key, obs_dim: int, action_dim: int, hidden=(64, 64), activation: str = "tanh", dtype=None,
        zero_last: bool = False, layer_norm: bool = False) -> MLP:
    """An MLP policy with PyTorch's default initialisation (uniform ±1/√fan_in).

    Args:
      key: a JAX PRNG key or int seed.
      obs_dim, action_dim: input and output sizes (``sim.obs_dim``, ``sim.action_dim``).
      hidden: widths of the hidden layers.
      activation: 'tanh', 'relu' or 'elu'.
      dtype: parameter dtype (default: JAX's default float).
      zero_last: start the last layer's weights and bias at zero, so the initial policy outputs 0
        (the multi-pole cartpole setting of Schnell & Thuerey, ICLR 2024).
      layer_norm: a LayerNorm (learned scale 1, offset 0 at the start) after each hidden activation,
        as the published SHAC's networks have (Xu et al., ICLR 2022).

    Example::

        policy = gs.jax.mlp(jax.random.key(0), sim.obs_dim, sim.action_dim, hidden=(64, 64))
    """
    sizes = _policy.layer_sizes(obs_dim, action_dim, hidden, activation)
    check_key(key)
    key = jax.random.key(int(key)) if isinstance(key, numbers.Integral) else key
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    weights, biases = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / np.sqrt(n_in)
        weights.append(jax.random.uniform(kw, (n_out, n_in), dtype, -bound, bound).T)
        biases.append(jax.random.uniform(kb, (n_out,), dtype, -bound, bound))
    if zero_last:  # drawn first, then zeroed: the hidden layers match a zero_last=False policy's
        weights[-1], biases[-1] = jnp.zeros_like(weights[-1]), jnp.zeros_like(biases[-1])
    norms = tuple((jnp.ones(n, dtype), jnp.zeros(n, dtype)) for n in sizes[1:-1]) if layer_norm else ()
    return MLP(tuple(weights), tuple(biases), activation, norms)


class Gaussian(eqx.Module):
    """Gaussian policy a = μ(o) + exp(log_std) ⊙ ε with reparameterised noise ε ~ N(0, I).

    The noise arrives with the observation: given (..., obs_dim + action_dim) it reads ε from the
    last ``action_dim`` entries (``gradstop.trainers.noise.Noisy`` appends them); given
    (..., obs_dim) it returns the mean action μ(o) (deterministic evaluation).
    """

    mean: MLP
    log_std: jax.Array

    def __call__(self, obs):
        n = self.mean.in_features
        if obs.shape[-1] == n:
            return self.mean(obs)
        return self.mean(obs[..., :n]) + jnp.exp(self.log_std) * obs[..., n:]

    @property
    def in_features(self) -> int:
        return self.mean.in_features

    @property
    def noise_features(self) -> int:
        """Observations may carry this many noise entries after the ``in_features`` observation ones."""
        return self.mean.out_features

    @property
    def out_features(self) -> int:
        return self.mean.out_features


def gaussian(key, obs_dim: int, action_dim: int, hidden=(64, 64), activation: str = "tanh", dtype=None,
             zero_last: bool = False, init_std: float = 0.5, layer_norm: bool = False) -> Gaussian:
    """A Gaussian policy: :func:`mlp` for the mean (identity output; ``layer_norm`` as there) and a state-independent
    learned log-std (``log init_std``; the published SHAC actor's is −1, Xu et al. 2022)."""
    mean = mlp(key, obs_dim, action_dim, hidden, activation, dtype, zero_last, layer_norm)
    return Gaussian(mean, jnp.full((action_dim,), np.log(init_std), mean.weights[0].dtype))


def get_weights(policy) -> list[np.ndarray]:
    """The policy's weights as NumPy arrays [W_0, b_0, W_1, b_1, ...] (W: (out, in), torch's layout; with
    LayerNorms each hidden layer's scale and offset follow its bias); a :class:`Gaussian` appends its log-std."""
    if isinstance(policy, Gaussian):
        return get_weights(policy.mean) + [np.asarray(policy.log_std)]
    norms = policy.norms or ((),) * (len(policy.weights) - 1)
    return [np.asarray(a) for w, b, n in zip(policy.weights, policy.biases, norms + ((),)) for a in (w.T, b, *n)]


def set_weights(policy, weights):
    """A copy of ``policy`` holding ``weights`` (as from either backend's ``get_weights``), cast to its dtype."""
    if isinstance(policy, Gaussian):
        _policy.check_weights(get_weights(policy), weights)
        weights = list(weights)
        return Gaussian(set_weights(policy.mean, weights[:-1]), jnp.asarray(np.asarray(weights[-1]), policy.log_std.dtype))
    _policy.check_weights(get_weights(policy), weights)
    dtype = policy.weights[0].dtype
    arrays = [jnp.asarray(np.asarray(w), dtype=dtype) for w in weights]
    if policy.norms:  # [W, b, scale, offset] per hidden layer, then [W, b]
        hidden, last = [arrays[i:i + 4] for i in range(0, len(arrays) - 2, 4)], arrays[-2:]
        return MLP(tuple(layer[0].T for layer in hidden) + (last[0].T,), tuple(layer[1] for layer in hidden) + (last[1],),
                   policy.activation, tuple((layer[2], layer[3]) for layer in hidden))
    return MLP(tuple(w.T for w in arrays[0::2]), tuple(arrays[1::2]), policy.activation)
