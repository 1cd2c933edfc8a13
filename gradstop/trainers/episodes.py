"""Episodes that end: a terminating simulator whose costs stop at each episode's first ``done``.

A BPTT rollout of H steps runs on past the step where a terminating task (``sim.terminated``, e.g. a
Brax hopper that fell) ends its episode, and such a task may go on paying there (Brax's hopper keeps
its healthy reward while it slides). :class:`UntilDone` carries a flag in the state, 1 while no step so
far has ended the episode, and weights each step's cost by whether the episode was on when the step
began, as Brax's own evaluator counts an episode's reward (the step that ends it included)::

    X_t = [x_t, f_t]      f_0 = 1      on_t = f_t · (1 − done(x_t))
    step(X_t, u) = [g(x_t, u), on_t]   cost(X_{t+1}, u) = on_t · c(x_{t+1}, u)   terminal: f_H · c_T(x_H)

The flag is piecewise constant in the state, so it adds nothing to any gradient; every flow and impl
apply unchanged. A pytree state (Brax) becomes the pair (x, flag); a flat one gains a last column.
"""

from __future__ import annotations

from sims import _ops

__all__ = ["UntilDone"]


class UntilDone:
    """``sim`` whose costs stop after each episode's first ``sim.terminated`` step (see the module docstring)."""

    def __init__(self, sim):
        if not hasattr(sim, "terminated"):
            raise ValueError(f"until_done stops the costs at an episode's end, but the simulator {getattr(sim, 'name', sim)!r} "
                             "has no terminated(x) to say where its episodes end: drop until_done, or give the simulator "
                             "a terminated(x) method (1 where x ends its episode)")
        self.sim = sim
        self.backend, self.dt, self.name = sim.backend, sim.dt, f"until_done({getattr(sim, 'name', 'sim')})"
        self.action_dim, self.obs_dim = sim.action_dim, sim.obs_dim
        self.pytree_state = bool(getattr(sim, "pytree_state", False))
        if not self.pytree_state:
            self.state_dim = sim.state_dim + 1
        self._ops = _ops.ops(sim.backend)

    def wrap(self, x):
        """States of ``x`` (B, …) at an episode's start (flag 1)."""
        xp = self._ops.xp
        if self.pytree_state:
            import jax

            first = jax.tree.leaves(x)[0]
            return (x, xp.ones(first.shape[:1], dtype=self.sim.reward(x).dtype if hasattr(self.sim, "reward") else first.dtype))
        return self._ops.concat([x, xp.ones_like(x[..., :1])], -1)

    def _split(self, X):
        if self.pytree_state:
            return X
        return X[..., :-1], X[..., -1]

    def reset(self, key=None, batch: int = 1, dtype=None):
        return self.wrap(self.sim.reset(key, batch, dtype=dtype))

    def _on(self, x, flag):
        return flag * (1 - self._ops.xp.asarray(self.sim.terminated(x) > 0, dtype=flag.dtype))

    def step(self, X, a):
        x, flag = self._split(X)
        on = self._on(x, flag)  # the episode is still on at this step
        nxt = self.sim.step(x, a)
        if self.pytree_state:
            return (nxt, on)
        return self._ops.concat([nxt, on[..., None]], -1)

    def obs(self, X):
        return self.sim.obs(self._split(X)[0])

    def cost(self, X_next, a):
        x, on = self._split(X_next)
        return on * self.sim.cost(x, a)

    def terminal_cost(self, X):
        x, flag = self._split(X)
        return flag * self.sim.terminal_cost(x)

    @property
    def ops(self):
        return self._ops
