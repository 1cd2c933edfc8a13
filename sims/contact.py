"""A ball that has to bounce off a wall and the floor to reach its target: the contact task on which
first-order (pathwise) gradients through a simulator are known to fail (Suh, Simchowitz, Zhang &
Tedrake, "Do Differentiable Simulators Give Better Policy Gradients?", ICML 2022).

State x = (px, py, vx, vy) ∈ R^4: a point mass in the vertical plane under gravity, with a floor at
py = 0 and a vertical wall at px = wall_x (the ball lives at px ≤ wall_x, py ≥ 0). Action a ∈ R^2,
the force F = force_scale·tanh(a), bounded per component by force_scale (by default half the
weight, so the ball cannot hover and must hit the floor). Each step of dt runs ``substeps``
semi-implicit Euler substeps of h = dt/substeps::

    v' = v + h·(F/m + (0, −g) + N/m)        p' = p + h·v'

``contact="hard"`` (default): N = 0 and an impact is resolved after the substep, with ``xp.where``:
where p' passes the floor, py' ← −e·py' and vy' ← −e·vy'; where it passes the wall,
px' ← wall_x − e·(px' − wall_x) and vx' ← −e·vx' (e = restitution; with e = 1 the position is
reflected exactly). The step is then piecewise smooth: differentiable everywhere except where an
impact moves from one substep to another, where the state jumps (the velocity by about (1 + e)·g·h).
Its pathwise derivative holds the impact's substep fixed (∂py'/∂py = −e), so it misses how the
impact time moves with the state: the known-biased gradient (docs/simulators.md, "Contact tasks").

``contact="soft"``: a penalty (spring-damper) contact N with smooth penetration. With d the
penetration (−py for the floor, px − wall_x for the wall), s = stiffness/(10·mass) the sharpness
(the softplus width 1/s is the spring's compression under 10 N per kg), sp(d) = softplus(s·d)/s and
σ(d) = sigmoid(s·d), the normal force is k·sp(d) + c·σ(d)·v_in (v_in: the velocity into the
surface), with k = stiffness and the damping c = 2ζ√(k·m), ζ = −ln e / √(π² + ln² e): the damping
ratio whose linear spring-damper rebounds with restitution e (the soft ball rebounds at e times its
impact speed too, to about 1%). Smooth everywhere, and stiff as k grows: the contact lasts
π√(m/k), penetrates about v·√(m/k), and k → ∞ approaches the hard impact. Explicit integration
needs h·√(k/m) well below 2 (the default k = 2000 with h = 5 ms: 0.22); raise ``substeps`` with k.

Task: start near (0, 1) moving right at 2.5–3 m/s towards the wall at wall_x = 0.5 (stopping takes
0.625 m or more at the force bound, so the ball hits the wall), and be at the target
(0, 0.5), left of the wall, at the final step (which, below the weight, needs floor bounces too).
Cost of one step: effort·‖a‖²; terminal cost ‖p_H − target‖². Observation (p − target, v).
Success: within 0.1 of the target at the final step.

Example::

    >>> sim = Bounce(backend="jax")                                # hard impacts
    >>> soft = Bounce(backend="torch", contact="soft", stiffness=2000.0)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sims.base import Sim, non_negative, positive

CONTACTS = ("hard", "soft")
SUCCESS_RADIUS = 0.1
START_X = 0.05  # the start box's largest px: the wall must be to its right
SHARPNESS_LOAD = 10.0  # the softplus width is the spring's compression under this load per kg (N/kg)


@dataclasses.dataclass(frozen=True, eq=False)
class Bounce(Sim):
    """A ball pushed by a bounded force, bouncing off a floor and a wall to reach a target.

    Args:
      backend: 'jax' or 'torch' ('numpy': forward simulation only).
      contact: 'hard' (impacts resolved by reflection, ``xp.where``) or 'soft' (smooth spring-damper).
      dt: time step (the policy's); each step runs ``substeps`` integration substeps.
      substeps: integration substeps per step (integer ≥ 1).
      gravity: g ≥ 0.
      mass: m > 0.
      restitution: e in [0, 1]: rebound speed / impact speed (both contacts).
      stiffness: k > 0, the soft contact's spring (read with contact='soft' only, checked always).
      wall_x: the wall's position, right of the start box (> 0.05).
      target: the goal position (px, py), left of the wall and above the floor.
      force_scale: F = force_scale·tanh(a), per component.
      effort: weight of the action cost ‖a‖².
    """

    contact: str = "hard"
    dt: float = 0.05
    substeps: int = 10
    gravity: float = 9.81
    mass: float = 1.0
    restitution: float = 0.8
    stiffness: float = 2000.0
    wall_x: float = 0.5
    target: tuple = (0.0, 0.5)
    force_scale: float = 5.0
    effort: float = 0.01

    name = "bounce"
    state_dim, action_dim = 4, 2

    def __post_init__(self):
        super().__post_init__()
        if self.contact not in CONTACTS:
            raise ValueError(f"bounce: unknown contact {self.contact!r}; choose one of {CONTACTS}")
        if isinstance(self.substeps, bool) or not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"bounce: substeps must be an integer ≥ 1, got {self.substeps!r}")
        positive(self, mass=self.mass, stiffness=self.stiffness, wall_x=self.wall_x, force_scale=self.force_scale)
        non_negative(self, gravity=self.gravity, restitution=self.restitution, effort=self.effort)
        if self.restitution > 1:
            raise ValueError(f"bounce: restitution must be in [0, 1] (rebound speed / impact speed), got "
                             f"{self.restitution!r}; pass a value such as its default, restitution=0.8")
        if self.wall_x <= START_X:
            raise ValueError(f"bounce: wall_x must be right of the start box (px ≤ {START_X}), got {self.wall_x!r}")
        try:
            target = tuple(float(t) for t in self.target)
        except (TypeError, ValueError):
            target = ()
        if len(target) != 2 or not all(math.isfinite(t) for t in target):
            raise ValueError(f"bounce: target must be two finite numbers (px, py), got {self.target!r}")
        if not (target[0] <= self.wall_x and target[1] >= 0):
            raise ValueError(f"bounce: target {target} must be left of the wall (px ≤ wall_x = {self.wall_x}) and "
                             "above the floor (py ≥ 0)")
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "_target", np.asarray(target))
        e = self.restitution
        zeta = 1.0 if e == 0 else -math.log(e) / math.sqrt(math.pi**2 + math.log(e) ** 2)
        object.__setattr__(self, "_damping", 2.0 * zeta * math.sqrt(self.stiffness * self.mass))
        object.__setattr__(self, "_sharpness", self.stiffness / (SHARPNESS_LOAD * self.mass))

    # -- physics --------------------------------------------------------------------------------
    def _softplus(self, d):
        """softplus(s·d)/s, stably: the smooth penetration."""
        xp, z = self.xp, self._sharpness * d
        return (xp.where(z > 0, z, 0.0 * z) + xp.log1p(xp.exp(-xp.abs(z)))) / self._sharpness

    def _sigmoid(self, d):
        return 0.5 + 0.5 * self.xp.tanh(0.5 * self._sharpness * d)

    def _soft_force(self, d, v_in):
        """The normal force's magnitude: spring on the penetration d, damping of v_in (velocity into the surface)."""
        return self.stiffness * self._softplus(d) + self._damping * self._sigmoid(d) * v_in

    def step(self, x, a):
        xp, h, m, e, wall = self.xp, self.dt / self.substeps, self.mass, self.restitution, self.wall_x
        px, py, vx, vy = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
        force = self.force_scale * xp.tanh(a)
        ax, ay = force[..., 0] / m, force[..., 1] / m - self.gravity
        for _ in range(self.substeps):
            if self.contact == "soft":
                # floor: pushes up (+y) against vy < 0; wall: pushes left (−x) against vx > 0
                vx = vx + h * (ax - self._soft_force(px - wall, vx) / m)
                vy = vy + h * (ay + self._soft_force(-py, -vy) / m)
                px, py = px + h * vx, py + h * vy
            else:
                vx, vy = vx + h * ax, vy + h * ay
                px, py = px + h * vx, py + h * vy
                below, past = py < 0, px > wall
                py, vy = xp.where(below, -e * py, py), xp.where(below, -e * vy, vy)
                px, vx = xp.where(past, wall - e * (px - wall), px), xp.where(past, -e * vx, vx)
        return xp.stack([px, py, vx, vy], -1)

    # -- the task -------------------------------------------------------------------------------
    def _offset(self, x):
        return x[..., :2] - self.ops.constant(self._target, x)

    def obs(self, x):
        return self.ops.concat([self._offset(x), x[..., 2:]], -1)

    def cost(self, x_next, a):
        return self.effort * (a * a).sum(-1)

    def terminal_cost(self, x):
        offset = self._offset(x)
        return (offset * offset).sum(-1)

    def success(self, x):
        """1 where the ball ends within 0.1 of the target, else 0."""
        offset = self._offset(x)
        near = (offset * offset).sum(-1) < SUCCESS_RADIUS**2
        return self.xp.where(near, 1.0 + 0.0 * offset[..., 0], 0.0 * offset[..., 0])

    def init_bounds(self):
        return np.array([-START_X, 0.95, 2.5, -0.1]), np.array([START_X, 1.05, 3.0, 0.1])
