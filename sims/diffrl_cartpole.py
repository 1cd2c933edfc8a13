"""DiffRL's cartpole swing-up: the task SHAC reports, as its dflex articulation integrates it.

SHAC (Xu et al., "Accelerated Policy Learning with Parallel Differentiable Simulation", ICLR 2022)
measured on its own cartpole (NVlabs/DiffRL, ``envs/cartpole_swing_up.py``), loaded from a URDF by
dflex. dflex reads the URDF's *collision* boxes, not its ``<inertial>`` tags: each box adds
density 1000 × volume at its origin, so the cart weighs 50 kg (0.5 × 0.5 × 0.2 m) and the pole
2.5 kg (0.05 × 0.05 × 1 m, centre l = 0.5 m above the hinge, inertia m(w² + d²)/12 about it).

State x = (x_cart, θ, ẋ, θ̇), θ = 0 upright, θ = ±π hanging (the published start is θ = −π).
Action a ∈ R^1: the cart force F = 1000·u with u = clip(a, −1, 1), as the env clips
(``squash="clip"``, default). SHAC's ``algorithms/shac.py`` steps the env with tanh of the
actor's sample: gradstop's SHAC does the same before the step (``action_squash="tanh"``, its
default), so F = 1000·tanh(a) there; ``squash="tanh"`` puts that tanh in the simulator instead,
for trainers that do not squash (BPTT).

Equations (the articulated-body terms dflex forms for this two-joint chain, written out)::

    H(θ) = [[m_c + m_p,   m_p·l·cos θ],        τ_x = F + m_p·l·sin θ·θ̇² − k_d·ẋ + f_limit(x)
            [m_p·l·cos θ, I + m_p·l²  ]]       τ_θ = m_p·g·l·sin θ − k_d·θ̇
    q̈ = (H + armature·1)⁻¹ τ

with the joint "limit damping" k_d = 1 acting always (dflex's ``jcalc_tau`` applies it outside
the limit test), the cart limit spring f_limit = k_e·(±4 − x) beyond |x| > 4, armature 0.01 on
both joints (dflex's ``add_link`` default), and semi-implicit Euler over 4 substeps of 1/240 s
per 1/60 s step, velocities first. SHAC's config caches the mass matrix (``MM_caching_frequency:
4``): H is formed at the step's first substep and reused for the other three
(``mass_matrix_every``).

Reward of a step, read at the state after it: −(wrap(θ)² + 0.1·θ̇² + 0.05·x² + 0.1·ẋ²), wrap(θ)
= atan2(sin θ, cos θ); the action penalty is 0. The cost is minus the reward. Observation
(x, ẋ, sin θ, cos θ, θ̇). Initial states (``init="published"``, the env's ``stochastic_init``
that SHAC switches on): x ∈ U(−π/2, π/2), θ ∈ −π + U(−π/2, π/2), ẋ, θ̇ ∈ U(−0.25, 0.25);
``init="fixed"``: x = 0, θ = −π, at rest. Episodes last 240 steps (the trainer's horizon), with
no early termination. docs/simulators.md has the fidelity table: every value, its source file.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sims.base import Sim, non_negative, positive

DENSITY = 1000.0  # dflex ModelBuilder.add_shape_box's default density, which urdf_load does not override
CART_BOX = (0.5, 0.5, 0.2)  # URDF collision box of the cart (m)
POLE_BOX = (0.05, 0.05, 1.0)  # URDF collision box of the pole (m), its origin 0.5 m up the pole
SQUASHES = ("clip", "tanh")
INITS = ("published", "fixed")
SUCCESS_DEGREES = 12.0  # gradstop's measure (DiffRL reports the episode reward only): upright within this angle


def _box_mass(size) -> float:
    return DENSITY * size[0] * size[1] * size[2]


@dataclasses.dataclass(frozen=True, eq=False)
class DiffRLCartPole(Sim):
    """DiffRL's cartpole swing-up (SHAC's published task), physics as dflex integrates it.

    Args:
      backend: 'jax', 'torch' or 'numpy' (forward only).
      dt: control step (1/60 s); substeps: integration substeps per step (4).
      mass_matrix_every: form the mass matrix every this many substeps, from the first (SHAC's
        ``MM_caching_frequency``, 4; the env's own default is 1).
      gravity, cart_mass, pole_mass, pole_com, pole_inertia: g, m_c, m_p, l (hinge to the pole's
        centre of mass) and I (about the centre, around the hinge axis), from the URDF's collision boxes.
      armature: added to both diagonal entries of the mass matrix (dflex's default 0.01).
      damping: viscous k_d on both joints (the env's ``limit_kd=1``, applied always by dflex).
      limit, limit_stiffness: the cart's joint limit ±4 m and its spring k_e (100 N/m).
      force_scale: F = force_scale·u (1000).
      squash: 'clip' (u = clip(a, −1, 1), the env's) or 'tanh' (u = tanh a: SHAC's squash inside the sim; not
        with a trainer that squashes already, as gradstop's SHAC does by default).
      angle, angle_velocity, cart, cart_velocity, effort: reward weights (1, 0.1, 0.05, 0.1, 0 on u²).
      init: 'published' (the stochastic start SHAC uses) or 'fixed' (x = 0, θ = −π, at rest).

    Example::

        sim = sims.make("diffrl_cartpole", backend="torch")
        x = sim.reset(0, 64)                      # 64 environments, as SHAC's config
    """

    dt: float = 1.0 / 60.0
    substeps: int = 4
    mass_matrix_every: int = 4
    gravity: float = 9.81
    cart_mass: float = _box_mass(CART_BOX)
    pole_mass: float = _box_mass(POLE_BOX)
    pole_com: float = 0.5
    pole_inertia: float = _box_mass(POLE_BOX) * (POLE_BOX[0] ** 2 + POLE_BOX[2] ** 2) / 12.0
    armature: float = 0.01
    damping: float = 1.0
    limit: float = 4.0
    limit_stiffness: float = 100.0
    force_scale: float = 1000.0
    squash: str = "clip"
    angle: float = 1.0
    angle_velocity: float = 0.1
    cart: float = 0.05
    cart_velocity: float = 0.1
    effort: float = 0.0
    init: str = "published"

    name = "diffrl_cartpole"
    state_dim, obs_dim, action_dim = 4, 5, 1

    def __post_init__(self):
        super().__post_init__()
        for key in ("substeps", "mass_matrix_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"diffrl_cartpole: {key} must be an integer ≥ 1, got {value!r}")
        if self.squash not in SQUASHES:
            raise ValueError(f"diffrl_cartpole: unknown squash {self.squash!r}; choose one of {SQUASHES}")
        if self.init not in INITS:
            raise ValueError(f"diffrl_cartpole: unknown init {self.init!r}; choose one of {INITS}")
        positive(self, gravity=self.gravity, cart_mass=self.cart_mass, pole_mass=self.pole_mass,
                 pole_com=self.pole_com, pole_inertia=self.pole_inertia, limit=self.limit, force_scale=self.force_scale)
        non_negative(self, armature=self.armature, damping=self.damping, limit_stiffness=self.limit_stiffness,
                     angle=self.angle, angle_velocity=self.angle_velocity, cart=self.cart,
                     cart_velocity=self.cart_velocity, effort=self.effort)

    # -- physics ----------------------------------------------------------------------------------
    def control(self, a):
        """u ∈ [−1, 1], the env's clipped action: clip(a, −1, 1), or tanh(a) (see ``squash``)."""
        if self.squash == "tanh":
            return self.xp.tanh(a[..., 0])
        return self.ops.clip(a[..., 0], -1.0, 1.0)

    def _limit_force(self, pos):
        xp, k, L = self.xp, self.limit_stiffness, self.limit
        return xp.where(pos < -L, k * (-L - pos), xp.where(pos > L, k * (L - pos), 0.0 * pos))

    def step(self, x, a):
        xp = self.xp
        mc, mp, l, g, d, arm = self.cart_mass, self.pole_mass, self.pole_com, self.gravity, self.damping, self.armature
        pos, th, vel, om = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
        F = self.force_scale * self.control(a)
        h = self.dt / self.substeps
        for i in range(self.substeps):
            if i % self.mass_matrix_every == 0:  # dflex forms H (and its Cholesky factor) here, reusing it until the next
                h12 = mp * l * xp.cos(th)
                h11, h22 = mc + mp + arm, self.pole_inertia + mp * l * l + arm
                det = h11 * h22 - h12 * h12
            sin = xp.sin(th)
            tau_x = F + mp * l * sin * om * om - d * vel + self._limit_force(pos)
            tau_th = mp * g * l * sin - d * om
            acc_x = (h22 * tau_x - h12 * tau_th) / det
            acc_th = (h11 * tau_th - h12 * tau_x) / det
            vel, om = vel + h * acc_x, om + h * acc_th  # semi-implicit Euler: velocities first
            pos, th = pos + h * vel, th + h * om
        return xp.stack([pos, th, vel, om], -1)

    # -- the task ---------------------------------------------------------------------------------
    def obs(self, x):
        xp = self.xp
        return xp.stack([x[..., 0], x[..., 2], xp.sin(x[..., 1]), xp.cos(x[..., 1]), x[..., 3]], -1)

    def wrapped_angle(self, x):
        """θ wrapped to [−π, π] as the published reward reads it: atan2(sin θ, cos θ)."""
        return self.xp.arctan2(self.xp.sin(x[..., 1]), self.xp.cos(x[..., 1]))

    def reward(self, x):
        """The published reward of the step that led to ``x`` (B,), without the action term (its weight is 0)."""
        th = self.wrapped_angle(x)
        return -(self.angle * th * th + self.angle_velocity * x[..., 3] ** 2 + self.cart * x[..., 0] ** 2
                 + self.cart_velocity * x[..., 2] ** 2)

    def cost(self, x_next, a):
        u = self.control(a)
        return -self.reward(x_next) + self.effort * u * u

    def success(self, x):
        """1 where the pole is within 12° of upright (gradstop's measure; DiffRL reports the reward only)."""
        margin = self.xp.cos(x[..., 1]) - math.cos(math.radians(SUCCESS_DEGREES))
        return 0.5 + 0.5 * self.xp.sign(margin)

    def init_bounds(self):
        if self.init == "fixed":
            start = np.array([0.0, -math.pi, 0.0, 0.0])
            return start, start.copy()
        spread = np.array([math.pi / 2, math.pi / 2, 0.25, 0.25])  # π·(U − ½) on q, ½·(U − ½) on q̇
        centre = np.array([0.0, -math.pi, 0.0, 0.0])
        return centre - spread, centre + spread
