"""A fixed random MLP as a differentiable "simulator": the shape of the published efficiency benchmark.

    x' = x + dt·clip(MLP([x, a]), −clip, clip)

State 12, control 6, two hidden layers of 128 tanh units by default. The weights come from a
NumPy generator seeded with ``seed``, so the JAX and torch twins hold the same network.
Cost of one step: ‖x'‖² + effort·‖a‖².
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sims.base import Sim, non_negative, positive


@dataclasses.dataclass(frozen=True, eq=False)
class Neural(Sim):
    """Random-MLP dynamics x' = x + dt·clip(MLP([x, a])).

    Args:
      backend: 'jax' or 'torch' ('numpy': forward simulation only).
      state: state dimension (12).
      control: action dimension (6).
      hidden: hidden layer width (128); two hidden layers.
      dt: time step (0.1).
      clip: bound on the MLP's output (1.0).
      effort: weight of ‖a‖² in the cost.
      seed: seed of the weights.
    """

    state: int = 12
    control: int = 6
    hidden: int = 128
    dt: float = 0.1
    clip: float = 1.0
    effort: float = 0.01
    seed: int = 0

    name = "neural"

    def __post_init__(self):
        super().__post_init__()
        for key in ("state", "control", "hidden", "seed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
                raise ValueError(f"neural: {key} must be an integer ≥ {0 if key == 'seed' else 1}, got {value!r}")
        positive(self, clip=self.clip)
        non_negative(self, effort=self.effort)
        rng = np.random.default_rng(self.seed)
        sizes = [self.state + self.control, self.hidden, self.hidden, self.state]
        layers = tuple(
            (rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_in, n_out)), rng.normal(0.0, 0.1, n_out))
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )
        object.__setattr__(self, "_layers", layers)

    @property
    def state_dim(self) -> int:
        return self.state

    @property
    def action_dim(self) -> int:
        return self.control

    def step(self, x, a):
        return mlp_step(self, self._layers, x, a)

    def cost(self, x_next, a):
        return (x_next * x_next).sum(-1) + self.effort * (a * a).sum(-1)

    def init_bounds(self):
        return -np.ones(self.state), np.ones(self.state)


def mlp_step(sim: Sim, layers, x, a):
    """x + dt·clip(MLP([x, a])) with tanh hidden layers ((W (in, out), b) per layer), in ``sim``'s backend."""
    h = sim.ops.concat([x, a], -1)
    for i, (w, b) in enumerate(layers):
        h = h @ sim.ops.constant(w, x) + sim.ops.constant(b, x)
        if i < len(layers) - 1:
            h = sim.xp.tanh(h)
    return x + sim.dt * sim.ops.clip(h, -sim.clip, sim.clip)
