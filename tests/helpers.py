"""Shared test helpers: the per-dtype tolerance table, closeness checks, and test problems.

A *problem* is a sim, MLP weights and initial states, built in NumPy once and then loaded into
either framework, so JAX, torch and the NumPy reference all start from the same numbers.
"""

from __future__ import annotations

import functools

import numpy as np

import gradstop as gs
from sims import make

# Relative tolerance per dtype, applied to the largest entry (max-norm relative error).
RTOL = {"float64": 1e-10, "float32": 1e-5}

# Small, fast variants of each sim; the cartpole gets a terminal cost so λ_H has that term too.
SIMS = {
    "pointmass": dict(dims=2),
    "cartpole": dict(poles=2, terminal=1.0),
    "neural": dict(state=6, control=3, hidden=32),
}
HIDDEN = (16, 16)
BATCH = 2


def assert_close(actual, expected, dtype: str = "float64", what: str = "") -> None:
    """max|actual − expected| ≤ RTOL[dtype]·max(max|expected|, tiny)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(np.abs(expected).max(initial=0.0), 1e-30)
    err = np.abs(actual - expected).max(initial=0.0) / scale
    assert err <= RTOL[dtype], f"{what}: relative error {err:.3e} > {RTOL[dtype]:.0e} (scale {scale:.3e})"


def flat(weights) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(w, dtype=np.float64)) for w in weights])


@functools.lru_cache(maxsize=None)
def problem(sim_name: str, seed: int = 0, batch: int = BATCH):
    """(weights, x0) in float64 NumPy for ``SIMS[sim_name]``."""
    sim = make(sim_name, backend="numpy", **SIMS[sim_name])
    rng = np.random.default_rng(seed)
    sizes = [sim.obs_dim, *HIDDEN, sim.action_dim]
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(n_in)
        weights += [rng.uniform(-bound, bound, (n_out, n_in)), rng.uniform(-bound, bound, n_out)]
    x0 = sim.reset(rng, batch)
    return weights, x0


def load(backend: str, sim_name: str, dtype: str = "float64", seed: int = 0, batch: int = BATCH, **sim_overrides):
    """(sim, policy, x0) of ``problem(sim_name)`` in ``backend`` and ``dtype``."""
    weights, x0 = problem(sim_name, seed, batch)
    sim = make(sim_name, backend=backend, **{**SIMS[sim_name], **sim_overrides})
    if backend == "jax":
        import jax.numpy as jnp

        policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=HIDDEN, dtype=getattr(jnp, dtype))
        return sim, gs.jax.set_weights(policy, weights), jnp.asarray(x0, dtype=getattr(jnp, dtype))
    import torch

    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=HIDDEN, dtype=getattr(torch, dtype))
    return sim, gs.torch.set_weights(policy, weights), torch.as_tensor(x0, dtype=getattr(torch, dtype))


def gradient(backend: str, policy, sim, x0, stop, horizon: int, impl: str = "native"):
    """(loss, flat gradient) of one rollout's loss in ``backend``, as float64 NumPy."""
    if backend == "jax":
        import jax

        fn = jax.jit(jax.value_and_grad(lambda p: gs.rollout(p, sim, stop=stop, horizon=horizon, x0=x0, impl=impl).loss))
        loss, g = fn(policy)
        return float(loss), flat(gs.jax.get_weights(g))
    policy.zero_grad(set_to_none=True)
    out = gs.rollout(policy, sim, stop=stop, horizon=horizon, x0=x0, impl=impl)
    out.loss.backward()
    return float(out.loss.detach()), flat(p.grad.detach().numpy() for lin in policy.linears for p in (lin.weight, lin.bias))


def to_numpy(x) -> np.ndarray:
    """An array of either framework as NumPy (torch tensors are detached first)."""
    return np.asarray(x.detach() if hasattr(x, "detach") else x)


@__import__("dataclasses").dataclass(frozen=True, eq=False)
class Faulty(__import__("sims.base", fromlist=["Sim"]).Sim):
    """A 1-D point mass whose state also carries a clock and the batch element's id: (p, v, clock, id).

    ``fault="forward"``: the step returns NaN for element ``element`` at step ``at`` (clock = at).
    ``fault="vjp"``: the step adds 1e-3·√((clock − at)² + (id − element)² + 0·a) to v, which is finite
    everywhere but whose VJP is 0/0 = NaN at that one step and element. ``fault=None``: healthy.
    ``x0(batch)`` gives ids 0 … B−1.
    """

    fault: str | None = "forward"
    at: int = 37
    element: int = 5
    dt: float = 0.1

    name = "faulty"

    @property
    def state_dim(self):
        return 4

    @property
    def obs_dim(self):
        return 2

    @property
    def action_dim(self):
        return 1

    def step(self, x, a):
        xp = self.xp
        p, v, clock, ident = x[..., :1], x[..., 1:2], x[..., 2:3], x[..., 3:4]
        v = v + self.dt * a
        if self.fault == "vjp":
            # 0·a: the action's cotangent meets the same 0/0, so the NaN reaches μ and ∇θ too
            v = v + 1e-3 * xp.sqrt((clock - self.at) ** 2 + (ident - self.element) ** 2 + 0.0 * a)
        p = p + self.dt * v
        out = self.ops.concat([p, v, clock + 1.0, ident], -1)
        if self.fault == "forward":
            hit = (clock == self.at) & (ident == self.element)
            out = xp.where(hit, out * float("nan"), out)
        return out

    def obs(self, x):
        return x[..., :2]

    def cost(self, x_next, a):
        return x_next[..., 0] ** 2 + 0.01 * a[..., 0] ** 2

    def init_bounds(self):
        return np.array([-1.0, -1.0, 0.0, float(self.element)]), np.array([1.0, 1.0, 0.0, float(self.element)])

    def x0(self, batch: int, dtype=None):
        rng = np.random.default_rng(0)
        x = np.stack([rng.uniform(-1, 1, batch), rng.uniform(-1, 1, batch), np.zeros(batch), np.arange(batch, dtype=float)], 1)
        if self.backend == "jax":
            import jax.numpy as jnp

            return jnp.asarray(x, dtype or jnp.float64)
        import torch

        return torch.as_tensor(x, dtype=dtype or torch.float64)


@__import__("dataclasses").dataclass(frozen=True, eq=False)
class Pendulum(__import__("sims.base", fromlist=["Sim"]).Sim):
    """A torque-driven pendulum to swing up: state (θ, θ̇), θ = 0 upright; it starts hanging (θ ≈ π).

    The example of docs/simulators.md (kept identical): a user's own simulator, built by
    ``sims.make("tests.helpers:Pendulum", backend=...)`` in JAX, torch or NumPy.
    """

    gravity: float = 9.81
    length: float = 1.0
    max_torque: float = 5.0   # torque = max_torque · tanh(a), unit mass
    effort: float = 0.01
    dt: float = 0.05

    name = "pendulum"
    state_dim, obs_dim, action_dim = 2, 3, 1

    def step(self, x, a):
        xp = self.xp
        theta, omega = x[..., 0], x[..., 1]
        torque = self.max_torque * xp.tanh(a[..., 0])
        omega = omega + self.dt * (self.gravity / self.length * xp.sin(theta) + torque / self.length**2)
        return xp.stack([theta + self.dt * omega, omega], -1)   # semi-implicit Euler

    def obs(self, x):
        xp = self.xp
        return xp.stack([xp.cos(x[..., 0]), xp.sin(x[..., 0]), x[..., 1]], -1)

    def cost(self, x_next, a):   # read at the state after the step
        return 1.0 - self.xp.cos(x_next[..., 0]) + self.effort * a[..., 0] ** 2

    def success(self, x):        # upright within about 25°
        xp = self.xp
        return xp.where(xp.cos(x[..., 0]) > 0.9, xp.ones_like(x[..., 0]), xp.zeros_like(x[..., 0]))

    def init_bounds(self):
        return np.array([np.pi - 0.3, -0.5]), np.array([np.pi + 0.3, 0.5])
