"""SHAC's framework-neutral pieces: the actor's window as a simulator, and TD(λ) critic targets.

Short-horizon actor-critic (Xu et al., "Accelerated Policy Learning with Parallel Differentiable
Simulation", ICLR 2022) trains the actor through the simulator over windows of h steps from the
environments' current states, and ends each window in a learned value::

    actor loss = mean_envs [ Σ_{i<h} γ^i c(x_{i+1}, a_i) + γ^h V_target(x_h) ] / h

:class:`Window` turns a simulator into one whose plain rollout loss IS that loss, so every flow
and both implementations (native and fused) apply to the actor's window unchanged. Its state is
``[x, d, e]``: the discount d_i = γ^i rides along (the step multiplies it by γ; no action reaches
it, so it adds nothing to ∇θ), and e = 1 marks a window that ends the episode at its time
limit, whose end is then the target critic's value as in the published code
(``time_limit="bootstrap"``) or the task's terminal cost (``"terminal"``). An environment that the
simulator says terminated early (``sim.terminated``: Brax's ``done``) gets V = 0. With
``episode=T`` (:func:`episodes_inside` says where SHAC needs it) an episode may end at any step of the
window, as the published code's auto-resetting environments do: it is charged its end there and
restarts inside the window; without it, episodes end at window ends only.

:func:`td_lambda` is SHAC's TD(λ) recursion for the critic's targets (cost-to-go here), with the
published code's per-step dones. :func:`critic_weights` are the critic's initial weights, and
:func:`check_guards` the published code's divergence checks (|V| or the actor's gradient norm > 1e6).

:class:`Task` is the simulator as the published actor acts on it and sees it: its actions bounded before
the step (``action_squash``: tanh, as ``algorithms/shac.py`` steps the env with ``tanh(actions)``) and its
observations normalised by a running mean and variance (``obs_norm``), frozen over each window
(:func:`rms_init`, :func:`rms_update`: the published ``RunningMeanStd``). A Gaussian actor's noise rides in
the window's state (``gradstop.trainers.noise.Noisy`` around the :class:`Window`).
"""

from __future__ import annotations

import math

import numpy as np

from gradstop import _policy
from gradstop.trainers.run import NonFiniteError

__all__ = ["Window", "episodes_inside", "window_part", "Task", "make_task", "rms_init", "rms_update", "td_lambda", "alive", "critic_weights", "check_guards",
           "GuardError", "GUARD_LIMIT", "sane"]

GUARD_LIMIT = 1e6  # the published SHAC stops where |V| or the actor's gradient norm passes this (algorithms/shac.py)
RMS_COUNT0 = 1e-4  # the published RunningMeanStd starts at mean 0, variance 1, with this weight (utils/running_mean_std.py)
RMS_EPS = 1e-5  # ... and normalises by sqrt(var + this)


class Task:
    """``sim`` as SHAC's actor acts on it and sees it: actions bounded before the step and the cost, observations
    normalised by frozen statistics. Everything else is ``sim``'s.

    Args:
      sim: a simulator.
      squash: ``"tanh"``: a -> tanh(a) (the published code steps its env with ``tanh(actions)``, algorithms/shac.py,
        and the env clips that to [−1, 1], which changes nothing); ``"clip"``: a -> clip(a, −1, 1), zero gradient
        outside (``jnp.clip``, ``torch.clamp``); ``"none"``: a.
      stats: ``(mean, var)`` of the observations, or None: ``obs(x) = (o − mean) / sqrt(var + 1e-5)``.
    """

    OPTIONAL = ("terminated", "success", "reward", "init_bounds")  # state-only: passed on as they are

    def __init__(self, sim, squash: str = "none", stats=None):
        if squash not in ("tanh", "clip", "none"):
            raise ValueError(f"unknown action_squash {squash!r}; choose one of tanh, clip, none")
        self.sim, self.squash, self.stats = sim, squash, stats
        self.backend, self.name, self.dt = sim.backend, sim.name, sim.dt
        self.obs_dim, self.action_dim = sim.obs_dim, sim.action_dim
        self.pytree_state = getattr(sim, "pytree_state", False)
        if not self.pytree_state:
            self.state_dim = sim.state_dim
        for name in self.OPTIONAL:
            if hasattr(sim, name):
                setattr(self, name, getattr(sim, name))

    @property
    def ops(self):
        return self.sim.ops

    def bound(self, a):
        """The action the simulator receives."""
        if self.squash == "tanh":
            return self.ops.xp.tanh(a)
        if self.squash == "clip":
            return self.ops.clip(a, -1.0, 1.0)
        return a

    def step(self, x, a):
        return self.sim.step(x, self.bound(a))

    def cost(self, x_next, a):
        return self.sim.cost(x_next, self.bound(a))

    def raw_obs(self, x):
        """The simulator's own observation, before normalisation (``sane`` reads it)."""
        return self.sim.obs(x)

    def obs(self, x):
        o = self.sim.obs(x)
        if self.stats is None:
            return o
        mean, var = self.stats
        return (o - mean) / self.ops.xp.sqrt(var + RMS_EPS)

    def terminal_cost(self, x):
        return self.sim.terminal_cost(x)

    def reset(self, key=None, batch: int = 1, dtype=None):
        return self.sim.reset(key, batch, dtype=dtype)


def make_task(sim, config, stats=None):
    """``sim`` as the config's actor acts on it (:class:`Task`); ``sim`` itself where nothing changes."""
    if config.action_squash == "none" and stats is None:
        return sim
    return Task(sim, config.action_squash, stats)


def rms_init(obs_dim: int, zeros):
    """The running statistics' start ``(mean, var, count)``: 0, 1 and ``RMS_COUNT0``; ``zeros(shape)`` makes arrays."""
    return zeros((obs_dim,)), zeros((obs_dim,)) + 1.0, zeros(()) + RMS_COUNT0


def rms_update(rms, samples):
    """``(mean, var, count)`` after ``samples`` (N, obs_dim): the parallel rule of Chan et al. (1979), as the published
    ``RunningMeanStd.update`` (biased batch variance). The result is the mean and variance of every sample seen, with
    the start counted as ``count`` samples of mean 0 and variance 1."""
    mean, var, count = rms
    n = samples.shape[0]
    batch_mean = samples.mean(0)
    batch_var = ((samples - batch_mean) ** 2).mean(0)
    delta = batch_mean - mean
    total = count + n
    m2 = var * count + batch_var * n + delta ** 2 * (count * n / total)
    return mean + delta * (n / total), m2 / total, total


class Window:
    """``sim`` seen by the actor over one SHAC window: discounted, value-terminated, scaled by 1/h.

    A flat state becomes the flat vector [x, d, e]; a pytree state (Brax) the tuple (x, d, e). With ``episode`` the
    window runs the published code's episodes across its steps (below) and the state is [x, d, e, t, j, f, r]
    (the tuple (x, d, e, t, j, f, r)): t the episode's step count at x, j the window's step, f = 1 where the step
    that led to x ended the episode, r the state it restarts from.

    Args:
      sim: a simulator (flat states in JAX or torch; pytree states in JAX).
      value: ``f(obs) -> (B,)``, the target critic's cost-to-go (its parameters are constants here).
      gamma: discount γ.
      window: h, the steps per window (the loss is divided by it, as in the published code).
      time_limit: an episode's end at its time limit is ``"bootstrap"``: V (as published), or ``"terminal"``: the
        task's terminal cost.
      episode: None: episodes end at window ends only (e = 1 marks a window whose end is its episode's time limit;
        an early termination is acted on at the window's end). An int T: an environment whose episode ends at a
        step inside the window — its T-th step, or (``terminations``) a step where ``sim.terminated`` — is charged
        γ^(i−s)·c_i + γ^(i−s+1)·V_end there (V_end: the time-limit end above, 0 after a termination; s the step its
        episode started in this window) and goes on from its restart state r with the discount back at 1, as the
        published ``compute_actor_loss`` (algorithms/shac.py) does with its auto-resetting environments. An end at
        the window's last step is left to the window's end (the same charge), so windows that end their episodes
        exactly compute what they did without ``episode``.
      terminations: with ``episode``, an early termination ends the episode at its step (the published code);
        otherwise only at the window's end.
    """

    def __init__(self, sim, value, gamma: float, window: int, time_limit: str = "terminal", episode: int | None = None,
                 terminations: bool = False):
        if time_limit not in ("bootstrap", "terminal"):
            raise ValueError(f"unknown time_limit {time_limit!r}; choose one of bootstrap, terminal")
        if episode is not None and (isinstance(episode, bool) or not isinstance(episode, int) or episode < window):
            raise ValueError(f"episode must be an integer ≥ window={window} (the episode length), got {episode!r}")
        self.sim, self.value, self.gamma, self.window, self.time_limit = sim, value, gamma, window, time_limit
        self.episode, self.terminations = episode, bool(terminations) and hasattr(sim, "terminated")
        self.backend, self.name, self.dt = sim.backend, f"shac-window({sim.name})", sim.dt
        self.obs_dim, self.action_dim = sim.obs_dim, sim.action_dim
        self.pytree_state = getattr(sim, "pytree_state", False)
        if not self.pytree_state:
            self.state_dim = sim.state_dim + 2 if episode is None else 2 * sim.state_dim + 5

    @property
    def ops(self):
        return self.sim.ops

    def wrap(self, x, ends_episode, steps=None, restart=None):
        """Window states (d = 1) from the environments' states x and a 0/1 (B,) mask of episode-ending windows; with
        ``episode`` also their episodes' step counts ``steps`` (B,) and the states ``restart`` they restart from."""
        if self.episode is None:
            if self.pytree_state:
                return (x, ends_episode * 0 + 1, ends_episode)
            one = x[..., :1] * 0 + 1
            return self.ops.concat([x, one, ends_episode[..., None] * one], -1)
        if steps is None or restart is None:
            raise ValueError("a window with episode=... needs the episodes' step counts and restart states: "
                             "wrap(x, ends, steps=, restart=)")
        zero = ends_episode * 0
        steps = steps + zero  # in the states' dtype
        if self.pytree_state:
            return (x, zero + 1, ends_episode, steps, zero, zero, restart)
        cols = [zero + 1, ends_episode, steps, zero, zero]
        return self.ops.concat([x] + [c[..., None] for c in cols] + [restart], -1)

    def split(self, X):
        """(x, d, e) of window states."""
        return self.parts(X)[:3]

    def parts(self, X):
        """(x, d, e) of window states; with ``episode`` (x, d, e, t, j, f, r)."""
        if self.pytree_state:
            return X
        n = self.sim.state_dim
        if self.episode is None:
            return X[..., :n], X[..., n], X[..., n + 1]
        return (X[..., :n], X[..., n], X[..., n + 1], X[..., n + 2], X[..., n + 3], X[..., n + 4], X[..., n + 5:])

    def current(self, X):
        """The state each environment is in: x, or its restart state r where the step that led to x ended its episode."""
        if self.episode is None:
            return self.split(X)[0]
        x, _, _, _, _, f, r = self.parts(X)
        return _select(self.ops.xp, f, r, x)

    def _end_value(self, x, v, at_limit):
        """V_end of an episode that ended in x: at its time limit V (0 where x's observation is not sane) or the
        task's terminal cost; after an early termination 0."""
        xp = self.ops.xp
        end = xp.where(sane(self.sim, x), v, xp.zeros_like(v)) if self.time_limit == "bootstrap" else self.sim.terminal_cost(x)
        return xp.where(at_limit, end, xp.zeros_like(end))

    def step(self, X, a):
        if self.episode is None:
            x, d, e = self.split(X)
            if self.pytree_state:
                return (self.sim.step(x, a), self.gamma * d, e)
            return self.ops.concat([self.sim.step(x, a), (self.gamma * d)[..., None], e[..., None]], -1)
        xp = self.ops.xp
        x, d, e, t, j, f, r = self.parts(X)
        ended = f > 0
        x = _select(xp, f, r, x)  # an episode that ended at the last step restarts here, its discount back at 1
        d, t = xp.where(ended, xp.ones_like(d), d), xp.where(ended, xp.zeros_like(t), t)
        x1 = self.sim.step(x, a)
        t1, j1 = t + 1, j + 1
        end = t1 >= self.episode
        if self.terminations:
            end = end | (self.sim.terminated(x1) > 0)
        f1 = xp.where(end & (j1 < self.window), xp.ones_like(t1), xp.zeros_like(t1))  # the last step's: the window's end
        if self.pytree_state:
            return (x1, self.gamma * d, e, t1, j1, f1, r)
        cols = [self.gamma * d, e, t1, j1, f1]
        return self.ops.concat([x1] + [c[..., None] for c in cols] + [r], -1)

    def obs(self, X):
        return self.sim.obs(self.current(X))

    def cost(self, X_next, a):
        x, d, _ = self.split(X_next)
        c = (d / self.gamma) * self.sim.cost(x, a) / self.window  # d_{i+1}/γ = γ^(i−s)
        if self.episode is None:
            return c
        xp = self.ops.xp
        _, _, _, t, _, f, _ = self.parts(X_next)
        end = self._end_value(x, self.value(self.sim.obs(x)), t >= self.episode)
        return c + xp.where(f > 0, d * end, xp.zeros_like(end)) / self.window  # the episode's end inside the window

    def terminal_cost(self, X):
        x, d, e = self.split(X)
        if self.episode is not None:
            t = self.parts(X)[3]  # f = 0 here: an end at the window's last step is the window's end
            e = self.ops.xp.where(t >= self.episode, t * 0 + 1, t * 0)
        v = self.value(self.sim.obs(x))
        if self.time_limit == "bootstrap":  # at the time limit V even where terminated too, as published
            xp = self.ops.xp
            end = xp.where(e > 0, xp.where(sane(self.sim, x), v, xp.zeros_like(v)), alive(self.sim, x) * v)
        else:
            end = e * self.sim.terminal_cost(x) + (1 - e) * alive(self.sim, x) * v
        return d * end / self.window

    def reset(self, key=None, batch: int = 1, dtype=None):
        """Window states of fresh initial states (the rollout reads their structure; SHAC wraps its running ones)."""
        x = self.sim.reset(key, batch, dtype=dtype)
        zero = self.sim.terminal_cost(x) * 0
        return self.wrap(x, zero) if self.episode is None else self.wrap(x, zero, zero, x)


def _select(xp, mask, a, b):
    """a where mask (B,) > 0, else b; flat (B, n) arrays or pytrees of (B, ...) leaves."""
    if not isinstance(b, tuple) and hasattr(b, "shape"):
        return xp.where(mask[..., None] > 0, a, b)
    import jax

    return jax.tree.map(lambda u, v: xp.where((mask > 0).reshape(mask.shape + (1,) * (v.ndim - mask.ndim)), u, v), a, b)


def episodes_inside(config, sim) -> int | None:
    """The episode length T where SHAC's windows must run episodes across their steps (``Window(episode=T)``):
    the episode does not end at window ends (T not a multiple of h), or an early termination ends it at its step
    (``td_dones="step"`` on a simulator with ``terminated``); None where every episode ends at a window's end."""
    if config.horizon % config.window or (config.td_dones == "step" and hasattr(sim, "terminated")):
        return config.horizon
    return None


def window_part(states, window, noisy: bool = False):
    """The :class:`Window` states out of a rollout's states (a Gaussian actor's carry its noise table after them)."""
    if not noisy:
        return states
    if window.pytree_state:
        return states[0]
    return states[..., : window.state_dim]


def sane(sim, x):
    """True where the simulator's own observation of x (before any normalisation) is finite and within
    ±``GUARD_LIMIT`` (B,): an episode that ends at its time limit elsewhere bootstraps V = 0, as the published code
    does for such an observation before reset (algorithms/shac.py, "ugly fix for nan values")."""
    o = getattr(sim, "raw_obs", sim.obs)(x)
    return (abs(o) <= GUARD_LIMIT).all(-1)


def alive(sim, x):
    """0 where ``sim`` says x ended its episode early (``sim.terminated``, e.g. a Brax env's ``done``), else 1."""
    return 1 - sim.terminated(x) if hasattr(sim, "terminated") else 1


def td_lambda(costs, next_values, gamma: float, lam: float, dones=None):
    """TD(λ) targets of a window, SHAC's recursion (time-major (h, B) arrays), with per-step dones.

    ``dones[i]`` = 1 where the episode ends at x_{i+1} (``next_values[i]`` is then the value it ends in: 0
    after a termination); the last step always ends the window (``dones`` None: only it). The target of step
    i is the λ-return up to the first done step j ≥ i, m = j − i + 1 steps on:
    G_i = (1 − λ) Σ_{n=1}^{m−1} λ^{n−1} G_i^{(n)} + λ^{m−1} G_i^{(m)}, where the n-step return is
    G_i^{(n)} = Σ_{k<n} γ^k c_{i+k} + γ^n V_{i+n} and ``next_values[i]`` = V(x_{i+1}). Backwards, with
    d = dones[i] and Λ the weight of the longest return (Xu et al. 2022; their code's ``compute_target_values``)::

        Λ ← d + (1 − d) λΛ,   A ← (1 − d)(λγA + γV_{i+1} + (1 − Λ)/(1 − λ) c_i),   B ← γ(dV_{i+1} + (1 − d)B) + c_i,
        G_i = (1 − λ) A + Λ B

    Works on NumPy, JAX and torch arrays alike (a Python loop over h).
    """
    h = len(costs)
    targets = [None] * h
    A = B = 0.0 * costs[-1]
    lam_i = 1.0
    for i in reversed(range(h)):
        c, v = costs[i], next_values[i]
        d = 1.0 if i == h - 1 else (0.0 if dones is None else dones[i])
        lam_i = lam_i * lam * (1.0 - d) + d
        A = (1.0 - d) * (lam * gamma * A + gamma * v + (1.0 - lam_i) / (1.0 - lam) * c)
        B = gamma * (v * d + B * (1.0 - d)) + c
        targets[i] = (1.0 - lam) * A + lam_i * B
    return targets


def critic_weights(config, sim) -> list:
    """The critic's initial weights (the same in both frameworks; its own stream of the config's seed).

    ``critic_init="orthogonal"``: every layer's W orthogonal times √2, the output layer's too, and b = 0, as
    the published ``CriticMLP`` (models/critic.py, with models/model_utils.py:10-13); ``"uniform"``: W, b ~
    U(±1/√fan_in). With ``critic_layer_norm`` each hidden layer's LayerNorm starts at scale 1, offset 0."""
    sizes = _policy.layer_sizes(sim.obs_dim, 1, config.critic_hidden, config.critic_activation)
    if config.critic_init == "orthogonal":
        weights = _policy.init_weights(sizes, config.seed, stream=1, scheme="orthogonal", gain=math.sqrt(2.0))
    else:
        weights = _policy.init_weights(sizes, config.seed, stream=1)
    return _policy.with_layer_norm(weights) if config.critic_layer_norm else weights


class GuardError(NonFiniteError):
    """A SHAC run stopped by the published code's divergence checks (``guards=True``): the target critic's |V|
    or the actor's gradient norm before clipping passed ``GUARD_LIMIT``."""


def check_guards(config, metrics: dict, epoch: int, member: str = "") -> None:
    """Raise :class:`GuardError` at the first update of ``epoch`` (0-based) whose ``value_max`` (the largest
    |V| the window bootstrapped from) or finite ``grad_norm`` passes ``GUARD_LIMIT``, unless an earlier
    update is non-finite and stops the run (``on_nonfinite='stop'``: that stop is reported instead).
    ``metrics``: the epoch's per-update arrays; the error carries them up to the stopping update, which the run
    writes to ``updates.csv`` before it stops. Nothing is checked with ``guards=False``."""
    if not config.guards:
        return
    finite = np.asarray(metrics["finite"], bool)
    norms, values = np.asarray(metrics["grad_norm"], float), np.asarray(metrics["value_max"], float)
    for i in range(len(finite)):
        if not finite[i] and config.on_nonfinite == "stop":
            return
        what = None
        if values[i] > GUARD_LIMIT:
            what = (f"the target critic's value reached |V| = {values[i]:.3g} > {GUARD_LIMIT:.0e}; lower the critic's "
                    "learning rate (--critic-lr) or scale the task's cost down")
        elif finite[i] and norms[i] > GUARD_LIMIT:
            what = (f"the actor's gradient norm before clipping is {norms[i]:.3g} > {GUARD_LIMIT:.0e}; lower the learning "
                    "rate (--lr), shorten the window (--window) or choose a flow that stops more of the gradient")
        if what:
            update = epoch * config.steps_per_epoch + i + 1
            raise GuardError(f"SHAC stopped at update {update} (epoch {epoch + 1}), flow {config.flow}{member}: {what}. "
                             "The published SHAC stops here too; pass --no-guards (guards=False) to train on",
                             update=update, epoch=epoch + 1, flow=config.flow,
                             metrics={k: np.asarray(v)[: i + 1] for k, v in metrics.items()})
