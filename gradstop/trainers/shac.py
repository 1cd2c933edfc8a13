"""SHAC's framework-neutral pieces: the actor's window as a simulator, and TD(λ) critic targets.

Short-horizon actor-critic (Xu et al., "Accelerated Policy Learning with Parallel Differentiable
Simulation", ICLR 2022) trains the actor through the simulator over windows of h steps from the
environments' current states, and ends each window in a learned value::

    actor loss = mean_envs [ Σ_{i<h} γ^i c(x_{i+1}, a_i) + γ^h V_target(x_h) ] / h

:class:`Window` turns a simulator into one whose plain rollout loss IS that loss, so every flow
and both implementations (native and fused) apply to the actor's window unchanged. Its state is
``[x, d, e]``: the discount d_i = γ^i rides along (the step multiplies it by γ; no action reaches
it, so it adds nothing to ∇θ), and e = 1 marks a window that ends the episode, whose end is then
the task's terminal cost instead of the value (episodes last ``horizon`` steps, a multiple of h).
An environment that the simulator says terminated early (``sim.terminated``: Brax's ``done``) gets
V = 0 at the window's end and restarts; a termination inside a window is seen only at its end.

:func:`td_lambda` is SHAC's TD(λ) recursion for the critic's targets (cost-to-go here).
"""

from __future__ import annotations

__all__ = ["Window", "td_lambda", "alive"]


class Window:
    """``sim`` seen by the actor over one SHAC window: discounted, value-terminated, scaled by 1/h.

    A flat state becomes the flat vector [x, d, e]; a pytree state (Brax) the tuple (x, d, e).

    Args:
      sim: a simulator (flat states in JAX or torch; pytree states in JAX).
      value: ``f(obs) -> (B,)``, the target critic's cost-to-go (its parameters are constants here).
      gamma: discount γ.
      window: h, the steps per window (the loss is divided by it, as in the published code).
    """

    def __init__(self, sim, value, gamma: float, window: int):
        self.sim, self.value, self.gamma, self.window = sim, value, gamma, window
        self.backend, self.name, self.dt = sim.backend, f"shac-window({sim.name})", sim.dt
        self.obs_dim, self.action_dim = sim.obs_dim, sim.action_dim
        self.pytree_state = getattr(sim, "pytree_state", False)
        if not self.pytree_state:
            self.state_dim = sim.state_dim + 2

    @property
    def ops(self):
        return self.sim.ops

    def wrap(self, x, ends_episode):
        """Window states (d = 1) from the environments' states x and a 0/1 (B,) mask of episode-ending windows."""
        if self.pytree_state:
            return (x, ends_episode * 0 + 1, ends_episode)
        one = x[..., :1] * 0 + 1
        return self.ops.concat([x, one, ends_episode[..., None] * one], -1)

    def split(self, X):
        """(x, d, e) of window states."""
        if self.pytree_state:
            return X
        n = self.sim.state_dim
        return X[..., :n], X[..., n], X[..., n + 1]

    def step(self, X, a):
        x, d, e = self.split(X)
        if self.pytree_state:
            return (self.sim.step(x, a), self.gamma * d, e)
        return self.ops.concat([self.sim.step(x, a), (self.gamma * d)[..., None], e[..., None]], -1)

    def obs(self, X):
        return self.sim.obs(self.split(X)[0])

    def cost(self, X_next, a):
        x, d, _ = self.split(X_next)
        return (d / self.gamma) * self.sim.cost(x, a) / self.window  # d_{i+1}/γ = γ^i

    def terminal_cost(self, X):
        x, d, e = self.split(X)
        end = e * self.sim.terminal_cost(x) + (1 - e) * alive(self.sim, x) * self.value(self.sim.obs(x))
        return d * end / self.window

    def reset(self, key=None, batch: int = 1, dtype=None):
        """Window states of fresh initial states (the rollout reads their structure; SHAC wraps its running ones)."""
        x = self.sim.reset(key, batch, dtype=dtype)
        return self.wrap(x, self.sim.terminal_cost(x) * 0)


def alive(sim, x):
    """0 where ``sim`` says x ended its episode early (``sim.terminated``, e.g. a Brax env's ``done``), else 1."""
    return 1 - sim.terminated(x) if hasattr(sim, "terminated") else 1


def td_lambda(costs, next_values, gamma: float, lam: float):
    """TD(λ) targets of a window whose last step ends it, SHAC's recursion (time-major (h, B) arrays).

    With done only at the last step, the target of step i is the λ-return
    G_i = (1 − λ) Σ_{n=1}^{h−i−1} λ^{n−1} G_i^{(n)} + λ^{h−i−1} G_i^{(h−i)}, where the n-step return is
    G_i^{(n)} = Σ_{k<n} γ^k c_{i+k} + γ^n V_{i+n} and ``next_values[i]`` = V(x_{i+1}). Works on NumPy,
    JAX and torch arrays alike (a Python loop over h).
    """
    h = len(costs)
    targets = [None] * h
    A = B = None
    lam_i = 1.0
    for i in reversed(range(h)):
        c, v = costs[i], next_values[i]
        if i == h - 1:  # done: the window ends, bootstrap from V(x_h)
            lam_i = 1.0
            A = 0.0 * c
            B = gamma * v + c
        else:
            lam_i = lam_i * lam
            A = lam * gamma * A + gamma * v + (1.0 - lam_i) / (1.0 - lam) * c
            B = gamma * B + c
        targets[i] = (1.0 - lam) * A + lam_i * B
    return targets
