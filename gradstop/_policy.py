"""Framework-neutral pieces of the MLP policies: sizes, activations, weight-list checks."""

from __future__ import annotations

import importlib

import numpy as np

from gradstop._checks import framework_of

ACTIVATIONS = ("tanh", "relu", "elu")
# Initial weight rules: PyTorch's nn.Linear default (W and b uniform ±1/√fan_in), and Keras' Dense default
# (glorot_uniform W, uniform ±√(6/(fan_in + fan_out)), zero b), which the published TensorFlow code used.
WEIGHT_INITS = ("torch", "glorot")
# ... and the orthogonal rule of the published SHAC's critic (rows or columns orthonormal, times a gain; zero b).
SCHEMES = WEIGHT_INITS + ("orthogonal",)
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default


def layer_sizes(obs_dim, action_dim, hidden, activation) -> list[int]:
    """[obs_dim, *hidden, action_dim], validated."""
    hidden = tuple(hidden)
    for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim)) + tuple(("hidden", h) for h in hidden):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"mlp: {name} sizes must be integers ≥ 1, got {value!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp: unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    return [obs_dim, *hidden, action_dim]


def check_weights(own, given) -> None:
    """Raise a ValueError unless ``given`` has the same number and shapes of arrays as ``own``."""
    given = list(given)
    shapes_own = [tuple(w.shape) for w in own]
    shapes_given = [tuple(getattr(w, "shape", ())) for w in given]
    if shapes_own != shapes_given:
        raise ValueError(
            f"weights do not fit this policy: it has arrays of shapes {shapes_own}, got {shapes_given}; "
            "build the policy with the same obs_dim, hidden and action_dim as the source"
        )


def init_weights(sizes: list[int], seed: int, zero_last: bool = False, stream: int = 0, scheme: str = "torch",
                 gain: float = 1.0) -> list[np.ndarray]:
    """Framework-neutral initial weights [W_0, b_0, …] (W: (out, in)) drawn with NumPy, so trainers in JAX
    and PyTorch start from the same policy. ``scheme`` (``SCHEMES``): ``"torch"``, PyTorch's default
    rule (W and b uniform ±1/√fan_in), ``"glorot"``, Keras' default (W uniform ±√(6/(fan_in + fan_out)),
    b = 0), or ``"orthogonal"`` (:func:`orthogonal` times ``gain``, b = 0: the published SHAC's critic,
    Xu et al. 2022). ``stream`` keeps several networks of one seed (actor 0, critic 1) independent."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown weight init {scheme!r}; choose one of {SCHEMES}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9011C7, stream]))
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        if scheme == "orthogonal":
            weights += [gain * orthogonal(rng, n_out, n_in), np.zeros(n_out)]
        elif scheme == "glorot":
            bound = np.sqrt(6.0 / (n_in + n_out))
            weights += [rng.uniform(-bound, bound, (n_out, n_in)), np.zeros(n_out)]
        else:
            bound = 1.0 / np.sqrt(n_in)
            weights += [rng.uniform(-bound, bound, (n_out, n_in)), rng.uniform(-bound, bound, (n_out,))]
    if zero_last:
        weights[-2:] = [np.zeros_like(w) for w in weights[-2:]]
    return weights


def orthogonal(rng, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal rows (rows ≤ cols) or columns (rows > cols): W Wᵀ = I or Wᵀ W = I.

    The QR rule of Saxe et al. (ICLR 2014), as ``torch.nn.init.orthogonal_`` applies it: the Q of a Gaussian
    matrix, its columns' signs fixed by R's diagonal so that Q is uniformly distributed."""
    a = rng.standard_normal((rows, cols) if rows >= cols else (cols, rows))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


def with_layer_norm(weights: list[np.ndarray]) -> list[np.ndarray]:
    """[W_0, b_0, W_1, b_1, …] of an MLP -> the weights of the same MLP with a LayerNorm after each hidden
    activation, at its initial scale 1 and offset 0: [W_0, b_0, g_0, β_0, W_1, b_1, g_1, β_1, …, W_L, b_L]."""
    out = []
    for i in range(0, len(weights), 2):
        out += weights[i:i + 2]
        if i + 2 < len(weights):
            n = len(weights[i + 1])
            out += [np.ones(n), np.zeros(n)]
    return out


def initial_policy_weights(config, sim) -> list[np.ndarray]:
    """A trainer's initial policy weights for ``config`` (the same in both frameworks); with ``actor_layer_norm``
    each hidden layer's LayerNorm at scale 1, offset 0; a Gaussian policy appends its log-std, log(init_std) for
    every action."""
    sizes = layer_sizes(sim.obs_dim, sim.action_dim, config.hidden, config.activation)
    weights = init_weights(sizes, config.seed, config.zero_last, scheme=config.weight_init)
    if getattr(config, "actor_layer_norm", False):
        weights = with_layer_norm(weights)
    if config.policy == "gaussian":
        weights.append(np.full(sim.action_dim, np.log(config.init_std)))
    return weights


def get_weights(policy):
    """A policy's weights as a list of NumPy arrays, whichever framework it lives in."""
    return _backend_of(policy).get_weights(policy)


def copy_weights(src, dst):
    """Copy ``src``'s weights into ``dst`` (either framework to either); returns the updated ``dst``.

    A JAX policy is immutable, so the result must be used: ``dst = gs.copy_weights(src, dst)``.
    """
    return _backend_of(dst).set_weights(dst, get_weights(src))


def _backend_of(policy):
    found = framework_of(policy)
    if found is None:
        raise TypeError(f"cannot tell the framework of a {type(policy).__name__}: pass a gs.jax.mlp or gs.torch.mlp policy")
    return importlib.import_module(f"gradstop.{found}")
