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
import importlib.abc
import importlib.util
import sys
import warnings

from gradstop.flows import Flow, parse_flow
from gradstop._policy import copy_weights, get_weights
from gradstop.rollout import IMPLS, Rollout, rollout
from gradstop.training import History, bptt
from gradstop.gradients import FlowGradients, gradients
from gradstop.health.diagnose import Diagnosis, NonFinite, diagnose
from gradstop.health.check import GradientCheck, check_gradients
from gradstop.health.precision import Precision, precision
from gradstop.health.bias import BiasTest, bias_test
from gradstop.flows import Mixing

__all__ = ["Flow", "parse_flow", "Rollout", "rollout", "IMPLS", "gradients", "FlowGradients", "bptt", "History", "diagnose", "Diagnosis", "NonFinite", "check_gradients", "GradientCheck", "precision", "Precision", "bias_test", "BiasTest", "Mixing", "copy_weights", "get_weights", "jax", "torch"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in ("jax", "torch"):
        return importlib.import_module(f"gradstop.{name}")
    if f"gradstop.{name}" in _MOVED:  # gs.results, gs.sweep, ...: the moved module, with the finder's warning
        return importlib.import_module(f"gradstop.{name}")
    raise AttributeError(f"module 'gradstop' has no attribute {name!r}")


# Modules that moved into packages: the old import paths keep working for one release, with a warning.
# (gradstop.diagnose and gradstop.precision are the functions; their modules are gradstop.health.diagnose, .precision.)
_MOVED = {"gradstop.check": "gradstop.health.check",
          "gradstop.sweep": "gradstop.study.sweep", "gradstop.figures": "gradstop.study.figures",
          "gradstop.results": "gradstop.study.results", "gradstop.benchmark": "gradstop.bench.problem",
          "gradstop.report": "gradstop.bench.report", "gradstop.health_cli": "gradstop.cli.health",
          "gradstop.sweep_cli": "gradstop.cli.sweep"}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as its new module (the same object), warning once where it is imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = _MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
