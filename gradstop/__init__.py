"""gradstop: train controllers through differentiable physics, with control over how gradients flow.

    import gradstop as gs
    from sims import make

    sim = make("cartpole", backend="jax", poles=2)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim)
    out = gs.rollout(policy, sim, stop="input", horizon=100, key=0, batch=8)

The backends ``gradstop.jax`` and ``gradstop.torch`` load on first use, so either framework
alone is enough.
"""

from __future__ import annotations

import importlib

from gradstop.flows import Flow, parse_flow
from gradstop._checks import framework_of
from gradstop.rollout import IMPLS, Rollout, rollout
from gradstop.training import History, bptt
from gradstop.gradients import FlowGradients, gradients
from gradstop.diagnose import Diagnosis, NonFinite, diagnose
from gradstop.check import GradientCheck, check_gradients
from gradstop.precision import Precision, precision

__all__ = ["Flow", "parse_flow", "Rollout", "rollout", "IMPLS", "gradients", "FlowGradients", "bptt", "History", "diagnose", "Diagnosis", "NonFinite", "check_gradients", "GradientCheck", "precision", "Precision", "copy_weights", "get_weights", "jax", "torch"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in ("jax", "torch"):
        return importlib.import_module(f"gradstop.{name}")
    raise AttributeError(f"module 'gradstop' has no attribute {name!r}")


def get_weights(policy):
    """A policy's weights as a list of NumPy arrays, whichever framework it lives in."""
    return _backend_of(policy).get_weights(policy)


def copy_weights(src, dst):
    """Copy ``src``'s weights into ``dst`` (either framework to either); returns the updated ``dst``.

    A JAX policy is immutable, so the result must be used: ``dst = gs.copy_weights(src, dst)``.
    """
    return _backend_of(dst).set_weights(dst, get_weights(src))


def _backend_of(policy):
    found = framework_of(policy)
    if found is None:
        raise TypeError(f"cannot tell the framework of a {type(policy).__name__}: pass a gs.jax.mlp or gs.torch.mlp policy")
    return importlib.import_module(f"gradstop.{found}")
