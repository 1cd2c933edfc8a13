"""Differentiable simulators for gradstop, behind one string-keyed registry.

    >>> from sims import make
    >>> sim = make("cartpole", backend="torch", poles=2)
    >>> sim = make("cartpole", backend="jax", preset="literature", poles=3)
    >>> sim = make("diffrl_cartpole", backend="torch")   # SHAC's published cartpole swing-up (NVlabs/DiffRL)

Every simulator exists in JAX and PyTorch with identical physics (one class, ``backend=``).
Brax environments are JAX-only and have pytree states: ``make("brax:hopper", pipeline="spring")``
(``sims.brax``; needs the ``brax`` extra).

Your own simulator (docs/simulators.md) is built the same way, by a name you register or by where it
lives, and then works everywhere a name does (``TrainConfig(sim=...)``, ``gradstop train --sim``)::

    >>> sims.register("pendulum", Pendulum)
    >>> sim = make("pendulum", backend="torch", length=0.5)
    >>> sim = make("mypackage.pendulum:Pendulum", backend="jax")   # imported from the current directory or PYTHONPATH
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
import weakref

from sims._ops import BACKENDS
from sims.base import Sim
from sims.cartpole import CartPole
from sims.contact import Bounce
from sims.diffrl_cartpole import DiffRLCartPole
from sims.neural import Neural
from sims.pointmass import PointMass

__all__ = ["make", "names", "register", "origin", "Sim", "PointMass", "CartPole", "Neural", "Bounce", "DiffRLCartPole", "BACKENDS", "BUILTINS"]

_BUILTIN = {cls.name: cls for cls in (PointMass, CartPole, Neural, Bounce, DiffRLCartPole)}
BUILTINS = tuple(sorted(_BUILTIN))  # the names of the simulators that come with gradstop
_REGISTRY: dict = dict(_BUILTIN)  # name -> a Sim subclass, or any callable taking backend= and the parameters
_ORIGIN = weakref.WeakKeyDictionary()  # simulator -> the make() arguments that built it (see origin)


def names() -> list[str]:
    """The registered simulator names: the built-ins and those given to :func:`register`.

    Any Brax environment is also available as ``brax:<env>``, and any importable class as ``"module:Class"``.
    """
    return sorted(_REGISTRY)


def register(name: str, factory=None, *, replace: bool = False):
    """Make ``factory`` available as ``make(name, ...)``, ``TrainConfig(sim=name)`` and ``--sim name``.

    Args:
      name: the simulator's name: a non-empty string without ``:`` (``module:Class`` and ``brax:<env>``
        are resolved by import).
      factory: a :class:`sims.base.Sim` subclass, or any callable taking ``backend=`` and the simulator's
        parameters as keywords and returning a simulator. Omitted: returns a class decorator.
      replace: replace a simulator already registered under ``name`` (the built-ins cannot be replaced).

    Returns ``factory``, so ``@sims.register("pendulum")`` works as a decorator. Registering the same
    factory twice, or a class redefined under the same module and name (a re-run notebook cell), is allowed.

    A name registered in one process is unknown in another: a run that another process resumes or trains
    (a Ray sweep) needs ``"module:Class"``, or the module that registers it imported there too.

    Raises:
      TypeError: ``name`` is not a string, or ``factory`` is not callable.
      ValueError: ``name`` is empty, contains ``:``, or is taken (the message names what holds it).
    """
    if factory is None:
        return lambda f: register(name, f, replace=replace)
    if not isinstance(name, str):
        raise TypeError(f"sims.register: the name must be a string, got {type(name).__name__} {name!r}")
    if not name or name != name.strip() or ":" in name:
        raise ValueError(f"sims.register: name {name!r} must be a non-empty word without ':' and surrounding spaces "
                         "(':' is how make() reads 'module:Class' and 'brax:<env>')")
    if not callable(factory):
        what = type(factory).__name__
        hint = (f": register the class (sims.register({name!r}, {what})), not an instance of it"
                if isinstance(factory, Sim) or hasattr(factory, "step") else "")
        raise TypeError(f"sims.register({name!r}, ...): the factory must be a Sim subclass or a callable taking "
                        f"backend= and the parameters, got a {what}{hint}")
    held = _REGISTRY.get(name)
    if held is not None and held is not factory and not _redefinition(held, factory):
        if name in _BUILTIN:
            raise ValueError(f"sims.register: {name!r} is a built-in simulator; register yours under another name")
        if not replace:
            raise ValueError(f"sims.register: the name {name!r} is taken by {_qualname(held)}; choose another name, "
                             "or pass replace=True to replace it")
    _REGISTRY[name] = factory
    return factory


def origin(sim) -> dict | None:
    """The :func:`make` call that built ``sim``: ``{"name", "backend", "preset", "params"}``; None if ``make``
    did not build it (or it cannot be tracked). The trainers read it to rebuild a simulator from a config."""
    try:
        found = _ORIGIN.get(sim)
    except TypeError:  # neither hashable nor weakly referenceable
        return None
    return None if found is None else {**found, "params": dict(found["params"])}


def _qualname(factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', type(factory).__name__)}"


def _redefinition(held, factory) -> bool:
    """A class or function defined again under the same module and name (a notebook cell run twice)."""
    return (isinstance(held, type) == isinstance(factory, type) and hasattr(held, "__qualname__")
            and _qualname(held) == _qualname(factory))


def _on_path(folder: str) -> None:
    """Put ``folder`` first on ``sys.path`` (as ``python -m`` does for the current directory) unless it is there."""
    real = os.path.realpath(folder)
    if os.path.isdir(real) and not any(os.path.realpath(p or os.curdir) == real for p in sys.path):
        sys.path.insert(0, real)


def _resolve(spec: str):
    """The object ``"package.module:attr"`` names, imported with the current directory on ``sys.path``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ValueError(f"simulator {spec!r} is not of the form 'package.module:Class'")
    _on_path(os.getcwd())
    where = (f"the module must be importable from the current directory ({os.getcwd()}) or PYTHONPATH, "
             f"as `python -c 'import {module_name}'` would import it")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(f"simulator {spec!r}: no module named {err.name!r}; {where}") from None
        raise  # the module was found; something it imports is missing, and that error says what
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            defined = sorted(k for k, v in vars(module).items()
                             if isinstance(v, type) and issubclass(v, Sim) and v.__module__ == module.__name__)
            hint = f"; its simulator classes: {', '.join(defined)}" if defined else ""
            raise ValueError(f"simulator {spec!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                             f"attribute {attr!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"simulator {spec!r}: {attr} is a {type(obj).__name__}, not a Sim subclass or a callable "
                         "taking backend= and the parameters")
    return obj


def _make_brax(name: str, backend: str, preset, params) -> Sim:
    from sims.brax import Brax

    if preset is not None:
        raise ValueError(f"{name} has no presets; pass its parameters (pipeline, solver_iterations) directly")
    allowed = {"pipeline", "solver_iterations"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"brax simulators have no parameter {', '.join(map(repr, unknown))}; their parameters: {', '.join(sorted(allowed))}")
    return Brax(env=name.removeprefix("brax:"), backend=backend, **params)


def _build(name: str, factory, backend: str, preset, params):
    """Call ``factory`` with ``backend`` and the preset's parameters under ``params``, checking the names first."""
    presets = getattr(factory, "PRESETS", None) or {}
    if preset is not None and preset not in presets:
        raise ValueError(f"{name} has no preset {preset!r}; available: {sorted(presets) or 'none'}")
    merged = {**(presets[preset] if preset else {}), **params}
    if isinstance(factory, type) and dataclasses.is_dataclass(factory) and any(
            f.name == "backend" for f in dataclasses.fields(factory)):
        allowed = {f.name for f in dataclasses.fields(factory) if f.init} - {"backend"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(f"{name} has no parameter {', '.join(map(repr, unknown))}; its parameters: {', '.join(sorted(allowed))}")
        return factory(backend=backend, **merged)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: let the call say what it takes
        signature = None
    if signature is not None:
        try:
            signature.bind(backend=backend, **merged)
        except TypeError as err:
            taken = [p for p in signature.parameters if p != "backend"]
            raise ValueError(f"{name} ({_qualname(factory)}) cannot be called with backend= and "
                             f"{', '.join(map(repr, merged)) or 'no parameters'}: {err}; its parameters: "
                             f"{', '.join(taken) or 'none'} (a simulator factory takes backend= and its parameters as keywords)") from None
    return factory(backend=backend, **merged)


def make(name: str, backend: str = "jax", preset: str | None = None, **params) -> Sim:
    """Build the simulator ``name`` for ``backend`` ('jax', 'torch', or 'numpy' to simulate without gradients).

    Args:
      name: one of :func:`names` (the built-ins and those given to :func:`register`), ``"brax:<env>"`` for a
        Brax environment (JAX only), or ``"package.module:Class"``: a Sim subclass or factory, imported from
        the current directory or ``PYTHONPATH``.
      backend: the framework the simulator computes in.
      preset: a named set of parameters (e.g. cartpole's ``"literature"``; a class's ``PRESETS``); explicit
        ``params`` override it.
      **params: the simulator's parameters (its class docstring lists them). A dataclass with a ``backend``
        field has them checked against its fields; any other factory is called as ``factory(backend=..., **params)``.

    Raises:
      ValueError: unknown name, module, attribute, backend, preset or parameter, or an invalid value; the
        message lists what is valid.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not isinstance(name, str):
        label = getattr(name, "__name__", type(name).__name__)
        raise ValueError(f"the simulator must be given by name, got {label!r}: register it (sims.register('myname', "
                         f"{label})) or name it by where it lives ('package.module:{label}')")
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif name.startswith("brax:"):
        return _make_brax(name, backend, preset, params)
    elif ":" in name:
        factory = _resolve(name)
    else:
        raise ValueError(f"unknown simulator {name!r}; available: {', '.join(names())}, brax:<env> (JAX), or your own "
                         "as 'package.module:Class' or a name given to sims.register")
    sim = _build(name, factory, backend, preset, params)
    try:
        _ORIGIN[sim] = {"name": name, "backend": backend, "preset": preset, "params": dict(params)}
    except TypeError:  # not hashable or not weakly referenceable: origin() returns None
        pass
    return sim
