"""Bad input to the library and the CLI: each gets gradstop's own error, naming the problem and the fix.

One table: a case is a small callable (or a CLI argv) and what it must give, an exception type and a
fragment of its message (or, with no exception, a fragment of the string the callable returns).
The frameworks' out-of-memory errors are raised by a monkeypatched inner call: nothing allocates.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradstop as gs
from gradstop._checks import OutOfMemory, residual_bytes
from gradstop.cli.main import main
from gradstop.health.diagnose import explain
from sims import make
from sims.pointmass import PointMass


def problem(backend: str, dtype: str = "float64", batch: int = 2, **params):
    """(sim, policy, x0): a 1-D point mass (state 2, action 1) and a tiny MLP."""
    sim = make("pointmass", backend=backend, dims=1, **params)
    if backend == "jax":
        policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(4,), dtype=getattr(jnp, dtype))
        return sim, policy, sim.reset(0, batch, dtype=getattr(jnp, dtype))
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(4,), dtype=getattr(torch, dtype), seed=0)
    return sim, policy, sim.reset(0, batch, dtype=getattr(torch, dtype))


def empty_x0(backend: str, fn):
    sim, policy, x0 = problem(backend)
    return lambda: fn(policy, sim, horizon=3, x0=x0[:0])


def batch_mismatch(backend: str):
    def run():
        sim, policy, x0 = problem(backend)
        gs.rollout(policy, sim, horizon=2, x0=x0, batch=2)  # agreeing: fine
        gs.rollout(policy, sim, horizon=2, x0=x0, batch=3)
    return run


# -- a simulator whose JAX step calls NumPy, and a torch step that is a classic autograd.Function --------------------
@dataclasses.dataclass(frozen=True, eq=False)
class NumpyStep(PointMass):
    name = "numpystep"

    def step(self, x, a):
        return super().step(x, a) + 0.0 * np.sin(x)


class _Push(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a):
        ctx.save_for_backward(a)
        return x + 0.1 * torch.sin(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g, 0.1 * torch.cos(a) * g


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionStep(PointMass):
    name = "functionstep"

    def step(self, x, a):
        return _Push.apply(x, a.repeat(1, 2))


def numpy_step(fn):
    sim = NumpyStep(dims=1)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(4,), dtype=jnp.float64)
    return lambda: fn(policy, sim)


# -- out of memory: the framework's error from the inner call --------------------------------------------------------
def out_of_memory(monkeypatch, backend: str, target: str, error, entry):
    def run():
        sim, policy, x0 = problem(backend)

        def raise_(*args, **kwargs):
            raise error

        module, name = target.rsplit(".", 1)
        monkeypatch.setattr(importlib.import_module(module), name, raise_)  # gs.jax.rollout is the function
        entry(policy, sim, x0)
    return run


def overflowing_norm(backend: str):
    """float32 gradient components near 1e36: each finite, their sum of squares is not."""
    def run():
        sim, policy, x0 = problem(backend, "float32", effort=1e37)
        found = gs.diagnose(policy, sim, flows=["input+decay:0.9"], horizon=3, x0=x0, contributions=False)
        return explain(found, "input+decay:0.9")
    return run


def weights_of_another_sim(tmp_path):
    def run():
        sim = make("pointmass", dims=1)
        policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(64, 64))
        path = tmp_path / "policy.npz"
        np.savez(path, *gs.get_weights(policy))
        return ["diagnose", "--sim", "cartpole", "--horizon", "2", "--weights", str(path)]
    return run


def api_cases(monkeypatch):
    jax_oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2949120000 bytes.")
    cpu_oom = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 2949120000 bytes. Error code 12 (Cannot allocate memory)")
    rollout = lambda p, s, x: gs.rollout(p, s, horizon=4, x0=x)  # noqa: E731
    return {
        # 1. an empty batch
        "x0-empty-jax": (empty_x0("jax", gs.rollout), ValueError, "x0 holds 0 states"),
        "x0-empty-torch": (empty_x0("torch", gs.rollout), ValueError, "x0 holds 0 states"),
        "x0-empty-gradients": (empty_x0("jax", lambda *a, **k: gs.gradients(*a, flows=["none"], **k)), ValueError,
                               "x0 holds 0 states"),
        "x0-empty-diagnose-torch": (empty_x0("torch", gs.diagnose), ValueError, "x0 holds 0 states"),
        # 2. batch= and x0 disagree
        "batch-vs-x0-jax": (batch_mismatch("jax"), ValueError, "batch=3 but x0 holds 2 states: x0 sets the batch"),
        "batch-vs-x0-torch": (batch_mismatch("torch"), ValueError, "batch=3 but x0 holds 2 states"),
        # 3. physical parameters
        "pointmass-mass-inf": (lambda: make("pointmass", mass=math.inf), ValueError, "pointmass: mass must be a positive number (finite"),
        "pointmass-dt-inf": (lambda: make("pointmass", backend="torch", dt=math.inf), ValueError, "dt must be a positive number"),
        "pointmass-drag-inf": (lambda: make("pointmass", drag=math.inf), ValueError, "drag must be a number ≥ 0 (and finite), got inf"),
        "cartpole-length-inf": (lambda: make("cartpole", half_length=math.inf), ValueError, "half_length must be a positive"),
        "cartpole-total-mass-inf": (lambda: make("cartpole", total_mass=math.inf), ValueError, "total_mass must be a positive"),
        "neural-clip-inf": (lambda: make("neural", clip=math.inf), ValueError, "neural: clip must be a positive number"),
        # 4. out of memory
        "oom-jax-rollout": (out_of_memory(monkeypatch, "jax", "gradstop.jax.rollout._single", jax_oom, rollout),
                            OutOfMemory, "horizon 4 × batch 2 × (state 2 + action 1 values) × 8 bytes"),
        "oom-jax-gradients": (out_of_memory(monkeypatch, "jax", "gradstop.jax.fused.sweep", jax_oom,
                                            lambda p, s, x: gs.gradients(p, s, flows=["none"], horizon=4, x0=x)),
                              MemoryError, "memory='recompute'"),
        "oom-torch-cuda": (out_of_memory(monkeypatch, "torch", "gradstop.torch.rollout._single",
                                         torch.OutOfMemoryError("CUDA out of memory."), rollout),
                           OutOfMemory, "--impl fused --memory recompute"),
        "oom-torch-cpu": (out_of_memory(monkeypatch, "torch", "gradstop.torch.rollout._single", cpu_oom, rollout),
                          OutOfMemory, "a smaller batch or a shorter horizon"),
        "oom-torch-recompute": (out_of_memory(monkeypatch, "torch", "gradstop.torch.fused.forward", cpu_oom,
                                              lambda p, s, x: gs.gradients(p, s, flows=["none"], horizon=4, x0=x,
                                                                           memory="recompute")),
                                OutOfMemory, "keeps at least 192 B: horizon 4 × batch 2 × (state 2 + action 1 values) × 8 "
                                "bytes, for the states and actions alone; use a smaller batch"),
        # 5. JAX keys and seeds
        "key-reset-str": (lambda: make("pointmass").reset("a", 2), TypeError, "key must be an int seed or a jax.random key"),
        "key-mlp-str": (lambda: gs.jax.mlp("a", 2, 1), TypeError, "got str 'a'"),
        "key-rollout-float": (lambda: gs.rollout(*problem("jax")[1::-1], horizon=2, key=1.5), TypeError, "got float 1.5"),
        "seed-check-str": (lambda: gs.check_gradients(make("pointmass", dims=1), seed="a"), TypeError, "seed must be an int"),
        # 6. untraceable JAX steps
        "numpy-step-rollout": (numpy_step(lambda p, s: gs.rollout(p, s, horizon=2, key=0)), TypeError,
                               "NumpyStep.step is not traceable by JAX"),
        "numpy-step-diagnose": (numpy_step(lambda p, s: gs.diagnose(p, s, horizon=2, key=0)), TypeError, "self.xp (jax.numpy)"),
        "numpy-step-check": (numpy_step(lambda p, s: gs.check_gradients(s, p, horizon=2, batch=2, flows=["none"])),
                             TypeError, "NumpyStep.step is not traceable"),
        # 7. hints
        "flow-repeated": (lambda: gs.parse_flow("combined+combined"), ValueError, "repeats 'combined': write each part once"),
        "norm-overflow-jax": (overflowing_norm("jax"), None, "every value of this update is finite; the norm itself overflows float32"),
        "norm-overflow-torch": (overflowing_norm("torch"), None, "run in float64"),
    }


API = ["x0-empty-jax", "x0-empty-torch", "x0-empty-gradients", "x0-empty-diagnose-torch", "batch-vs-x0-jax",
       "batch-vs-x0-torch", "pointmass-mass-inf", "pointmass-dt-inf", "pointmass-drag-inf", "cartpole-length-inf",
       "cartpole-total-mass-inf", "neural-clip-inf", "oom-jax-rollout", "oom-jax-gradients", "oom-torch-cuda",
       "oom-torch-cpu", "oom-torch-recompute", "key-reset-str", "key-mlp-str", "key-rollout-float", "seed-check-str",
       "numpy-step-rollout", "numpy-step-diagnose", "numpy-step-check", "flow-repeated", "norm-overflow-jax",
       "norm-overflow-torch"]


@pytest.mark.parametrize("case", API)
def test_api_case(case, monkeypatch):
    fn, raises, fragment = api_cases(monkeypatch)[case]
    if raises is None:
        assert fragment in fn()
        return
    with pytest.raises(raises) as info:
        fn()
    assert fragment in str(info.value)


CLI = {
    # 8. the CLI checks a printed config's simulator parameters like a run's
    "print-config-unknown-param": (["train", "--print-config", "--param", "nosuch=1"], 2, "cartpole has no parameter 'nosuch'"),
    "print-config-bad-value": (["train", "--print-config", "--sim", "pointmass", "--param", "mass=-1"], 2,
                               "mass must be a positive number"),
}


@pytest.mark.parametrize("case", list(CLI))
def test_cli_case(case, capsys):
    argv, code, fragment = CLI[case]
    assert main(argv) == code
    assert fragment in capsys.readouterr().err


def test_cli_weights_of_another_simulator_name_the_observation_sizes(tmp_path, capsys):
    assert main(weights_of_another_sim(tmp_path)()) == 2
    err = capsys.readouterr().err
    assert "observation size 2" in err and "--hidden" not in err


def test_cli_weights_with_other_hidden_widths_name_them(tmp_path, capsys):
    argv = weights_of_another_sim(tmp_path)()
    argv[argv.index("cartpole")] = "pointmass"
    assert main([*argv, "--param", "dims=1", "--hidden", "32"]) == 2
    assert "holds an MLP with hidden widths 64,64, not --hidden 32: pass --hidden 64,64" in capsys.readouterr().err


# -- what now works, and the estimate itself --------------------------------------------------------------------------
def test_check_gradients_works_on_a_classic_autograd_function_step():
    report = gs.check_gradients(FunctionStep(backend="torch", dims=2), horizon=2, batch=2, flows=["none", "input"])
    assert report.passed, str(report)


def test_a_numpy_integer_seed_is_a_key():
    sim, policy, _ = problem("jax")
    a = gs.rollout(policy, sim, horizon=2, key=np.int64(3), batch=2).loss
    assert a == gs.rollout(policy, sim, horizon=2, key=3, batch=2).loss


def test_residual_bytes_counts_states_and_actions_of_every_step():
    # the neural benchmark's shape: horizon 10000, batch 4096, state 12, control 6, float32
    assert residual_bytes(10_000, 4096, 12, 6, 4) == 10_000 * 4096 * 18 * 4
