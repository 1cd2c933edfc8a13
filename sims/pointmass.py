"""Point mass in n dimensions, pushed by a force, slowed by linear drag.

State x = (p, v) ∈ R^{2n}, action a = F ∈ R^n. Dynamics m·v̇ = F − drag·v, integrated with
semi-implicit Euler (velocity first, then position with the new velocity)::

    v' = v + dt·(F − drag·v)/m        p' = p + dt·v'

Cost of one step: ‖p' − target‖² + effort·‖F‖². Observation: (p − target, v), so the policy
sees the state (and the ``input`` flow has an edge to cut).

Example::

    >>> sim = PointMass(backend="jax")     # 3-D: state 6, action 3
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sims.base import Sim, non_negative, positive


@dataclasses.dataclass(frozen=True, eq=False)
class PointMass(Sim):
    """n-D point mass with mass, linear drag and force control.

    Args:
      backend: 'jax' or 'torch' ('numpy': forward simulation only).
      dims: number of spatial dimensions n (state 2n, action n).
      mass: m > 0.
      drag: linear drag coefficient ≥ 0.
      dt: time step.
      effort: weight of the control cost ‖F‖².
      target: goal position (length n; default the origin).
      init_range: initial positions are uniform in [−init_range, init_range]^n, velocities zero.
    """

    dims: int = 3
    mass: float = 1.0
    drag: float = 0.1
    dt: float = 0.1
    effort: float = 0.01
    target: tuple = ()
    init_range: float = 1.0

    name = "pointmass"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.dims, bool) or not isinstance(self.dims, int) or self.dims < 1:
            raise ValueError(f"pointmass: dims must be an integer ≥ 1, got {self.dims!r}")
        positive(self, mass=self.mass)
        non_negative(self, drag=self.drag, effort=self.effort, init_range=self.init_range)
        target = tuple(float(t) for t in self.target) if self.target else (0.0,) * self.dims
        if len(target) != self.dims:
            raise ValueError(f"pointmass: target has {len(target)} entries but dims={self.dims}; give one per dimension")
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "_target", np.asarray(target))

    @property
    def state_dim(self) -> int:
        return 2 * self.dims

    @property
    def action_dim(self) -> int:
        return self.dims

    def _split(self, x):
        return x[..., : self.dims], x[..., self.dims :]

    def step(self, x, a):
        p, v = self._split(x)
        v = v + self.dt * (a - self.drag * v) / self.mass
        p = p + self.dt * v
        return self.ops.concat([p, v], -1)

    def obs(self, x):
        p, v = self._split(x)
        return self.ops.concat([p - self.ops.constant(self._target, x), v], -1)

    def cost(self, x_next, a):
        p, _ = self._split(x_next)
        offset = p - self.ops.constant(self._target, x_next)
        return (offset * offset).sum(-1) + self.effort * (a * a).sum(-1)

    def init_bounds(self):
        r = self.init_range
        low = np.concatenate([np.full(self.dims, -r), np.zeros(self.dims)])
        return low, -low
