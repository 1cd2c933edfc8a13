"""A simulator whose forward is one simulator's and whose derivatives are another's: surrogate Jacobians.

``Surrogate(sim, model)`` steps with ``sim`` (the values are exactly ``sim``'s) while every derivative of the
step, and so the reverse sweep of any flow, native or fused, is ``model``'s::

    step(x, a) = sg(g_sim(x, a)) + (g_model(x, a) − sg(g_model(x, a)))

(value: g_sim + 0, exactly; gradient: g_model's). Observation, costs, resets and the task's measures are
``sim``'s. This is the flow part ``surrogate:NAME`` of ``gradstop.rollout``: the full model forward and a
simpler model's tangent (a coarser preset of the same sim, fewer substeps, a linearised or learned model).
Pytree states (Brax) are mixed leaf by leaf, JAX only: the model must step to the same tree (the same
environment and pipeline, other parameters, e.g. MJX with fewer solver iterations).
The cost is one extra forward step of ``model`` per step, and its VJP in place of ``sim``'s.
"""

from __future__ import annotations

__all__ = ["Surrogate", "build_model"]


def build_model(name: str, backend: str):
    """``sims.make(name, backend=backend)``, built eagerly: inside a traced rollout (where ``surrogate:NAME`` is
    resolved) a model's constants, e.g. an MJX system's, must stay concrete."""
    import sims

    if backend != "jax":
        return sims.make(name, backend=backend)
    import jax

    with jax.ensure_compile_time_eval():
        return sims.make(name, backend=backend)


class Surrogate:
    """``sim`` with ``model``'s step derivatives (see the module docstring); both of one backend and size."""

    def __init__(self, sim, model):
        self.pytree_state = bool(getattr(sim, "pytree_state", False))
        kind = {True: "pytree", False: "flat"}
        if bool(getattr(model, "pytree_state", False)) != self.pytree_state:
            raise ValueError(f"the surrogate {_label(model)!r} has {kind[not self.pytree_state]} states where the simulator "
                             f"{_label(sim)!r} has {kind[self.pytree_state]} ones: a surrogate's states must be the simulator's")
        sizes = ("backend", "action_dim", "obs_dim") if self.pytree_state else ("backend", "state_dim", "action_dim", "obs_dim")
        for what in sizes:
            mine, theirs = getattr(sim, what, None), getattr(model, what, None)
            if mine != theirs:
                raise ValueError(f"the surrogate {getattr(model, 'name', model)!r} has {what} {theirs!r}, but the simulator "
                                 f"{getattr(sim, 'name', sim)!r} has {mine!r}: a surrogate's states and actions must be the "
                                 "simulator's; build it with matching parameters (e.g. the same poles)")
        if self.pytree_state and sim.backend != "jax":
            raise ValueError("surrogate Jacobians of pytree states need the JAX backend")
        self.sim, self.model = sim, model
        if self.pytree_state:  # the model steps from the simulator's states: its own must have their tree
            import jax

            with jax.ensure_compile_time_eval():  # one concrete state each (MJX's reset cannot be traced abstractly)
                _check_same_tree(sim.reset(0, 1), model.reset(0, 1), _label(sim), _label(model))
        self.backend, self.dt = sim.backend, sim.dt
        self.name = f"{getattr(sim, 'name', 'sim')}~{getattr(model, 'name', 'model')}"
        self.action_dim, self.obs_dim = sim.action_dim, sim.obs_dim
        if not self.pytree_state:  # a pytree sim has no state_dim (asking is the sim's AttributeError)
            self.state_dim = sim.state_dim
        if sim.backend == "jax":
            import jax

            self._stop = jax.lax.stop_gradient
        elif sim.backend == "torch":
            self._stop = lambda v: v.detach()
        else:
            self._stop = lambda v: v

    def step(self, x, a):
        true, tangent = self.sim.step(x, a), self.model.step(x, a)
        if not self.pytree_state:
            return self._mix(true, tangent)
        import jax
        import jax.numpy as jnp

        _check_same_tree(true, tangent, _label(self.sim), _label(self.model))
        # leaf by leaf; integer and boolean leaves (step counters, flags) have no derivative: the true value
        return jax.tree.map(lambda t, m: self._mix(t, m) if jnp.issubdtype(t.dtype, jnp.inexact) else t, true, tangent)

    def _mix(self, true, tangent):
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


def _label(sim) -> str:
    """A simulator's name for messages: Brax's with its pipeline."""
    about = sim.describe() if hasattr(sim, "describe") else {}
    name = about.get("name", getattr(sim, "name", type(sim).__name__))
    return f"{name} (pipeline {about['pipeline']})" if "pipeline" in about else str(name)


def _check_same_tree(true, tangent, sim_name: str, model_name: str) -> None:
    """A pytree surrogate's step must return the simulator's tree: the same structure, shapes and dtypes."""
    import jax

    if jax.tree.structure(true) != jax.tree.structure(tangent):
        raise ValueError(f"the surrogate {model_name!r} has a state tree other than the simulator {sim_name!r}'s "
                         "(e.g. another Brax pipeline, whose pipeline states differ): use the same environment and pipeline "
                         "with other parameters (e.g. mjx with fewer solver_iterations)")
    for (path, t), m in zip(jax.tree_util.tree_leaves_with_path(true), jax.tree.leaves(tangent), strict=True):
        if (t.shape, t.dtype) != (m.shape, m.dtype):
            raise ValueError(f"the surrogate {model_name!r}'s state leaf {jax.tree_util.keystr(path)} is {m.dtype}{list(m.shape)}, "
                             f"the simulator {sim_name!r}'s {t.dtype}{list(t.shape)}: a surrogate's states must be the simulator's")
