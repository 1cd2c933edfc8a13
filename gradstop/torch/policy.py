"""MLP controller for the PyTorch backend: a plain ``nn.Sequential`` of ``nn.Linear`` layers.

Any ``torch.nn.Module`` mapping (..., obs_dim) to (..., action_dim) works as a policy; this one
mirrors ``gradstop.jax.mlp`` layer for layer, so weights move between frameworks with
:func:`get_weights` / :func:`set_weights`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from gradstop import _policy

__all__ = ["MLP", "mlp", "Gaussian", "gaussian", "get_weights", "set_weights"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


class MLP(nn.Sequential):
    """Multi-layer perceptron mapping a batch of observations (..., obs_dim) to actions (..., action_dim)."""

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    @property
    def in_features(self) -> int:
        return self.linears[0].in_features

    @property
    def out_features(self) -> int:
        return self.linears[-1].out_features


def mlp(obs_dim: int, action_dim: int, hidden=(64, 64), activation: str = "tanh", dtype=None, seed: int | None = None,
        zero_last: bool = False, layer_norm: bool = False) -> MLP:
    """An MLP policy with PyTorch's default initialisation (uniform ±1/√fan_in).

    Args:
      obs_dim, action_dim: input and output sizes (``sim.obs_dim``, ``sim.action_dim``).
      hidden: widths of the hidden layers.
      activation: 'tanh', 'relu' or 'elu'.
      dtype: parameter dtype (default: torch's default dtype).
      seed: seed for the initial weights (default: torch's global generator).
      zero_last: start the last layer's weights and bias at zero, so the initial policy outputs 0
        (the multi-pole cartpole setting of Schnell & Thuerey, ICLR 2024).
      layer_norm: a ``nn.LayerNorm`` (learned scale 1, offset 0 at the start) after each hidden activation,
        as the published SHAC's networks have (Xu et al., ICLR 2022).

    Example::

        policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(64, 64))
    """
    sizes = _policy.layer_sizes(obs_dim, action_dim, hidden, activation)
    fork = torch.random.fork_rng() if seed is not None else contextlib.nullcontext()
    with fork:
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
                if layer_norm:
                    layers.append(nn.LayerNorm(n_out, eps=_policy.LAYER_NORM_EPS, dtype=dtype))
    policy = MLP(*layers)
    if zero_last:  # drawn first, then zeroed: the hidden layers match a zero_last=False policy's
        with torch.no_grad():
            policy.linears[-1].weight.zero_()
            policy.linears[-1].bias.zero_()
    return policy


class Gaussian(nn.Module):
    """Gaussian policy a = μ(o) + exp(log_std) ⊙ ε with reparameterised noise ε ~ N(0, I).

    The noise arrives with the observation: given (..., obs_dim + action_dim) it reads ε from the
    last ``action_dim`` entries (``gradstop.trainers.noise.Noisy`` appends them); given
    (..., obs_dim) it returns the mean action μ(o) (deterministic evaluation).
    """

    def __init__(self, mean: MLP, log_std: torch.Tensor):
        super().__init__()
        self.mean = mean
        self.log_std = nn.Parameter(log_std)

    def forward(self, obs):
        n = self.mean.in_features
        if obs.shape[-1] == n:
            return self.mean(obs)
        return self.mean(obs[..., :n]) + torch.exp(self.log_std) * obs[..., n:]

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


def gaussian(obs_dim: int, action_dim: int, hidden=(64, 64), activation: str = "tanh", dtype=None, seed: int | None = None,
             zero_last: bool = False, init_std: float = 0.5, layer_norm: bool = False) -> Gaussian:
    """A Gaussian policy: :func:`mlp` for the mean (identity output; ``layer_norm`` as there) and a state-independent
    learned log-std (``log init_std``; the published SHAC actor's is −1, Xu et al. 2022)."""
    mean = mlp(obs_dim, action_dim, hidden, activation, dtype, seed, zero_last, layer_norm)
    return Gaussian(mean, torch.full((action_dim,), float(np.log(init_std)), dtype=mean.linears[0].weight.dtype))


def get_weights(policy) -> list[np.ndarray]:
    """The policy's weights as NumPy arrays [W_0, b_0, W_1, b_1, ...] (W: (out, in); with LayerNorms each hidden
    layer's scale and offset follow its bias); a :class:`Gaussian` appends its log-std."""
    if isinstance(policy, Gaussian):
        return get_weights(policy.mean) + [policy.log_std.detach().cpu().numpy().copy()]
    return [p.detach().cpu().numpy().copy() for p in _arrays(policy)]


def _arrays(policy) -> list[torch.Tensor]:
    """The parameters of an :class:`MLP` in ``get_weights`` order (each Linear's weight and bias, each LayerNorm's)."""
    return [p for m in policy if isinstance(m, (nn.Linear, nn.LayerNorm)) for p in (m.weight, m.bias)]


def set_weights(policy, weights):
    """Write ``weights`` (as from either backend's ``get_weights``) into ``policy`` in place; returns it."""
    _policy.check_weights(get_weights(policy), weights)
    if isinstance(policy, Gaussian):
        weights = list(weights)
        set_weights(policy.mean, weights[:-1])
        with torch.no_grad():
            policy.log_std.copy_(torch.as_tensor(np.array(weights[-1]), dtype=policy.log_std.dtype))
        return policy
    params = _arrays(policy)
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(torch.as_tensor(np.array(w), dtype=p.dtype))
    return policy
