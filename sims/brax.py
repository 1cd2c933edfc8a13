"""Brax environments as gradstop simulators (JAX only): ``sims.make("brax:<env>", pipeline=...)``.

The rollout state is the environment's own ``brax.envs.State`` (its physics pipeline state, the
observation, the reward of the step that led to it, ...), batched on axis 0 of every leaf: a
pytree, not a flat vector. ``step`` is ``env.step`` vmapped over the batch; ``obs`` reads
``state.obs``; the running cost is minus the env's own reward, except where that reward cannot
be differentiated (inverted_pendulum's is the constant 1.0; see ``COSTS``).

Differentiable pipelines: ``spring`` (default; the cheapest), ``positional``, ``generalized``,
and ``mjx`` with its solver's iteration count set to ``solver_iterations`` (default 1: reverse
mode cannot pass through MJX's adaptive ``while_loop``, one fixed iteration can). Episodes do not
reset inside a rollout: ``done`` is carried along but ignored.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import numpy as np

from sims.base import Sim

PIPELINES = ("spring", "positional", "generalized", "mjx")


def _pendulum_cost(state, action):
    """inverted_pendulum: pole angle² + 0.1·cart position² + 0.001·‖a‖² (its reward is constant)."""
    q = state.pipeline_state.q
    return q[..., 1] ** 2 + 0.1 * q[..., 0] ** 2 + 1e-3 * (action**2).sum(-1)


# Per-env running costs where minus the env's reward is no use for gradients.
COSTS = {"inverted_pendulum": _pendulum_cost}


@functools.cache
def _brax_envs():
    try:
        from brax import envs
    except ImportError as err:
        raise ImportError("Brax simulators need brax: pip install 'gradstop[brax]'") from err
    return envs


def available() -> list[str]:
    """The Brax environment names the installed Brax provides."""
    return sorted(_brax_envs()._envs)


@dataclasses.dataclass(frozen=True, eq=False)
class Brax(Sim):
    """A Brax environment behind the simulator protocol, with pytree states.

    Args:
      env: the Brax environment's name (``sims.brax.available()`` lists them).
      pipeline: physics pipeline, one of ``PIPELINES``.
      solver_iterations: MJX solver iterations (mjx only; default 1 so reverse mode works).
      backend: must be 'jax'.
    """

    env: str = "inverted_pendulum"
    pipeline: str = "spring"
    solver_iterations: int | None = None
    dt: float = dataclasses.field(default=0.0, repr=False, init=False)

    name: ClassVar[str] = "brax"
    pytree_state: ClassVar[bool] = True

    def __post_init__(self):
        if self.backend != "jax":
            raise ValueError(f"brax:{self.env} runs in JAX only, got backend={self.backend!r}; use backend='jax'")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"brax: unknown pipeline {self.pipeline!r}; choose one of {PIPELINES}")
        if self.solver_iterations is not None:
            if self.pipeline != "mjx":
                raise ValueError("brax: solver_iterations applies to pipeline='mjx' only")
            if isinstance(self.solver_iterations, bool) or not isinstance(self.solver_iterations, int) or self.solver_iterations < 1:
                raise ValueError(f"brax: solver_iterations must be an integer ≥ 1, got {self.solver_iterations!r}")
        envs = _brax_envs()
        if self.env not in envs._envs:
            raise ValueError(f"unknown Brax environment {self.env!r}; this Brax has: {', '.join(available())}")
        env = envs.get_environment(self.env, backend=self.pipeline)
        if self.pipeline == "mjx":
            env.sys = env.sys.tree_replace({"opt.iterations": self.solver_iterations or 1})
        object.__setattr__(self, "_env", env)
        object.__setattr__(self, "dt", float(env.dt))

    @property
    def state_dim(self) -> int:
        raise AttributeError(f"brax:{self.env} has pytree states, not flat vectors: it has no state_dim")

    @property
    def obs_dim(self) -> int:
        return self._env.observation_size

    @property
    def action_dim(self) -> int:
        return self._env.action_size

    def step(self, x, a):
        import jax

        return jax.vmap(self._env.step)(x, a)

    def obs(self, x):
        return x.obs

    def cost(self, x_next, a):
        custom = COSTS.get(self.env)
        return custom(x_next, a) if custom else -x_next.reward

    def terminal_cost(self, x):
        return x.reward * 0.0

    def terminated(self, x):
        """1 where the env says its episode is over (e.g. hopper fallen), else 0 (B,); SHAC bootstraps 0 there."""
        return x.done

    def reward(self, x):
        """The env's own reward of the step that led to ``x`` (B,): episode reward = Σ over a rollout."""
        return x.reward

    def reset(self, key=None, batch: int = 1, dtype=None):
        """``batch`` initial states from the env's own reset distribution (``key``: PRNG key or int)."""
        import jax

        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer ≥ 1, got {batch!r}")
        key = jax.random.key(0 if key is None else key) if key is None or isinstance(key, (int, np.integer)) else key
        return jax.vmap(self._env.reset)(jax.random.split(key, batch))

    def describe(self) -> dict:
        return {"name": f"brax:{self.env}", "pipeline": self.pipeline, "solver_iterations": self.solver_iterations,
                "dt": self.dt}
