"""Reparameterised policy noise as part of the simulator state, so every flow and impl apply unchanged.

A Gaussian policy a_t = μ(o_t) + σ ⊙ ε_t needs a fresh ε_t at every step. :class:`Noisy` carries
the whole window of noise (drawn in NumPy, the same for both frameworks) in the state and shows
ε_t to the policy at the end of its observation::

    X_t = [x_t, ε_t, ε_{t+1}, …, ε_{H−1}, 0, …]      obs(X_t) = [obs(x_t), ε_t]
    step(X_t, a) = [g(x_t, a), ε_{t+1}, …, 0]          costs: the simulator's, on x

No action reaches the noise, so it adds nothing to ∇θ; the rollout (native or fused, JAX or
torch) needs no noise argument. The cost is H·action_dim extra state entries per environment. A
pytree state (Brax; SHAC's window of one) becomes the pair (x, table).
"""

from __future__ import annotations

__all__ = ["Noisy"]


class Noisy:
    """``sim`` whose state carries ``horizon`` steps of policy noise (see the module docstring)."""

    def __init__(self, sim, horizon: int):
        self.sim, self.horizon = sim, horizon
        self.backend, self.name, self.dt = sim.backend, f"noisy({sim.name})", sim.dt
        self.action_dim = sim.action_dim
        self.obs_dim = sim.obs_dim + sim.action_dim
        self.pytree_state = getattr(sim, "pytree_state", False)
        if not self.pytree_state:
            self.state_dim = sim.state_dim + horizon * sim.action_dim

    @property
    def ops(self):
        return self.sim.ops

    def wrap(self, x, eps):
        """States [x, ε_0 … ε_{H−1}] from x (B, n) and noise eps (B, H, action_dim)."""
        table = eps.reshape(eps.shape[0], -1)
        return (x, table) if self.pytree_state else self.ops.concat([x, table], -1)

    def _split(self, X):
        if self.pytree_state:
            return X
        n = self.sim.state_dim
        return X[..., :n], X[..., n:]

    def reset(self, key=None, batch: int = 1, dtype=None):
        """States of fresh initial states with zero noise (the rollout reads their structure to check x0)."""
        x = self.sim.reset(key, batch, dtype=dtype)
        zeros = self.ops.xp.zeros((batch, self.horizon, self.action_dim), dtype=dtype)
        return self.wrap(x, zeros)

    def inner(self, X):
        """The wrapped simulator's states out of these (any leading axes)."""
        return self._split(X)[0]

    def step(self, X, a):
        x, table = self._split(X)
        shifted = self.ops.concat([table[..., self.action_dim:], table[..., : self.action_dim] * 0], -1)
        if self.pytree_state:
            return (self.sim.step(x, a), shifted)
        return self.ops.concat([self.sim.step(x, a), shifted], -1)

    def obs(self, X):
        x, table = self._split(X)
        return self.ops.concat([self.sim.obs(x), table[..., : self.action_dim]], -1)

    def cost(self, X_next, a):
        return self.sim.cost(self._split(X_next)[0], a)

    def terminal_cost(self, X):
        return self.sim.terminal_cost(self._split(X)[0])
