"""The simulator protocol every gradstop rollout reads, and its shared machinery.

A simulator is small and pure::

    sim.step(x, a) -> x'          x: (B, state_dim), a: (B, action_dim)
    sim.obs(x) -> o               o: (B, obs_dim)
    sim.cost(x_next, a) -> c      c: (B,), the running cost of one step, read at x_{t+1}
    sim.terminal_cost(x_H) -> c   c: (B,), zero unless the task defines one
    sim.reset(key, batch) -> x0   initial states, uniform in init_bounds()
    sim.success(x_H) -> s         s: (B,) in [0, 1], the task's success measure (None: no measure)

Physics is written once against ``self.xp`` (``jax.numpy`` or ``torch``), so the JAX and torch
twins of a model are one class with ``backend`` set, and hold identical physics by construction.
The whole protocol, the rules for ``xp`` and a complete example of your own simulator:
docs/simulators.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from sims import _ops


@dataclasses.dataclass(frozen=True, eq=False)
class Sim:
    """Base class of the flat-state simulators (point mass, cartpole, neural).

    Subclasses (``@dataclasses.dataclass(frozen=True, eq=False)``, their parameters as fields) set ``name``,
    give ``state_dim``/``action_dim`` (and ``obs_dim`` if it differs from ``state_dim``), and implement
    ``step``, ``cost``, ``init_bounds`` and optionally ``obs``, ``terminal_cost`` and ``success``
    (docs/simulators.md). Instances are immutable and hash by identity, so JAX can close over them in
    jitted code.
    """

    backend: str = "jax"
    dt: float = 0.01

    name: ClassVar[str] = "sim"

    def __post_init__(self):
        _ops.ops(self.backend)  # validates the backend and imports its framework once
        positive(self, dt=self.dt)

    # -- the framework --------------------------------------------------------------------------
    @property
    def ops(self):
        return _ops.ops(self.backend)

    @property
    def xp(self):
        """The array namespace: ``jax.numpy`` or ``torch``."""
        return self.ops.xp

    # -- the protocol ---------------------------------------------------------------------------
    @property
    def state_dim(self) -> int:
        raise self._missing("state_dim", "the length of a state vector (a class attribute or property)")

    @property
    def obs_dim(self) -> int:
        return self.state_dim

    @property
    def action_dim(self) -> int:
        raise self._missing("action_dim", "the length of an action vector (a class attribute or property)")

    def step(self, x, a):
        raise self._missing("step(x, a)", "the next state, (B, state_dim)")

    def obs(self, x):
        return x

    def cost(self, x_next, a):
        raise self._missing("cost(x_next, a)", "the running cost of a step, (B,), read at the state after it")

    def terminal_cost(self, x):
        return x[..., 0] * 0.0

    def success(self, x):
        """The task's success measure at a final state, (B,) values in [0, 1]; None if the task has none."""
        return None

    def init_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension bounds (low, high) of the uniform initial-state distribution."""
        raise self._missing("init_bounds()", "(low, high) NumPy arrays of length state_dim; reset() and the "
                            "trainers draw initial states uniformly between them")

    def _missing(self, what: str, returns: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not implement {what}: define it in the class, "
                                   f"returning {returns} (docs/simulators.md lists the protocol)")

    def reset(self, key=None, batch: int = 1, dtype=None):
        """Sample ``batch`` initial states uniformly in ``init_bounds()``.

        Args:
          key: JAX: a PRNG key or int seed; torch: an int seed, a ``torch.Generator`` or None
            (torch's global generator).
          batch: number of initial states.
          dtype: floating dtype (default: the framework's default float).
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer ≥ 1, got {batch!r}")
        dtype = self.ops.default_float() if dtype is None else dtype
        u = self.ops.uniform(key, (batch, self.state_dim), dtype)
        low, high = self.init_bounds()
        return self.ops.constant(low, u) + self.ops.constant(high - low, u) * u

    def describe(self) -> dict:
        """The sim's name and parameters, for results files."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        return {"name": self.name, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({params})"


def positive(sim: Sim, **values) -> None:
    """Raise a ValueError naming the parameter if any of ``values`` is not a finite number > 0."""
    for key, value in values.items():
        if not (_finite(value) and value > 0):
            raise ValueError(f"{sim.name}: {key} must be a positive number (finite, > 0), got {value!r}{_default(sim, key)}")


def non_negative(sim: Sim, **values) -> None:
    """Raise a ValueError naming the parameter if any of ``values`` is not a finite number ≥ 0."""
    for key, value in values.items():
        if not (_finite(value) and value >= 0):
            raise ValueError(f"{sim.name}: {key} must be a number ≥ 0 (and finite), got {value!r}{_default(sim, key)}")


def _finite(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _default(sim: Sim, key: str) -> str:
    """'; its default is …' for a parameter with a default, for the message of a refused value."""
    default = next((f.default for f in dataclasses.fields(sim) if f.name == key), None)
    return f"; pass a value such as its default, {key}={default!r}" if _finite(default) else ""
