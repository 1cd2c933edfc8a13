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

__all__ = ["MLP", "mlp", "get_weights", "set_weights"]

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
        zero_last: bool = False) -> MLP:
    """An MLP policy with PyTorch's default initialisation (uniform ±1/√fan_in).

    Args:
      obs_dim, action_dim: input and output sizes (``sim.obs_dim``, ``sim.action_dim``).
      hidden: widths of the hidden layers.
      activation: 'tanh', 'relu' or 'elu'.
      dtype: parameter dtype (default: torch's default dtype).
      seed: seed for the initial weights (default: torch's global generator).
      zero_last: start the last layer's weights and bias at zero, so the initial policy outputs 0
        (the multi-pole cartpole setting of Schnell & Thuerey, ICLR 2024).

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
    policy = MLP(*layers)
    if zero_last:  # drawn first, then zeroed: the hidden layers match a zero_last=False policy's
        with torch.no_grad():
            policy.linears[-1].weight.zero_()
            policy.linears[-1].bias.zero_()
    return policy


def get_weights(policy: MLP) -> list[np.ndarray]:
    """The policy's weights as NumPy arrays [W_0, b_0, W_1, b_1, ...] (W: (out, in))."""
    return [p.detach().cpu().numpy().copy() for lin in policy.linears for p in (lin.weight, lin.bias)]


def set_weights(policy: MLP, weights) -> MLP:
    """Write ``weights`` (as from either backend's ``get_weights``) into ``policy`` in place; returns it."""
    _policy.check_weights(get_weights(policy), weights)
    params = [p for lin in policy.linears for p in (lin.weight, lin.bias)]
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(torch.as_tensor(np.array(w), dtype=p.dtype))
    return policy
