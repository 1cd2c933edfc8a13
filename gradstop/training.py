"""BPTT training, framework-neutral front door: ``gradstop.bptt(policy, sim, stop=..., ...)``.

Each iteration samples a batch of initial states, rolls the policy out for ``horizon`` steps, and
applies the flow's gradient with Adam (optax in JAX, torch.optim in PyTorch). The backend is the
sim's; ``gradstop.jax.bptt`` and ``gradstop.torch.bptt`` take the same arguments.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import numpy as np

from gradstop._checks import check_framework, check_horizon
from gradstop.flows import FlowLike, parse_flow

__all__ = ["History", "bptt", "check_train_args"]


class History(NamedTuple):
    """Per-iteration record of a training run (NumPy arrays of length ``iters``).

    Attributes:
      loss: the rollout loss before the update.
      grad_norm: global L2 norm of the flow's gradient (before clipping).
      seconds: wall-clock time since the start of training, compile time included.
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    seconds: np.ndarray


def bptt(policy, sim, *, stop: FlowLike = "none", horizon: int, iters: int, lr: float = 1e-3, batch: int = 16,
         clip_norm: float | None = None, key=0, impl: str = "native", progress: bool = False):
    """Train ``policy`` on ``sim`` by backpropagation through time along the flow ``stop``.

    Args:
      policy: a policy of the sim's framework (``gs.jax.mlp`` / ``gs.torch.mlp``).
      sim: a simulator from ``sims.make``.
      stop: the gradient flow (see ``gradstop.flows``).
      horizon: rollout length H.
      iters: number of Adam updates.
      lr: Adam's learning rate.
      batch: initial states sampled per update.
      clip_norm: clip the gradient's global norm to this value (None: no clipping).
      key: seed (int) of the initial-state sampler; JAX also takes a PRNG key.
      impl: rollout implementation.
      progress: show a progress bar.

    Returns:
      ``(policy, history)``: the trained policy (JAX: a new pytree; torch: the same module,
      updated in place) and a :class:`History`.

    Example::

        policy, hist = gs.bptt(policy, sim, stop="input", horizon=100, iters=200, lr=3e-3)
    """
    check_train_args(stop, horizon, iters, lr, batch, clip_norm)
    check_framework(policy, sim)
    backend = importlib.import_module(f"gradstop.{sim.backend}")
    return backend.bptt(policy, sim, stop=stop, horizon=horizon, iters=iters, lr=lr, batch=batch,
                        clip_norm=clip_norm, key=key, impl=impl, progress=progress)


def check_train_args(stop, horizon, iters, lr, batch, clip_norm) -> None:
    """Validate BPTT's hyperparameters; raises ValueError naming the bad one."""
    parse_flow(stop)
    check_horizon(horizon)
    for name, value in (("iters", iters), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if clip_norm is not None and (not isinstance(clip_norm, (int, float)) or not clip_norm > 0):
        raise ValueError(f"clip_norm must be a positive number or None, got {clip_norm!r}")
