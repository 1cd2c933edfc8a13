"""A simulator whose forward is one simulator's and whose derivatives are another's: surrogate Jacobians.

``Surrogate(sim, model)`` steps with ``sim`` (the values are exactly ``sim``'s) while every derivative of the
step, and so the reverse sweep of any flow, native or fused, is ``model``'s::

    step(x, a) = sg(g_sim(x, a)) + (g_model(x, a) − sg(g_model(x, a)))

(value: g_sim + 0, exactly; gradient: g_model's). Observation, costs, resets and the task's measures are
``sim``'s. This is the flow part ``surrogate:NAME`` of ``gradstop.rollout``: the full model forward and a
simpler model's tangent (a coarser preset of the same sim, fewer substeps, a linearised or learned model).
The cost is one extra forward step of ``model`` per step, and its VJP in place of ``sim``'s.
"""

from __future__ import annotations

__all__ = ["Surrogate"]


class Surrogate:
    """``sim`` with ``model``'s step derivatives (see the module docstring); both of one backend and size."""

    def __init__(self, sim, model):
        for what in ("backend", "state_dim", "action_dim", "obs_dim"):
            mine, theirs = getattr(sim, what, None), getattr(model, what, None)
            if mine != theirs:
                raise ValueError(f"the surrogate {getattr(model, 'name', model)!r} has {what} {theirs!r}, but the simulator "
                                 f"{getattr(sim, 'name', sim)!r} has {mine!r}: a surrogate's states and actions must be the "
                                 "simulator's; build it with matching parameters (e.g. the same poles)")
        if getattr(sim, "pytree_state", False) or getattr(model, "pytree_state", False):
            raise ValueError("surrogate Jacobians need flat states; Brax's pytree states are not supported")
        self.sim, self.model = sim, model
        self.backend, self.dt = sim.backend, sim.dt
        self.name = f"{getattr(sim, 'name', 'sim')}~{getattr(model, 'name', 'model')}"
        self.state_dim, self.action_dim, self.obs_dim = sim.state_dim, sim.action_dim, sim.obs_dim
        if sim.backend == "jax":
            import jax

            self._stop = jax.lax.stop_gradient
        elif sim.backend == "torch":
            self._stop = lambda v: v.detach()
        else:
            self._stop = lambda v: v

    def step(self, x, a):
        true, tangent = self.sim.step(x, a), self.model.step(x, a)
        return self._stop(true) + (tangent - self._stop(tangent))

    def obs(self, x):
        return self.sim.obs(x)

    def cost(self, x_next, a):
        return self.sim.cost(x_next, a)

    def terminal_cost(self, x):
        return self.sim.terminal_cost(x)

    def reset(self, key=None, batch: int = 1, dtype=None):
        return self.sim.reset(key, batch, dtype=dtype)

    def __getattr__(self, name):  # the task's measures and the rest of its protocol (success, init_bounds, ...)
        if name in ("sim", "model"):
            raise AttributeError(name)
        return getattr(self.sim, name)
