"""BPTT in one call, framework-neutral front door: ``gradstop.bptt(policy, sim, stop=..., ...)``.

A thin wrapper over :func:`gradstop.trainers.train` for interactive use: fresh initial states
every update, no files. For fixed training/test sets, evaluation, schedules, checkpoints and
resume, build a :class:`gradstop.trainers.TrainConfig` and call ``gradstop.trainers.train``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gradstop._checks import check_framework
from gradstop.flows import FlowLike, parse_flow

__all__ = ["History", "bptt"]


class History(NamedTuple):
    """Per-update record of a :func:`bptt` run (NumPy arrays of length ``iters``).

    Attributes:
      loss: the rollout loss before the update.
      grad_norm: global L2 norm of the flow's gradient (before clipping).
      seconds: cumulative wall-clock time of training at each update (compile time excluded).
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    seconds: np.ndarray


def bptt(policy, sim, *, stop: FlowLike = "none", horizon: int, iters: int, lr: float = 1e-3, batch: int = 16,
         clip_norm: float | None = None, key: int = 0, impl: str = "native", progress: bool = False, **options):
    """Train ``policy`` on ``sim`` by backpropagation through time along the flow ``stop``.

    Args:
      policy: a policy of the sim's framework (``gs.jax.mlp`` / ``gs.torch.mlp``).
      sim: a simulator: ``sims.make(...)``, or any object with the protocol (docs/simulators.md).
      stop: the gradient flow (see ``gradstop.flows``).
      horizon: rollout length H.
      iters: number of updates.
      lr: learning rate.
      batch: initial states sampled per update.
      clip_norm: clip the gradient's global norm to this value (None: no clipping).
      key: int seed of the initial-state sampler.
      impl: rollout implementation.
      progress: show a progress bar.
      **options: any other :class:`gradstop.trainers.TrainConfig` field (``optimizer="sgd"``,
        ``schedule="cosine"``, ``clip_value=1.0``, …).

    Returns:
      ``(policy, history)``: the trained policy (JAX: a new pytree; torch: the same module,
      updated in place) and a :class:`History`.

    Example::

        policy, hist = gs.bptt(policy, sim, stop="input", horizon=100, iters=200, lr=3e-3)
    """
    from gradstop._policy import get_weights
    from gradstop.trainers import TrainConfig, train

    check_framework(policy, sim)
    if isinstance(key, bool) or not isinstance(key, int):
        raise ValueError(f"key must be an int seed, got {key!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer ≥ 1, got {iters!r}")
    dtype = str(get_weights(policy)[0].dtype)
    config = TrainConfig(dtype=dtype if dtype in ("float32", "float64") else "float32", sim=getattr(sim, "name", type(sim).__name__), backend=sim.backend, flow=parse_flow(stop).name, impl=impl, horizon=horizon,
                         data="fresh", batch=batch, updates_per_epoch=1, epochs=iters, eval_every=iters, lr=lr,
                         clip_norm=clip_norm, seed=key, test_size=1, **options)
    result = train(config, policy=policy, sim=sim, progress=progress)
    column = {k: np.asarray([float(u[k]) for u in result.updates]) for k in ("loss", "grad_norm", "seconds")}
    return result.policy, History(column["loss"], column["grad_norm"], column["seconds"])
