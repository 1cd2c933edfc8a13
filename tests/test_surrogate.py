"""Surrogate Jacobians (flow part ``surrogate:NAME``): the true simulator forward, another's derivatives backward."""

from __future__ import annotations

import numpy as np
import pytest

import gradstop as gs
import sims
from gradstop.flows import parse_flow
from helpers import assert_close, flat, load

jax = pytest.importorskip("jax")
jnp = jax.numpy
eqx = pytest.importorskip("equinox")
torch = pytest.importorskip("torch")

SIM = dict(dims=2)  # tests/helpers.py's point mass


def _heavy(backend, **params):
    return sims.make("pointmass", backend=backend, **{**SIM, "mass": 3.0, "drag": 0.3, **params})


def _same(backend, **params):
    return sims.make("pointmass", backend=backend, **{**SIM, **params})


@pytest.fixture(autouse=True)
def surrogates(monkeypatch):
    """The two surrogates, registered in a copy of the registry that each test gets and drops (other tests, e.g.
    the help text's list of simulators, never see them)."""
    monkeypatch.setattr(sims, "_REGISTRY", dict(sims._REGISTRY))
    sims.register("test-pointmass-heavy", _heavy)
    sims.register("test-pointmass-same", _same)


def _gradient(backend, flow, impl="native", horizon=6):
    sim, policy, x0 = load(backend, "pointmass", batch=3)
    if backend == "jax":
        out, g = eqx.filter_value_and_grad(lambda p: gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x0, impl=impl).loss,
                                           has_aux=False)(policy), None
        value, g = out
        states = gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl=impl).states
        return float(value), flat(gs.jax.get_weights(g)), np.asarray(states)
    out = gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl=impl)
    out.loss.backward()
    return (float(out.loss.detach()), flat(p.grad.numpy() for lin in policy.linears for p in (lin.weight, lin.bias)),
            out.states.detach().numpy())


@pytest.mark.parametrize("backend,impl", [("jax", "native"), ("jax", "fused"), ("torch", "native"), ("torch", "fused")])
@pytest.mark.parametrize("base", ["none", "input", "combined"])
def test_the_true_simulator_as_its_own_surrogate_changes_nothing(backend, impl, base):
    plain = _gradient(backend, base, impl)
    surrogate = _gradient(backend, f"{base}+surrogate:test-pointmass-same", impl)
    assert surrogate[0] == plain[0]
    assert_close(surrogate[1], plain[1], what=f"{backend} {impl} {base}")


def test_the_forward_is_the_true_simulators_and_the_gradient_the_surrogates():
    """H = 1 by hand: ∇θ = J_πᵀ [(∂g_model/∂a)ᵀ ∂c/∂x' + ∂c/∂a] with ∂c/∂x' at the TRUE next state."""
    sim, policy, x0 = load("jax", "pointmass", batch=3)
    model = _heavy("jax")
    out = gs.rollout(policy, sim, stop="surrogate:test-pointmass-heavy", horizon=1, x0=x0)
    assert np.array_equal(np.asarray(out.states), np.asarray(gs.rollout(policy, sim, stop="none", horizon=1, x0=x0).states))
    params, static = eqx.partition(policy, eqx.is_inexact_array)
    a, pullback = jax.vjp(lambda p: eqx.combine(p, static)(sim.obs(x0)), params)
    x_true = sim.step(x0, a)
    dc_dx, dc_da = jax.grad(lambda x, u: jnp.mean(sim.cost(x, u)), argnums=(0, 1))(x_true, a)
    _, model_pullback = jax.vjp(lambda u: model.step(x0, u), a)
    (mu,) = model_pullback(dc_dx)
    (expected,) = pullback(mu + dc_da)
    got = eqx.filter_grad(lambda p: gs.rollout(p, sim, stop="surrogate:test-pointmass-heavy", horizon=1, x0=x0).loss)(policy)
    assert_close(flat(gs.jax.get_weights(got)), flat(gs.jax.get_weights(eqx.combine(expected, static))), what="H = 1")
    assert not np.allclose(flat(gs.jax.get_weights(got)), _gradient("jax", "none", horizon=1)[1])


@pytest.mark.parametrize("flow", ["surrogate:test-pointmass-heavy", "input+decay:0.9+surrogate:test-pointmass-heavy",
                                  "combined+surrogate:test-pointmass-heavy"])
def test_a_different_surrogate_agrees_across_frameworks_and_implementations(flow):
    reference = _gradient("jax", flow, "native")
    truth = _gradient("jax", "none", "native")
    assert np.array_equal(reference[2], truth[2])  # the states are the true simulator's, exactly
    for backend, impl in (("jax", "fused"), ("torch", "native"), ("torch", "fused")):
        value, g, _ = _gradient(backend, flow, impl)
        assert value == pytest.approx(reference[0], rel=1e-12)
        assert_close(g, reference[1], what=f"{backend} {impl} {flow}")


def test_gradients_and_diagnose_run_on_the_surrogate():
    sim, policy, x0 = load("jax", "pointmass", batch=3)
    flows = ["none+surrogate:test-pointmass-heavy", "combined+surrogate:test-pointmass-heavy"]
    both = gs.gradients(policy, sim, flows=flows, horizon=6, x0=x0)
    for name in flows:
        assert_close(flat(gs.jax.get_weights(both.grads[parse_flow(name).name])), _gradient("jax", name)[1], what=name)
    d = gs.diagnose(policy, sim, flows=flows[:1], horizon=6, x0=x0)
    assert d.norms[parse_flow(flows[0]).name] == pytest.approx(float(np.linalg.norm(_gradient("jax", flows[0])[1])), rel=1e-9)


def test_surrogate_errors_name_the_fix():
    sim, policy, x0 = load("jax", "pointmass", batch=1)
    with pytest.raises(ValueError, match="the surrogate 'cartpole' has action_dim 1, but the simulator 'pointmass' has 2"):
        gs.rollout(policy, sim, stop="surrogate:cartpole", horizon=2, x0=x0)
    with pytest.raises(ValueError, match="the surrogate 'no-such-sim' cannot be built"):
        gs.rollout(policy, sim, stop="surrogate:no-such-sim", horizon=2, x0=x0)
    with pytest.raises(ValueError, match="name different surrogates"):
        gs.gradients(policy, sim, flows=["surrogate:test-pointmass-heavy", "input"], horizon=2, x0=x0)
    with pytest.raises(ValueError, match="'surrogate' in flow 'surrogate' needs a parameter"):
        parse_flow("surrogate")
    assert parse_flow("Input+surrogate:tests.helpers:Faulty").surrogate == "tests.helpers:Faulty"  # its case is kept
