"""The front door: ``gradstop.rollout(policy, sim, stop=..., horizon=...)`` for either framework.

It parses the flow, checks what can be checked without a framework, and hands over to the
backend named by ``sim.backend`` (``gradstop.jax`` or ``gradstop.torch``), whose ``rollout``
has the same signature.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from gradstop._checks import IMPLS, MEMORY_POLICIES, OutOfMemory, check_compile, check_framework, check_horizon, check_impl
from gradstop.flows import FlowLike, parse_flow

__all__ = ["Rollout", "rollout", "IMPLS", "MEMORY_POLICIES", "OutOfMemory"]


class Rollout(NamedTuple):
    """What a rollout returns; arrays are time-major.

    Attributes:
      states: (H+1, B, state_dim), x_0 … x_H.
      actions: (H, B, action_dim), a_0 … a_{H-1}.
      costs: (H, B), the running cost c(x_{t+1}, a_t) of each step.
      terminal: (B,), the terminal cost of x_H (zeros if the task has none).
      loss: scalar, mean over the batch of Σ_t costs + terminal. Its gradient with respect to the
        policy parameters is the flow's update direction.
      mixing: for the zeroth-/α-order flows, a dict of scalars (``gradstop.mixing.STAT_NAMES``): ``alpha``,
        ``bias`` ‖ĝ1 − ĝ0‖, ``eps`` ĝ0's confidence bound ε, ``var0`` and ``var1`` the per-sample variances
        (NaN where a fixed α did not need them); None for every other flow.
    """

    states: Any
    actions: Any
    costs: Any
    terminal: Any
    loss: Any
    mixing: Any = None


def rollout(policy, sim, *, stop: FlowLike = "none", horizon: int, x0=None, key=None, batch: int | None = None,
            impl: str = "native", memory: str = "residuals", compile: bool = False, noise=None) -> Rollout:
    """Roll ``policy`` out in ``sim`` for ``horizon`` steps; the loss's gradient is the flow ``stop``.

        o_t = obs(x_t),  a_t = π(o_t),  x_{t+1} = g(x_t, a_t),  L = mean_B[Σ_t c(x_{t+1}, a_t) + c_H(x_H)]

    Args:
      policy: JAX: a callable pytree (``gs.jax.mlp``, any equinox module); torch: an
        ``nn.Module`` (``gs.torch.mlp``). Maps (B, obs_dim) observations to (B, action_dim) actions.
      sim: a simulator from ``sims.make``; its ``backend`` picks the framework.
      stop: the gradient flow, a string (``"input"``, ``"input+decay:0.9"``, …) or ``gradstop.Flow``.
      horizon: number of steps H ≥ 1.
      x0: initial states (B, state_dim), same dtype as the policy; if None, sampled with ``key``.
      key: JAX: PRNG key or int seed; torch: int seed or ``torch.Generator`` (None: global RNG).
      batch: number of initial states to sample when ``x0`` is None (default 1); with ``x0``, omit it (or give
        x0's own batch size).
      impl: 'native' (the framework's autodiff with stop_gradient/detach on the cut edges) or
        'fused' (one forward and one reverse sweep of per-step VJPs, see ``gradstop.gradients``).
      memory: for ``impl='fused'``: 'residuals' keeps each step's VJP residuals (fastest),
        'recompute' keeps only (x_t, a_t) and re-linearises each step in the reverse sweep.
      compile: PyTorch only: the fast path (``gradstop.torch.compiled``). The forward and reverse
        sweeps run as two ``torch.compile``d loops (one compile for every H ≥ 2, about 10–30 s
        the first time); ``memory`` is then always 'recompute'. Same gradients as eager.
      noise: the zeroth-/α-order flows (``zero``, ``alpha:α``, ``alpha:auto``) only: standard-normal draws of
        shape (2, N, H, B, action_dim), ĝ0's then ĝ1's (N = the flow's ``samples``); the flow scales them by σ.
        None: drawn from ``key`` (JAX: required then; torch: None uses the global RNG).

    Raises:
      OutOfMemory: (a ``MemoryError``) the framework ran out of memory; the message estimates what the reverse
        sweep keeps and names the fixes (``impl='fused', memory='recompute'``, a smaller batch or horizon).

    Returns:
      A :class:`Rollout`. For the combining flows (``combined``, ``directional``), and for every
      flow with ``impl='fused'``, only ``loss`` carries gradient; the other fields are cut from
      the graph. For the zeroth-/α-order flows the fields are the noise-free rollout's (its loss's value
      is the policy's cost without noise), the loss's gradient is ĝα (``gradstop.mixing``), x0 gets none,
      and ``mixing`` holds α and the statistics it was chosen from.

    Example::

        out = gs.rollout(policy, sim, stop="input", horizon=100, key=0)
        grads = jax.grad(lambda p: gs.rollout(p, sim, stop="combined", horizon=100, x0=x0).loss)(policy)
    """
    flow = parse_flow(stop)
    check_horizon(horizon)
    check_impl(impl, memory)
    check_framework(policy, sim)
    check_compile(compile, sim.backend)
    backend = importlib.import_module(f"gradstop.{sim.backend}")
    fast = {"compile": True} if compile else {}
    return backend.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, key=key, batch=batch, impl=impl, memory=memory,
                           noise=noise, **fast)
