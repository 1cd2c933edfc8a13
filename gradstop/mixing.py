"""Zeroth- and α-order gradients: the framework-neutral half of the flows ``zero``, ``alpha:α``, ``alpha:auto``.

Suh, Simchowitz, Zhang & Tedrake, "Do Differentiable Simulators Give Better Policy Gradients?" (ICML 2022).
Gaussian noise w_{i,h} ~ N(0, σ²I) is added to every action of M = B·N rollouts (B initial states, N draws
each); V(w_i) is rollout i's total cost (its costs are those of the noisy actions) and V_0 that of the
noise-free rollout from the same initial state::

    ĝ0 = (1/M) Σ_i (V(w_i) − V_0) · Σ_h (∂π(o_{i,h})/∂θ)ᵀ w_{i,h} / σ²      zeroth order (score function)
    ĝ1 = (1/M) Σ_i ∇θ V(w'_i)                                                first order, any first-order flow
    ĝα = α·ĝ1 + (1 − α)·ĝ0

ĝ0 and ĝ1 are drawn from independent noise (w and w'), as in the paper's experiments; their per-sample
variances σ0², σ1² are the mean squared distances of the per-sample gradients from their mean (the
trace of the covariance, normalised by M as the published code does). ``alpha:auto`` is the paper's
bias-constrained choice (:func:`choose_alpha`) with ĝ0's vector Bernstein bound (:func:`bernstein_bound`).

The backends (``gradstop.jax.mixing``, ``gradstop.torch.mixing``) compute the estimators; this module
holds what they share: the noise as part of the simulator state (:class:`ActionNoise`, so every
first-order flow and implementation supplies ĝ1 unchanged), the bound and the rule for α.

How it differs from the published code (hjsuh94/alpha_gradient, ``alpha_gradient/statistical_analysis.py``
and ``objective_function_policy.py``), read as it executes:

- its ``compute_confidence_interval`` squares the variance it is given (σ⁴ where the bound has σ²);
  here the bound reads the variance itself;
- its default confidence argument ``delta=0.95`` enters log((d + 1)/δ) as the failure probability, a 5 %
  bound; here δ is the failure probability and defaults to 0.05;
- its ᾱ adds 1e-5 to the denominator σ0² + σ1²; here both variances zero gives ᾱ = 1 (both estimates exact).
"""

from __future__ import annotations

import math

__all__ = ["ActionNoise", "bernstein_bound", "choose_alpha", "spread", "STAT_NAMES", "check_samples"]

# What a zeroth-/α-order rollout reports per update (``Rollout.mixing``): α, ‖ĝ1 − ĝ0‖, ε, σ0², σ1².
STAT_NAMES = ("alpha", "bias", "eps", "var0", "var1")


class ActionNoise:
    """``sim`` with ``horizon`` steps of additive action noise carried in its state.

    A flat state becomes ``[x, u, w_t, …, w_{H−1}, 0, …]`` (a pytree state the tuple ``(x, u, table)``):
    the step applies ``a + w_t`` and keeps ``u = w_t``, so the running cost is that of the noisy action,
    ``c(x_{t+1}, a_t + w_t)``. The policy sees ``obs(x)`` only; no action reaches the noise, so a first-order
    flow's gradient of this sim's rollout is ∇θ V(w) and its edges are the simulator's.

    Args:
      sim: the simulator.
      horizon: H, the steps of noise the state carries.
      concat: the backend's concatenation along the last axis (``jnp.concatenate``/``torch.cat`` style:
        ``concat(list_of_arrays, axis)``).
    """

    def __init__(self, sim, horizon: int, concat):
        self.sim, self.horizon, self._concat = sim, horizon, concat
        self.backend, self.name, self.dt = sim.backend, f"action-noise({getattr(sim, 'name', 'sim')})", sim.dt
        self.obs_dim, self.action_dim = sim.obs_dim, sim.action_dim
        self.pytree_state = getattr(sim, "pytree_state", False)
        if not self.pytree_state:
            self.state_dim = sim.state_dim + (horizon + 1) * sim.action_dim

    def wrap(self, x, w):
        """Noisy states from states x (M, …) and their noise w (M, H, action_dim); u starts at 0."""
        table = w.reshape(w.shape[0], -1)
        u = table[:, : self.action_dim] * 0
        if self.pytree_state:
            return (x, u, table)
        return self._concat([x, u, table], -1)

    def split(self, X):
        """(x, u, table) of noisy states."""
        if self.pytree_state:
            return X
        n, a = self.sim.state_dim, self.action_dim
        return X[..., :n], X[..., n : n + a], X[..., n + a :]

    def step(self, X, a):
        x, _, table = self.split(X)
        w, k = table[..., : self.action_dim], self.action_dim
        shifted = self._concat([table[..., k:], table[..., :k] * 0], -1)
        x_next = self.sim.step(x, a + w)
        if self.pytree_state:
            return (x_next, w, shifted)
        return self._concat([x_next, w, shifted], -1)

    def obs(self, X):
        return self.sim.obs(self.split(X)[0])

    def cost(self, X_next, a):
        x, u, _ = self.split(X_next)
        return self.sim.cost(x, a + u)

    def terminal_cost(self, X):
        return self.sim.terminal_cost(self.split(X)[0])


def bernstein_bound(var0, samples: int, dim: int, bound: float, delta: float, xp):
    """ε with ‖ĝ0 − E ĝ0‖ ≤ ε with probability 1 − δ (vector Bernstein, as in Suh et al. 2022)::

        ε = sqrt(2 σ0² log((d + 1)/δ) / M) + 2 L log((d + 1)/δ) / (3 M)

    ``var0`` is σ0² (the per-sample variance), ``samples`` M, ``dim`` d (the number of parameters),
    ``bound`` L (a bound on a per-sample gradient's norm).
    """
    log = math.log((dim + 1) / delta)
    return xp.sqrt(2.0 * var0 * log / samples) + 2.0 * bound * log / (3.0 * samples)


def choose_alpha(var0, var1, bias, eps, tol: float, xp):
    """The bias-constrained α of Suh et al. (2022) from σ0², σ1², ‖ĝ1 − ĝ0‖ and ĝ0's bound ε.

    ᾱ = σ0² / (σ0² + σ1²) minimises the variance of ĝα (1 where both variances are 0); the bias of ĝα
    against ĝ0 is α·‖ĝ1 − ĝ0‖, and it may use up the tolerance γ left after ĝ0's own uncertainty::

        α = 0                     if ε > γ (ĝ0 too uncertain to check ĝ1 against)
        α = ᾱ                     if ᾱ·‖ĝ1 − ĝ0‖ ≤ γ − ε
        α = (γ − ε)/‖ĝ1 − ĝ0‖     otherwise

    Works on floats and on arrays of any backend ``xp`` (elementwise, jit-compatible).
    """
    total = var0 + var1
    alpha_bar = xp.where(total > 0, var0 / xp.where(total > 0, total, 1.0), 1.0)
    room = tol - eps
    capped = room / xp.where(bias > 0, bias, 1.0)
    alpha = xp.where(alpha_bar * bias <= room, alpha_bar, capped)
    return xp.where(eps > tol, xp.zeros_like(alpha), alpha)


def spread(per_sample, mean, xp):
    """Σ over leaves of the mean over samples of ‖g_i − ḡ‖²: the per-sample variance (trace of the covariance)."""
    return sum(xp.mean(xp.sum((g - m[None]).reshape(g.shape[0], -1) ** 2, -1)) for g, m in zip(per_sample, mean))


def check_samples(flow, batch: int) -> int:
    """M = batch · N, the noisy rollouts per estimator; ``alpha:auto`` needs M ≥ 2 for its variances."""
    m = batch * flow.mixing.samples
    if flow.mixing.auto and m < 2:
        raise ValueError(f"flow {flow.name!r} estimates per-sample variances from batch × samples = {batch} × "
                         f"{flow.mixing.samples} = {m} noisy rollout; it needs at least 2: pass a larger batch or "
                         f"add samples:N to the flow (e.g. '{flow.name}+samples:8')")
    return m
