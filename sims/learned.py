"""A learned world model as a simulator: the ``neural`` sim's architecture with fitted weights.

    x' = x + dt·clip(MLP([x, a]), −clip, clip)

The weights come from fitting a simulator's transitions (``gradstop.trainers.world_model``);
everything but the step (observation, costs, initial states, success) is the true simulator's,
so a policy trained through the model is scored on the same task. Like every flat model it is
written once against the backend's array namespace, so its JAX and torch twins are identical.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sims.base import Sim
from sims.neural import mlp_step


@dataclasses.dataclass(frozen=True, eq=False)
class Learned(Sim):
    """World model of ``true`` with weights ``layers`` ((W (in, out), b) per layer, NumPy).

    Args:
      true: the simulator whose transitions were fitted (its backend is this model's).
      layers: the fitted MLP, input [x, a] (state_dim + action_dim), output (x' − x)/dt.
      clip: bound on the MLP's output.
    """

    true: Any = None
    layers: tuple = ()
    clip: float = 1e3

    name = "learned"

    def __post_init__(self):
        if self.true is None or not self.layers:
            raise ValueError("learned: give the true simulator and the fitted layers (gradstop.trainers.world_model.fit)")
        object.__setattr__(self, "backend", self.true.backend)
        object.__setattr__(self, "dt", self.true.dt)
        super().__post_init__()
        n_in = self.layers[0][0].shape[0]
        if n_in != self.true.state_dim + self.true.action_dim or self.layers[-1][0].shape[1] != self.true.state_dim:
            raise ValueError(f"learned: the layers map {n_in} inputs to {self.layers[-1][0].shape[1]} outputs; "
                             f"{self.true.name} needs {self.true.state_dim + self.true.action_dim} -> {self.true.state_dim}")

    @property
    def state_dim(self) -> int:
        return self.true.state_dim

    @property
    def obs_dim(self) -> int:
        return self.true.obs_dim

    @property
    def action_dim(self) -> int:
        return self.true.action_dim

    def step(self, x, a):
        return mlp_step(self, self.layers, x, a)

    def obs(self, x):
        return self.true.obs(x)

    def cost(self, x_next, a):
        return self.true.cost(x_next, a)

    def terminal_cost(self, x):
        return self.true.terminal_cost(x)

    def success(self, x):
        return self.true.success(x)

    def init_bounds(self):
        return self.true.init_bounds()

    def describe(self) -> dict:
        return {"name": f"learned:{self.true.describe()['name']}", "true": self.true.describe(),
                "sizes": [int(self.layers[0][0].shape[0])] + [int(w.shape[1]) for w, _ in self.layers], "clip": self.clip}


def layers_from_weights(weights: list[np.ndarray]) -> tuple:
    """[W_0 (out, in), b_0, …] as from ``get_weights`` -> ((W (in, out), b), …) for :class:`Learned`."""
    return tuple((np.asarray(w).T.copy(), np.asarray(b).copy()) for w, b in zip(weights[0::2], weights[1::2]))
