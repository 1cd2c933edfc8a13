"""Differentiable simulators for gradstop, behind one string-keyed registry.

    >>> from sims import make
    >>> sim = make("cartpole", backend="torch", poles=2)
    >>> sim = make("cartpole", backend="jax", preset="literature", poles=3)

Every simulator exists in JAX and PyTorch with identical physics (one class, ``backend=``).
Brax environments are JAX-only and have pytree states: ``make("brax:hopper", pipeline="spring")``
(``sims.brax``; needs the ``brax`` extra).
"""

from __future__ import annotations

import dataclasses

from sims._ops import BACKENDS
from sims.base import Sim
from sims.cartpole import CartPole
from sims.neural import Neural
from sims.pointmass import PointMass

__all__ = ["make", "names", "Sim", "PointMass", "CartPole", "Neural", "BACKENDS"]

_REGISTRY: dict[str, type[Sim]] = {cls.name: cls for cls in (PointMass, CartPole, Neural)}


def names() -> list[str]:
    """The registered simulator names (plus ``brax:<env>`` for any Brax environment)."""
    return sorted(_REGISTRY)


def _make_brax(name: str, backend: str, preset, params) -> Sim:
    from sims.brax import Brax

    if preset is not None:
        raise ValueError(f"{name} has no presets; pass its parameters (pipeline, solver_iterations) directly")
    allowed = {"pipeline", "solver_iterations"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"brax simulators have no parameter {', '.join(map(repr, unknown))}; their parameters: {', '.join(sorted(allowed))}")
    return Brax(env=name.removeprefix("brax:"), backend=backend, **params)


def make(name: str, backend: str = "jax", preset: str | None = None, **params) -> Sim:
    """Build the simulator ``name`` for ``backend`` ('jax', 'torch', or 'numpy' to simulate without gradients).

    Args:
      name: one of :func:`names`, or ``"brax:<env>"`` for a Brax environment (JAX only).
      backend: the framework the simulator computes in.
      preset: a named set of parameters (e.g. cartpole's ``"literature"``); explicit ``params``
        override it.
      **params: the simulator's parameters (its class docstring lists them).

    Raises:
      ValueError: unknown name, backend, preset or parameter, or an invalid value; the message
        lists what is valid.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if isinstance(name, str) and name.startswith("brax:"):
        return _make_brax(name, backend, preset, params)
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown simulator {name!r}; available: {', '.join(names())}, or brax:<env> (JAX)")
    cls = _REGISTRY[name]
    presets = getattr(cls, "PRESETS", {})
    if preset is not None and preset not in presets:
        raise ValueError(f"{name} has no preset {preset!r}; available: {sorted(presets) or 'none'}")
    allowed = {f.name for f in dataclasses.fields(cls)} - {"backend"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"{name} has no parameter {', '.join(map(repr, unknown))}; its parameters: {', '.join(sorted(allowed))}")
    merged = {**(presets[preset] if preset else {}), **params}
    return cls(backend=backend, **merged)
