"""Cart with N poles hinged on it: the multi-pole model of the BPTT-stabilisation literature.

State x = (x_cart, θ_1..θ_N, ẋ_cart, θ̇_1..θ̇_N) ∈ R^{2(N+1)}; θ = 0 is upright, θ = π hangs
down. Action a ∈ R^1, the horizontal force F = force_scale·a on the cart. Each pole's angular
acceleration depends on F and its own angle and rate only: no pole-pole terms, and the cart's
acceleration does not feed back into the poles, so given the force sequence the poles are
independent, as in the published model (Schnell & Thuerey, ICLR 2024; their code,
tum-pbs/StableBPTT, CartPole/Simulations/01/cartpole_simulator.py)::

    A_i  = (F + m·l·sin θ_i·θ̇_i²) / M
    θ̈_i  = (g·sin θ_i − cos θ_i·A_i) / (l·(4/3 − m·cos²θ_i / M))
    ẍ    = (F + m·l·Σ_i (sin θ_i·θ̇_i² − θ̈_i·cos θ_i)) / M

then semi-implicit Euler: velocities first, positions with the new velocities.

Cost of one step: angle·mean_i(1 − cos θ_i) + cart·x² + effort·F²; terminal cost
terminal·mean_i(1 − cos θ_i). Observation (``observation=``): ``"sincos"`` (default) is
(x, sin θ, cos θ, ẋ, θ̇), 2 + 3N values; ``"raw"`` is the state object by object as the published
code feeds it to its policy, (x, ẋ, θ_1, θ̇_1, …, θ_N, θ̇_N), raw angles, 2(N + 1) values.

Initial states (``init=``, swing-up): ``"narrow"`` (default) x ∈ U(−0.5, 0.5), ẋ = 0,
θ_i = π + U(−π/6, π/6), θ̇_i ∈ U(−0.5, 0.5) (the range of the reference trajectories);
``"published"`` the published task's generator: x, ẋ, θ̇_i ∈ U(−1, 1), θ_i = π + U(−1, 1)·π/6.

Presets (``make("cartpole", preset="literature")``): ``literature`` is the paper's swing-up task:
total mass M = 1.1 for every pole count, F = a, only the terminal cost 1 − mean_i cos θ_i, and the
published initial-state distribution (``init="published"``). The observation stays a parameter
(``observation="raw"`` is the published code's; the study runs both).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sims.base import Sim, non_negative, positive

TASKS = ("swingup", "balance")
INITS = ("narrow", "published")
OBSERVATIONS = ("sincos", "raw")
SUCCESS_DEGREES = 12.0  # a pole counts as up within this angle of upright


@dataclasses.dataclass(frozen=True, eq=False)
class CartPole(Sim):
    """Cart with 1..N poles.

    Args:
      backend: 'jax' or 'torch' ('numpy': forward simulation only).
      poles: number of poles N ≥ 1.
      task: 'swingup' (poles start hanging, θ = π ± π/6) or 'balance' (near upright, ±0.1).
      gravity, pole_mass, cart_mass, half_length: g, m, cart mass, l (literature values).
      total_mass: M in the equations; None means cart_mass + poles·pole_mass.
      dt: time step (literature: 0.01, T = 1 s in 100 steps).
      force_scale: F = force_scale·a (10; the literature preset applies a directly, 1).
      angle, cart, effort, terminal: cost weights (see the module docstring).
      init: swing-up initial states, 'narrow' or 'published' (see the module docstring).
      observation: what the policy sees, 'sincos' or 'raw' (see the module docstring).
    """

    poles: int = 1
    task: str = "swingup"
    gravity: float = 9.8
    pole_mass: float = 0.1
    cart_mass: float = 1.0
    total_mass: float | None = None
    half_length: float = 0.5
    dt: float = 0.01
    force_scale: float = 10.0
    angle: float = 1.0
    cart: float = 0.1
    effort: float = 0.001
    terminal: float = 0.0
    init: str = "narrow"
    observation: str = "sincos"

    name = "cartpole"
    PRESETS = {
        "literature": dict(task="swingup", total_mass=1.1, dt=0.01, force_scale=1.0, angle=0.0, cart=0.0, effort=0.0, terminal=1.0,
                           init="published"),
    }

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.poles, bool) or not isinstance(self.poles, int) or self.poles < 1:
            raise ValueError(f"cartpole: poles must be an integer ≥ 1, got {self.poles!r}")
        if self.task not in TASKS:
            raise ValueError(f"cartpole: unknown task {self.task!r}; choose one of {TASKS}")
        if self.init not in INITS:
            raise ValueError(f"cartpole: unknown init {self.init!r}; choose one of {INITS}")
        if self.init == "published" and self.task != "swingup":
            raise ValueError("cartpole: init='published' is the swing-up task's distribution; task='balance' starts "
                             "near upright (±0.1): drop init or use task='swingup'")
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"cartpole: unknown observation {self.observation!r}; choose one of {OBSERVATIONS}")
        positive(self, gravity=self.gravity, pole_mass=self.pole_mass, cart_mass=self.cart_mass,
                 half_length=self.half_length, force_scale=self.force_scale)
        if self.total_mass is not None:
            positive(self, total_mass=self.total_mass)
        non_negative(self, angle=self.angle, cart=self.cart, effort=self.effort, terminal=self.terminal)

    @property
    def state_dim(self) -> int:
        return 2 * (self.poles + 1)

    @property
    def obs_dim(self) -> int:
        return 2 + 3 * self.poles if self.observation == "sincos" else 2 * (self.poles + 1)

    @property
    def action_dim(self) -> int:
        return 1

    @property
    def M(self) -> float:
        return self.cart_mass + self.poles * self.pole_mass if self.total_mass is None else self.total_mass

    def _split(self, x):
        n = self.poles
        return x[..., 0], x[..., 1 : n + 1], x[..., n + 1], x[..., n + 2 :]

    def step(self, x, a):
        xp, m, l, M, g, dt = self.xp, self.pole_mass, self.half_length, self.M, self.gravity, self.dt
        pos, th, vel, om = self._split(x)
        F = self.force_scale * a[..., 0]
        sin, cos = xp.sin(th), xp.cos(th)
        A = (F[..., None] + m * l * sin * om * om) / M
        th_acc = (g * sin - cos * A) / (l * (4.0 / 3.0 - m * cos * cos / M))
        x_acc = (F + m * l * (sin * om * om - th_acc * cos).sum(-1)) / M
        om = om + dt * th_acc
        vel = vel + dt * x_acc
        th = th + dt * om
        pos = pos + dt * vel
        return self.ops.concat([pos[..., None], th, vel[..., None], om], -1)

    def obs(self, x):
        pos, th, vel, om = self._split(x)
        if self.observation == "raw":  # object by object: (x, ẋ, θ_1, θ̇_1, …), the published code's input
            pairs = self.xp.stack([th, om], -1)
            return self.ops.concat([pos[..., None], vel[..., None], pairs.reshape(pairs.shape[:-2] + (2 * self.poles,))], -1)
        return self.ops.concat([pos[..., None], self.xp.sin(th), self.xp.cos(th), vel[..., None], om], -1)

    def _upright(self, x):
        return (1.0 - self.xp.cos(self._split(x)[1])).mean(-1)

    def cost(self, x_next, a):
        pos = self._split(x_next)[0]
        F = self.force_scale * a[..., 0]
        return self.angle * self._upright(x_next) + self.cart * pos * pos + self.effort * F * F

    def terminal_cost(self, x):
        return self.terminal * self._upright(x)

    def success(self, x):
        """Fraction of poles within 12° of upright (cos θ_i > cos 12°), the literature's measure."""
        margin = self.xp.cos(self._split(x)[1]) - math.cos(math.radians(SUCCESS_DEGREES))
        return (0.5 + 0.5 * self.xp.sign(margin)).mean(-1)  # 1 where up, 0 where not, in x's dtype and backend

    def init_bounds(self):
        n = self.poles
        if self.task == "swingup" and self.init == "published":  # StableBPTT: CartPole/Simulations/01/multi_cartpole_data.py
            lo = [-1.0] + [math.pi - math.pi / 6] * n + [-1.0] + [-1.0] * n
        elif self.task == "swingup":  # the reference trajectories' range
            lo = [-0.5] + [math.pi - math.pi / 6] * n + [0.0] + [-0.5] * n
        else:
            lo = [-0.1] + [-0.1] * n + [0.0] + [-0.1] * n
        low = np.asarray(lo)
        high = -low
        if self.task == "swingup":
            high[1 : n + 1] = math.pi + math.pi / 6
        return low, high
