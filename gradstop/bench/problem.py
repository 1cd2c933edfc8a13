"""The problem every timing of gradstop measures: one simulator, an MLP policy, a batch of start states.

``problem(backend, name, batch, **params)`` is shared by the pytest-benchmark grid
(``benchmarks/``) and the paired timing script (``experiments/fused_vs_native.py``), so both
time the same thing: the policy is MLP obs→128→128→action with the same weights in both
frameworks (JAX's initialisation, copied into torch), and the start states come from the
simulator's NumPy twin in float32, so JAX and torch start from identical states. Brax
simulators (JAX only) start from the environment's own reset.
"""

from __future__ import annotations

import numpy as np

__all__ = ["problem"]


def problem(backend: str, name: str, batch: int, hidden=(128, 128), **params):
    """``(sim, policy, x0)`` for ``sims.make(name, backend=backend, **params)`` and ``batch`` start states."""
    import gradstop as gs
    from sims import make

    sim = make(name, backend=backend, **params)
    ref = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=hidden)
    if name.startswith("brax:"):  # its state is the env's own pytree
        return sim, ref, sim.reset(0, batch)
    x0 = np.asarray(make(name, backend="numpy", **params).reset(0, batch), dtype=np.float32)
    if backend == "jax":
        import jax.numpy as jnp

        return sim, ref, jnp.asarray(x0)
    import torch

    return sim, gs.copy_weights(ref, gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=hidden)), torch.as_tensor(x0)
