"""impl='fused' equals impl='native' for every flow, both frameworks, both memory policies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradstop as gs
from helpers import SIMS, assert_close, gradient, load, to_numpy
from sims import make

FLOWS = ["none", "input", "state", "all", "decay:0.8", "input+truncate:3", "combined", "directional"]
BACKENDS = ["jax", "torch"]


def _fused_grad(backend, sim, policy, x0, flow, horizon, memory):
    if backend == "jax":
        import jax

        fn = jax.jit(jax.value_and_grad(
            lambda p: gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x0, impl="fused", memory=memory).loss))
        loss, g = fn(policy)
        return float(loss), np.concatenate([np.ravel(w) for w in gs.get_weights(g)])
    policy.zero_grad(set_to_none=True)
    out = gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl="fused", memory=memory)
    out.loss.backward()
    return float(to_numpy(out.loss)), np.concatenate([p.grad.numpy().ravel() for p in policy.parameters()])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("horizon", [1, pytest.param(2, marks=pytest.mark.slow), 7, pytest.param(50, marks=pytest.mark.slow),
                                     pytest.param(150, marks=pytest.mark.slow)])
@pytest.mark.parametrize("sim_name", sorted(SIMS))
def test_fused_equals_native_float64(sim_name, horizon, flow, backend):
    sim, policy, x0 = load(backend, sim_name)
    loss, native = gradient(backend, policy, sim, x0, flow, horizon)
    for memory in ("residuals", "recompute"):
        loss_f, fused = _fused_grad(backend, sim, policy, x0, flow, horizon, memory)
        assert_close(loss_f, loss, what="loss")
        assert_close(fused, native, what=f"{memory} gradient")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", ["none", "input", "combined"])
def test_fused_equals_native_float32(backend, flow):
    """float32: within 1e-5 of native, relative to the gradient's largest entry."""
    sim, policy, x0 = load(backend, "cartpole", dtype="float32")
    _, native = gradient(backend, policy, sim, x0, flow, 30)
    _, fused = _fused_grad(backend, sim, policy, x0, flow, 30, "residuals")
    if flow == "combined":  # a component whose two signs are decided by rounding may differ: compare the rest
        _, g_none = gradient(backend, policy, sim, x0, "none", 30)
        _, g_input = gradient(backend, policy, sim, x0, "input", 30)
        safe = np.minimum(np.abs(g_none), np.abs(g_input)) > 1e-4 * np.abs(g_input).max()
        native, fused = native[safe], fused[safe]
    assert_close(fused, native, dtype="float32")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dims=st.integers(1, 3), horizon=st.integers(1, 12), flow=st.sampled_from(FLOWS + ["state+decay:0.5", "truncate:2"]),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_fused_equals_native_property_torch(dims, horizon, flow, batch, seed):
    """Random dims, horizons, batches and flows (torch: no compile per example, so many examples are cheap)."""
    import torch

    sim = make("pointmass", backend="torch", dims=dims, drag=0.3)
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(5,), dtype=torch.float64, seed=seed)
    x0 = sim.reset(seed, batch, dtype=torch.float64)
    _, native = gradient("torch", policy, sim, x0, flow, horizon)
    _, fused = _fused_grad("torch", sim, policy, x0, flow, horizon, "recompute")
    assert_close(fused, native)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_gives_x0_its_adjoint(backend):
    """For a single flow the fused x0 gradient is λ_0, as native autodiff gives it."""
    sim, policy, x0 = load(backend, "pointmass")
    if backend == "jax":
        import jax

        grads = [jax.grad(lambda x: gs.rollout(policy, sim, stop="input", horizon=6, x0=x, impl=i).loss)(x0) for i in ("native", "fused")]
    else:
        grads = []
        for impl in ("native", "fused"):
            x = x0.clone().requires_grad_(True)
            gs.rollout(policy, sim, stop="input", horizon=6, x0=x, impl=impl).loss.backward()
            grads.append(x.grad)
    assert_close(to_numpy(grads[1]), to_numpy(grads[0]))


def _flat_grad(backend, policy, grad):
    if backend == "jax":
        return np.concatenate([np.ravel(w) for w in gs.jax.get_weights(grad)])
    return np.concatenate([to_numpy(grad[k]).ravel() for k, _ in policy.named_parameters()])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_of_several_flows_in_one_sweep(backend):
    """gs.gradients: each flow equals its own rollout gradient; norms and cosines are those of the vectors."""
    sim, policy, x0 = load(backend, "neural")
    flows = ["none", "input", "combined", "directional", "decay:0.9"]
    results = {impl: gs.gradients(policy, sim, flows=flows, horizon=12, x0=x0, impl=impl) for impl in ("fused", "native")}
    vectors = {}
    for flow in flows:
        loss, expected = gradient(backend, policy, sim, x0, flow, 12)
        for impl, res in results.items():
            got = _flat_grad(backend, policy, res.grads[flow])
            assert_close(got, expected, what=f"{impl} {flow}")
            assert_close(float(to_numpy(res.loss)), loss, what="loss")
            assert_close(float(to_numpy(res.norms[flow])), np.linalg.norm(expected), what="norm")
        vectors[flow] = expected
    assert list(results["fused"].cosine) == [(a, b) for i, a in enumerate(flows) for b in flows[i + 1:]]
    for (a, b), value in results["fused"].cosine.items():
        expected = vectors[a] @ vectors[b] / (np.linalg.norm(vectors[a]) * np.linalg.norm(vectors[b]))
        assert abs(float(to_numpy(value)) - expected) < 1e-10


def test_gradients_rejects_bad_flow_lists():
    sim, policy, x0 = load("torch", "pointmass")
    with pytest.raises(ValueError, match="flows is empty"):
        gs.gradients(policy, sim, flows=[], horizon=3, x0=x0)
    with pytest.raises(ValueError, match="flows names a flow twice"):
        gs.gradients(policy, sim, flows=["input", "input+decay:1"], horizon=3, x0=x0)
    with pytest.raises(ValueError, match="unknown flow part 'nope'"):
        gs.gradients(policy, sim, flows=["nope"], horizon=3, x0=x0)
