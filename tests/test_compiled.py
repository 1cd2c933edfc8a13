"""The compiled PyTorch path (``compile=True``): the same gradients as eager, one compile for every H ≥ 2.

Compiles cost seconds each, so the default tests share one pointmass problem and one compiled
sweep: it is compiled per tuple of component weights (k_phys, k_in), and none, input, combined,
directional and truncated none all run on the (none, input) one, in gs.gradients and in a
rollout's backward alike. The slow
tests take every built-in sim, every flow (state, all, decay too) and both impls.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gradstop as gs
from gradstop.torch import compiled
from tests.helpers import RTOL, assert_close, load

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ["none", "input", "state", "all", "combined", "directional", "input+truncate:3", "decay:0.5"]


@pytest.fixture(scope="module")
def pointmass():
    return load("torch", "pointmass", batch=3)


def _grads(out, flow):
    return np.concatenate([v.detach().numpy().ravel() for v in out.grads[flow].values()])


def _param_grads(policy, loss):
    return np.concatenate([g.numpy().ravel() for g in torch.autograd.grad(loss, list(policy.parameters()))])


@pytest.mark.parametrize("flows", [["none", "input", "combined", "directional"], ["truncate:3", "input"]])
def test_flows_equal_eager_in_one_compiled_sweep(pointmass, flows):
    sim, policy, x0 = pointmass
    fast = gs.gradients(policy, sim, flows=flows, horizon=7, x0=x0, compile=True)
    eager = gs.gradients(policy, sim, flows=flows, horizon=7, x0=x0)
    for flow in flows:
        assert_close(_grads(fast, flow), _grads(eager, flow), what=flow)
    assert_close(fast.loss.numpy(), eager.loss.numpy(), what="loss")
    for field in ("states", "actions", "costs", "terminal"):
        assert_close(getattr(fast.rollout, field).numpy(), getattr(eager.rollout, field).numpy(), what=field)


def test_rollout_backward_equals_eager(pointmass):
    """Where a gradient can be asked for, the rollout runs gs.gradients' compiled sweep (forward and reverse in
    one call), so after that sweep has been compiled it compiles nothing more."""
    sim, policy, x0 = pointmass
    gs.gradients(policy, sim, flows=["none", "input"], horizon=5, x0=x0, compile=True)
    before = compiled.compile_count()
    fast = gs.rollout(policy, sim, stop="combined", horizon=6, x0=x0, impl="fused", compile=True)
    eager = gs.rollout(policy, sim, stop="combined", horizon=6, x0=x0, impl="fused")
    assert not fast.states.requires_grad and fast.loss.requires_grad
    assert_close(_param_grads(policy, fast.loss), _param_grads(policy, eager.loss), what="combined")
    assert compiled.compile_count() == before


@pytest.mark.slow  # the forward-only program compiles apart from the sweep's (10 s)
def test_rollout_without_grad_runs_the_forward_loop_only(pointmass):
    sim, policy, x0 = pointmass
    with torch.no_grad():
        before = compiled.compile_count()
        fast = gs.rollout(policy, sim, stop="none", horizon=6, x0=x0, compile=True)
        assert compiled.compile_count() == before + 1  # the forward loop alone, not the sweep
        eager = gs.rollout(policy, sim, stop="none", horizon=6, x0=x0)
    assert not fast.loss.requires_grad
    for field in ("states", "actions", "costs", "terminal", "loss"):
        assert_close(getattr(fast, field).numpy(), getattr(eager, field).numpy(), what=field)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["native", "fused"])
def test_rollout_backward_equals_eager_for_single_flows_and_x0(pointmass, impl):
    sim, policy, x0 = pointmass
    for flow in ["combined", "input"]:
        fast = gs.rollout(policy, sim, stop=flow, horizon=6, x0=x0, impl=impl, compile=True)
        eager = gs.rollout(policy, sim, stop=flow, horizon=6, x0=x0, impl=impl)
        assert_close(_param_grads(policy, fast.loss), _param_grads(policy, eager.loss), what=f"{impl} {flow}")
    x = x0.clone().requires_grad_()  # λ_0 reaches x0 as in eager
    g_fast = torch.autograd.grad(gs.rollout(policy, sim, stop="input", horizon=6, x0=x, compile=True, impl=impl).loss, x)[0]
    g_eager = torch.autograd.grad(gs.rollout(policy, sim, stop="input", horizon=6, x0=x, impl=impl).loss, x)[0]
    assert_close(g_fast.numpy(), g_eager.numpy(), what="∂L/∂x0")


def test_a_new_horizon_reuses_the_compiled_loops(pointmass):
    sim, policy, x0 = pointmass
    gs.gradients(policy, sim, flows=["none", "input"], horizon=5, x0=x0, compile=True)
    before = compiled.compile_count()
    for horizon in (9, 23):
        fast = gs.gradients(policy, sim, flows=["none", "input"], horizon=horizon, x0=x0, compile=True)
        eager = gs.gradients(policy, sim, flows=["none", "input"], horizon=horizon, x0=x0)
        assert_close(_grads(fast, "input"), _grads(eager, "input"), what=f"H={horizon}")
    assert compiled.compile_count() == before, "a new horizon recompiled the loops"


@pytest.mark.slow
def test_horizon_one_compiles_once_more_and_agrees(pointmass):
    sim, policy, x0 = pointmass  # the compiler specialises a loop of length 1
    fast = gs.gradients(policy, sim, flows=["none", "input"], horizon=1, x0=x0, compile=True)
    assert_close(_grads(fast, "none"), _grads(gs.gradients(policy, sim, flows=["none", "input"], horizon=1, x0=x0), "none"))


def test_weights_updated_in_place_are_read_at_every_call(pointmass):
    sim, policy, x0 = pointmass
    first = _grads(gs.gradients(policy, sim, flows=["none", "input"], horizon=5, x0=x0, compile=True), "none")
    with torch.no_grad():
        saved = [p.clone() for p in policy.parameters()]
        for p in policy.parameters():
            p.mul_(0.5)
    try:
        fast = _grads(gs.gradients(policy, sim, flows=["none", "input"], horizon=5, x0=x0, compile=True), "none")
        eager = _grads(gs.gradients(policy, sim, flows=["none"], horizon=5, x0=x0), "none")
        assert_close(fast, eager, what="after an in-place update")
        assert not np.allclose(fast, first)
    finally:
        with torch.no_grad():
            for p, s in zip(policy.parameters(), saved):
                p.copy_(s)


def test_the_warm_up_record_is_bounded_and_keeps_no_policy_alive(pointmass):
    import gc
    import weakref

    sim, policy, x0 = pointmass
    compiled._warm(policy, sim, x0)
    refs = []
    for _ in range(compiled._WARMED_MAX + 5):
        other = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(4,), dtype=x0.dtype)
        compiled._warm(other, sim, x0)
        refs.append(weakref.ref(other))
    del other
    gc.collect()
    assert len(compiled._WARMED) == compiled._WARMED_MAX
    assert refs[0]() is None and refs[-1]() is not None  # the oldest were dropped, the newest are kept
    assert (policy, sim, x0.dtype, x0.device) not in compiled._WARMED
    compiled._warm(policy, sim, x0)  # warmed again when it comes back
    assert (policy, sim, x0.dtype, x0.device) in compiled._WARMED


def test_bad_compile_arguments_are_named(pointmass):
    sim, policy, x0 = pointmass
    with pytest.raises(TypeError, match="compile must be True or False"):
        gs.rollout(policy, sim, horizon=3, x0=x0, compile="yes")
    jsim, jpolicy, jx0 = load("jax", "pointmass")
    with pytest.raises(ValueError, match="jax.jit"):
        gs.gradients(jpolicy, jsim, flows=["none"], horizon=3, x0=jx0, compile=True)
    with pytest.raises(TypeError, match="nn.Module"):
        gs.rollout(lambda o: policy(o), sim, horizon=3, x0=x0, compile=True)


@pytest.mark.slow
@pytest.mark.parametrize("sim_name", ["pointmass", "cartpole", "neural"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_sim_flow_and_impl_equals_eager(sim_name, dtype):
    sim, policy, x0 = load("torch", sim_name, dtype=dtype, batch=3)
    horizon = 11
    eager = gs.gradients(policy, sim, flows=FLOWS, horizon=horizon, x0=x0)
    for impl in ("native", "fused"):
        fast = gs.gradients(policy, sim, flows=FLOWS, horizon=horizon, x0=x0, impl=impl, compile=True)
        for flow in FLOWS:
            scale = max(np.abs(_grads(eager, flow)).max(), 1e-30)
            err = np.abs(_grads(fast, flow) - _grads(eager, flow)).max() / scale
            # float32: the compiled kernels sum in another order; the error stays at rounding level
            assert err <= (RTOL[dtype] if dtype == "float64" else 1e-4), f"{sim_name} {impl} {flow}: {err:.2e}"
    for flow in ("none", "combined", "input+truncate:3"):
        fast = gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, compile=True)
        g = _param_grads(policy, fast.loss)
        ref = _grads(eager, flow)
        assert np.abs(g - ref).max() <= (RTOL[dtype] if dtype == "float64" else 1e-4) * np.abs(ref).max()


@pytest.mark.slow
def test_speed_script_writes_its_table(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.torch_speed", "--quick", "--out", str(tmp_path / "speed")],
                            capture_output=True, text=True, cwd=ROOT)  # its own process: float32 JAX, as users run it
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "speed" / "speed.csv").read_text().splitlines()
    assert rows[0].startswith("batch,horizon,flow,jax-native_ms") and len(rows) == 3
    assert rows[2].rstrip().endswith("False")  # the second horizon reused the compiled loops


def test_a_simulator_that_does_not_trace_gets_a_clear_error():
    from sims.pointmass import PointMass

    class Branchy(PointMass):  # a Python branch on a tensor's value: eager runs it, the compiler cannot trace it
        def step(self, x, a):
            return super().step(x, a) if float(x.abs().max()) < 1e9 else x

    sim = Branchy(backend="torch", dims=2)
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(4,), dtype=torch.float64, seed=0)
    x0 = sim.reset(0, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="could not compile this simulator and policy.*Run without compile=True"):
        gs.gradients(policy, sim, flows=["none"], horizon=3, x0=x0, compile=True)
    gs.gradients(policy, sim, flows=["none"], horizon=3, x0=x0)  # eager runs it


def test_train_config_takes_compile_for_torch_bptt_only_and_old_configs_still_load():
    from gradstop.trainers import TrainConfig

    assert TrainConfig(backend="torch", compile=True).compile
    for bad, match in [({"backend": "jax"}, "JAX trainers are jitted"), ({"backend": "torch", "algo": "shac"}, "SHAC"),
                       ({"backend": "torch", "policy": "gaussian"}, "gaussian")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(compile=True, **bad)
    old = TrainConfig(backend="torch").to_dict()
    del old["compile"]  # a config written before the field existed
    assert TrainConfig.from_dict(old) == TrainConfig(backend="torch")
    assert TrainConfig(backend="torch", compile=True).digest() == TrainConfig(backend="torch").digest()


@pytest.mark.slow
def test_torch_bptt_with_compile_takes_the_eager_steps():
    from gradstop.trainers import TrainConfig, train

    runs = {}
    for fast in (False, True):
        cfg = TrainConfig(sim="pointmass", sim_params={"dims": 2}, backend="torch", flow="combined", horizon=6, epochs=2,
                          updates_per_epoch=3, batch=4, hidden=(8,), dtype="float64", compile=fast)
        runs[fast] = train(cfg)
    for key in ("loss", "grad_norm", "cos_input_none"):
        eager = np.asarray([float(r[key]) for r in runs[False].updates])
        fast = np.asarray([float(r[key]) for r in runs[True].updates])
        np.testing.assert_allclose(fast, eager, rtol=1e-10, err_msg=key)
    assert runs[True].summary["compile_seconds"] > 0 and runs[False].summary["compile_seconds"] == 0


def test_the_compiled_graph_is_called_directly_once_dynamo_accepted_the_horizon(pointmass, monkeypatch):
    """After dynamo has accepted an H (guards held, nothing recompiled), the same H calls the graph without
    dynamo; a new H goes through dynamo first. Both give exactly what dynamo's call gives."""
    sim, policy, x0 = pointmass
    calls = compiled._DIRECT_CALLS

    def grads(horizon):
        out = gs.gradients(policy, sim, flows=["none", "input"], horizon=horizon, x0=x0, compile=True)
        return np.concatenate([_grads(out, f) for f in ("none", "input")] + [out.rollout.states.numpy().ravel()])

    grads(5)
    before = calls["count"]
    direct = grads(5)
    assert calls["count"] == before + 1
    first_time = grads(11)  # a new H: through dynamo, then accepted
    assert calls["count"] == before + 1
    again = grads(11)
    assert calls["count"] == before + 2
    monkeypatch.setattr(compiled, "DIRECT", False)
    assert np.array_equal(direct, grads(5)) and np.array_equal(again, grads(11)) and np.array_equal(first_time, again)
    assert calls["count"] == before + 2
    names, params = compiled._named(policy)  # arguments unlike the first call's go through dynamo
    program = compiled._sweep_program(policy, sim, names, ((1.0, 1.0), (1.0, 0.0)), x0.shape[0], x0.dtype, x0.device)
    steps, cuts = torch.empty((11, 0), dtype=x0.dtype), compiled._cuts((None, None), 11, x0.dtype, x0.device)
    with torch.no_grad():
        assert program.direct.accepts((params, x0, steps, cuts)) is not None
        assert program.direct.accepts((params, x0.float(), steps, cuts)) is None
        wider = (torch.zeros(params[0].shape[0] + 1, *params[0].shape[1:], dtype=x0.dtype),) + params[1:]
        assert program.direct.accepts((wider, x0, steps, cuts)) is None
    assert program.direct.accepts((params, x0, steps, cuts)) is None  # grad mode on
    with torch.no_grad():  # in-place updates of the weights are read by the direct call too
        saved = [p.clone() for p in policy.parameters()]
        for p in policy.parameters():
            p.mul_(0.5)
    try:
        monkeypatch.setattr(compiled, "DIRECT", True)
        halved = grads(11)
        assert calls["count"] == before + 3
        monkeypatch.setattr(compiled, "DIRECT", False)
        assert np.array_equal(halved, grads(11)) and not np.array_equal(halved, again)
    finally:
        with torch.no_grad():
            for p, s in zip(policy.parameters(), saved):
                p.copy_(s)


@pytest.mark.slow  # two compiles at batch 256 (20 s)
def test_a_second_graph_switches_the_direct_call_off(monkeypatch):
    """At batch 256 inductor compiles a second graph for H·B > 4096: the program stops calling its first graph
    directly (where skipping dynamo's guards was found unsafe), and every H still gets dynamo's gradients."""
    sim, policy, x0 = load("torch", "neural", dtype="float32", batch=256)
    program = lambda: compiled._sweep_program(policy, sim, *compiled._named(policy)[:1], ((1.0, 1.0),), 256,
                                              x0.dtype, x0.device)

    def grads(horizon):
        return _grads(gs.gradients(policy, sim, flows=["none"], horizon=horizon, x0=x0, compile=True), "none")

    first = [grads(10), grads(10)]
    assert program().direct is not None and 10 in program().accepted
    later = grads(20)  # H·B = 5120: a second graph
    assert program().direct is None and program().no_direct
    monkeypatch.setattr(compiled, "DIRECT", False)
    assert np.array_equal(first[0], first[1]) and np.array_equal(first[1], grads(10)) and np.array_equal(later, grads(20))
    assert_close(grads(10), _grads(gs.gradients(policy, sim, flows=["none"], horizon=10, x0=x0), "none"), dtype="float32")
