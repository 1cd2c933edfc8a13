"""gs.check_gradients: passes on every built-in simulator, names the block of a wrong Jacobian, refuses bad input."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import gradstop as gs
from gradstop.health.check import BLOCKS
from sims import make
from sims.learned import Learned
from sims.pointmass import PointMass


@dataclasses.dataclass(frozen=True, eq=False)
class WrongJacobian(PointMass):
    """A point mass whose step's Jacobian (``block='step'``) or cost's (``block='cost'``) has one wrong entry:
    a term whose value is zero but whose derivative is 0.5."""

    block: str = "step"

    def _wrong(self, z):
        stop = z.detach() if self.backend == "torch" else __import__("jax").lax.stop_gradient(z)
        return 0.5 * (z - stop)

    def step(self, x, a):
        y = super().step(x, a)
        if self.block != "step":
            return y
        return self.ops.concat([y[:, :1] + self._wrong(x[:, 1:2]), y[:, 1:]], -1)  # ∂g_0/∂x_1 off by 0.5

    def cost(self, x_next, a):
        c = super().cost(x_next, a)
        return c + self._wrong(a[:, 0]) if self.block == "cost" else c  # ∂c/∂a_0 off by 0.5


@pytest.mark.parametrize("name, params", [
    ("pointmass", {}), ("cartpole", dict(poles=1)), ("cartpole", dict(poles=4)),
    ("cartpole", dict(preset="literature", poles=3)), ("neural", {}),
])
def test_every_builtin_sim_passes_torch(name, params):
    report = gs.check_gradients(make(name, backend="torch", **params), flows=["none", "input", "truncate:3", "combined"])
    assert report.passed, str(report)
    assert [r["check"] for r in report.rows][:8] == [b for b, _ in BLOCKS]


@pytest.mark.slow
def test_builtin_sims_pass_jax():
    report = gs.check_gradients(make("cartpole", backend="jax", poles=2), flows=["none", "combined"], horizon=5, directions=2)
    assert report.passed, str(report)


def test_learned_world_model_passes():
    true = make("pointmass", backend="torch", dims=2)
    rng = np.random.default_rng(0)
    layers = ((rng.normal(size=(6, 16)), rng.normal(size=16)), (rng.normal(size=(16, 4)), rng.normal(size=4)))
    report = gs.check_gradients(Learned(backend="torch", true=true, layers=layers), flows=["none", "input"])
    assert report.passed, str(report)


@pytest.mark.parametrize("backend, block, named", [
    ("jax", "step", "∂g/∂x"), ("torch", "step", "∂g/∂x"), ("torch", "cost", "∂c/∂a"),
    pytest.param("jax", "cost", "∂c/∂a", marks=pytest.mark.slow),
])
def test_a_wrong_jacobian_entry_is_named(backend, block, named):
    sim = WrongJacobian(backend=backend, dims=2, block=block)
    report = gs.check_gradients(sim, flows=["none", "input"], horizon=5, directions=2)
    assert not report.passed
    failed = [r["check"] for r in report.failures]
    # native and fused share the wrong Jacobian, so they agree; the loss's finite differences do not
    assert failed == [named, "flow none: native vs finite differences"], str(report)
    assert report.failures[0]["error"] > 1e-3 and named in str(report) and "FAIL" in str(report)


def test_float32_policy_is_held_to_float64():
    sim = make("cartpole", backend="torch", poles=2)
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(16, 16), seed=0)  # float32
    report = gs.check_gradients(sim, policy, flows=["none", "input"])
    checks = {r["check"]: r for r in report.rows}
    assert checks["flow input: native vs float64"]["tolerance"] == 1e-3 and report.passed, str(report)


def test_missing_protocol_method_is_named():
    class NoObs:
        backend, obs_dim, action_dim, state_dim = "torch", 2, 1, 2

        def step(self, x, a):
            return x

        def cost(self, x, a):
            return x[:, 0]

        def terminal_cost(self, x):
            return x[:, 0] * 0

        def reset(self, key=None, batch=1, dtype=None):
            return torch.zeros(batch, 2)

    with pytest.raises(TypeError, match="has no method 'obs'"):
        gs.check_gradients(NoObs())
    with pytest.raises(ValueError, match="unknown flow"):
        gs.check_gradients(make("pointmass", backend="torch"), flows=["none", "upward"])
    with pytest.raises(ValueError, match="directions must be an integer"):
        gs.check_gradients(make("pointmass", backend="torch"), directions=0)


def test_jax_without_float64_says_how_to_enable_it():
    """check_gradients and precision need float64; JAX without its 64-bit mode gets the fix named."""
    code = ("import gradstop as gs; from sims import make\n"
            "sim = make('pointmass', backend='jax')\n"
            "for call in (lambda: gs.check_gradients(sim), lambda: gs.precision(gs.jax.mlp(0, 6, 3), sim, horizon=3)):\n"
            "    try:\n        call()\n    except ValueError as e:\n        print(e)\n")
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all("jax_enable_x64" in line and "float64" in line for line in lines), out.stdout + out.stderr


@pytest.mark.slow
def test_a_brax_environment_gets_the_same_check_and_a_diagnosis():
    """Pytree states (Brax's own State): only their inexact leaves are perturbed and traced (about 3 min, compiles)."""
    pytest.importorskip("brax")
    sim = make("brax:inverted_pendulum")
    report = gs.check_gradients(sim, flows=["none", "input"], horizon=4, batch=2, directions=2)
    assert report.passed and report.sim == "brax:inverted_pendulum", str(report)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(16,))
    d = gs.diagnose(policy, sim, flows=["none", "input"], horizon=6, key=0, batch=2)
    assert d.nonfinite == [] and d.lam_max["none"].shape == (7,) and np.all(d.lam_max["none"] > 0)
