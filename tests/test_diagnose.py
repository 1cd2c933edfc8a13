"""gs.diagnose: per-step traces held to brute force, JAX against torch, and the non-finite locator."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradstop as gs
from gradstop.flows import parse_flow
from gradstop.jax.rollout import scale_gradient
from helpers import Faulty, load

FLOWS = ["none", "input", "state", "decay:0.5", "truncate:3", "input+truncate:4"]
H = 7


def brute_force(policy, sim, flow: str, horizon: int, x0):
    """λ_t, μ_t and each step's ∇θ contribution, by JAX autodiff with respect to zero perturbations
    added to x_t (before the cost that reads it), to a_t and to a per-step copy of θ."""
    flow = parse_flow(flow)
    params, static = eqx.partition(policy, eqx.is_inexact_array)

    def loss(eps, delta, zeta):
        x, total = x0 + eps[0], 0.0
        for t in range(horizon):
            p_t = jax.tree.map(lambda p, z: p + z[t], params, zeta)
            a = eqx.combine(p_t, static)(sim.obs(scale_gradient(x, flow.k_in))) + delta[t]
            x_next = sim.step(scale_gradient(x, flow.k_phys), a) + eps[t + 1]
            total = total + sim.cost(x_next, a)
            x = jax.lax.stop_gradient(x_next) if flow.cut_after(t + 1) else x_next
        return jnp.mean(total + sim.terminal_cost(x_next))

    eps = jnp.zeros((horizon + 1,) + x0.shape)
    delta = jnp.zeros((horizon, x0.shape[0], sim.action_dim))
    zeta = jax.tree.map(lambda p: jnp.zeros((horizon,) + p.shape), params)
    lam, mu, theta = jax.grad(loss, argnums=(0, 1, 2))(eps, delta, zeta)
    contrib = np.concatenate([np.asarray(v).reshape(horizon, -1) for v in jax.tree.leaves(theta)], axis=1)
    return np.linalg.norm(lam, axis=-1), np.linalg.norm(mu, axis=-1), contrib


def brute_force_torch(policy, sim, flow: str, horizon: int, x0):
    """The same in torch: perturbations ε_t, δ_t, and θ_t = θ + ζ_t through ``torch.func.functional_call``."""
    from gradstop.torch.rollout import scale_gradient as scale

    flow = parse_flow(flow)
    names = [k for k, _ in policy.named_parameters()]
    params = dict(policy.named_parameters())
    eps = torch.zeros((horizon + 1,) + x0.shape, dtype=x0.dtype, requires_grad=True)
    delta = torch.zeros((horizon, x0.shape[0], sim.action_dim), dtype=x0.dtype, requires_grad=True)
    zeta = {k: torch.zeros((horizon,) + p.shape, dtype=p.dtype, requires_grad=True) for k, p in params.items()}
    x, total = x0 + eps[0], 0.0
    for t in range(horizon):
        p_t = {k: params[k] + zeta[k][t] for k in names}
        a = torch.func.functional_call(policy, p_t, (sim.obs(scale(x, flow.k_in)),)) + delta[t]
        x_next = sim.step(scale(x, flow.k_phys), a) + eps[t + 1]
        total = total + sim.cost(x_next, a)
        x = x_next.detach() if flow.cut_after(t + 1) else x_next
    loss = (total + sim.terminal_cost(x_next)).mean()
    lam, mu, *theta = torch.autograd.grad(loss, [eps, delta, *zeta.values()], allow_unused=True, materialize_grads=True)
    contrib = torch.cat([v.reshape(horizon, -1) for v in theta], 1)
    return lam.norm(dim=-1).numpy(), mu.norm(dim=-1).numpy(), contrib.numpy()


@pytest.mark.parametrize("backend, sim_name, memory, flows", [
    pytest.param("jax", "pointmass", "residuals", ["none", "truncate:3"], marks=pytest.mark.slow),  # JAX = torch: below
    ("torch", "cartpole", "residuals", FLOWS),
    ("torch", "pointmass", "recompute", FLOWS),
])
def test_traces_match_brute_force(backend, sim_name, memory, flows):
    sim, policy, x0 = load(backend, sim_name, batch=3)
    d = gs.diagnose(policy, sim, flows=flows, horizon=H, x0=x0, memory=memory)
    contribs = {}
    for flow in flows:
        lam, mu, contrib = (brute_force if backend == "jax" else brute_force_torch)(policy, sim, flow, H, x0)
        name = parse_flow(flow).name
        np.testing.assert_allclose(d.lam_mean[name], lam.mean(-1), rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(d.lam_max[name], lam.max(-1), rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(d.mu_mean[name], mu.mean(-1), rtol=1e-10)
        np.testing.assert_allclose(d.mu_max[name], mu.max(-1), rtol=1e-10)
        np.testing.assert_allclose(d.contribution[name], np.linalg.norm(contrib, axis=1), rtol=1e-10)
        contribs[name] = contrib
    first, second = (parse_flow(f).name for f in flows[:2])
    a, b = contribs[first], contribs[second]
    with np.errstate(invalid="ignore", divide="ignore"):  # a truncated flow's early contributions can be 0
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(d.step_cosine[(first, second)], cos, rtol=1e-9)
    np.testing.assert_allclose(d.step_agreement[(first, second)], (np.sign(a) == np.sign(b)).mean(1))
    whole = {n: c.sum(0) for n, c in contribs.items()}
    np.testing.assert_allclose(d.norms[first], np.linalg.norm(whole[first]), rtol=1e-10)
    assert d.agreement[(first, second)] == pytest.approx((np.sign(whole[first]) == np.sign(whole[second])).mean())
    assert d.nonfinite == [] and d.first_nonfinite is None


def test_torch_matches_jax_every_field():
    """The torch sweep keeps its pieces apart differently; every number agrees with JAX's in float64."""
    flows = ["none", "input", "combined", "decay:0.9", "truncate:3"]
    sj, pj, xj = load("jax", "cartpole", batch=3)
    st, pt, xt = load("torch", "cartpole", batch=3)
    dj = gs.diagnose(pj, sj, flows=flows, horizon=H, x0=xj)
    dt = gs.diagnose(pt, st, flows=flows, horizon=H, x0=xt)
    for field in ("lam_mean", "lam_max", "mu_mean", "mu_max", "contribution", "step_cosine", "step_agreement",
                  "norms", "cosine", "agreement"):
        a, b = getattr(dj, field), getattr(dt, field)
        assert a.keys() == b.keys(), field
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-10, atol=1e-300, err_msg=f"{field}[{k}]")
    for name in flows:
        g = np.concatenate([np.ravel(v.detach().numpy()) for v in dt.grads[name].values()])
        ref = gs.gradients(pt, st, flows=[name], horizon=H, x0=xt).grads[name]
        np.testing.assert_allclose(g, np.concatenate([np.ravel(v.detach().numpy()) for v in ref.values()]), rtol=1e-12)


def test_gradients_equal_fused_and_no_contributions_mode():
    sim, policy, x0 = load("jax", "pointmass", batch=2)
    flows = ["none", "input", "directional"]
    d = gs.diagnose(policy, sim, flows=flows, horizon=H, x0=x0, contributions=False)
    ref = gs.gradients(policy, sim, flows=flows, horizon=H, x0=x0)
    for name in flows:
        for a, b in zip(jax.tree.leaves(d.grads[name]), jax.tree.leaves(ref.grads[name])):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)
    assert d.contribution == {} and d.step_cosine == {}
    rows = d.rows()
    assert len(rows) == 2 * (H + 1) and set(rows[0]) == {"flow", "t", "lam_mean", "lam_max", "mu_mean", "mu_max", "contribution"}
    assert np.isnan(rows[0]["contribution"]) and d.pair_rows() == [] and "all values finite" in d.summary()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_locator_finds_a_nan_injected_in_the_step(backend):
    sim = Faulty(backend=backend, fault="forward")
    policy = gs.jax.mlp(0, 2, 1) if backend == "jax" else gs.torch.mlp(2, 1, dtype=torch.float64)
    d = gs.diagnose(policy, sim, flows=["none", "input"], horizon=45, x0=sim.x0(8))
    first = d.first_nonfinite
    assert (first.sweep, first.quantity, first.kind, first.step, first.stage, first.batch_index) == \
        ("forward", "state", "NaN", 37, "simulator step", 5)
    assert str(first) == "state first NaN at step 37 of 45 (simulator step), batch element 5"


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_locator_finds_a_vjp_that_alone_is_nonfinite(backend):
    sim = Faulty(backend=backend, fault="vjp")
    policy = gs.jax.mlp(0, 2, 1) if backend == "jax" else gs.torch.mlp(2, 1, dtype=torch.float64)
    d = gs.diagnose(policy, sim, flows=["none", "input"], horizon=45, x0=sim.x0(8))
    assert np.isfinite(d.loss)
    assert [str(n) for n in d.nonfinite] == [
        "flow none: λ first NaN at step 37 of 45 (VJP through the simulator), batch element 5",
        "flow input: λ first NaN at step 37 of 45 (VJP through the simulator), batch element 5"]
    assert np.isfinite(d.lam_max["none"][38:]).all() and np.isnan(d.lam_max["none"][37])


def test_healthy_faulty_sim_is_finite():
    sim = Faulty(backend="jax", fault=None)
    d = gs.diagnose(gs.jax.mlp(0, 2, 1), sim, flows="none,input", horizon=45, x0=sim.x0(8))
    assert d.nonfinite == [] and "all values finite" in d.summary()


@pytest.mark.parametrize("bad, message", [
    (dict(flows=["none", "sideways"]), "unknown flow part 'sideways'"),
    (dict(flows=[]), "flows is empty"),
    (dict(horizon=0), "horizon must be ≥ 1"),
    (dict(memory="tape"), "unknown memory policy"),
])
def test_bad_input(bad, message):
    sim, policy, x0 = load("jax", "pointmass")
    kwargs = dict(flows=["none"], horizon=4, x0=x0) | bad
    with pytest.raises(ValueError, match=message):
        gs.diagnose(policy, sim, **kwargs)


def test_a_sim_missing_a_protocol_method_is_named():
    class NoCost:
        backend, obs_dim, action_dim, state_dim = "jax", 4, 2, 4

        def step(self, x, a):
            return x

        def obs(self, x):
            return x

        def reset(self, key=None, batch=1, dtype=None):
            return jnp.zeros((batch, 4))

        def terminal_cost(self, x):
            return x[:, 0] * 0

    with pytest.raises(TypeError, match="has no method 'cost'"):
        gs.diagnose(gs.jax.mlp(0, 4, 2), NoCost(), flows=["none"], horizon=3)


def test_a_wrapper_is_diagnosed_from_its_own_x0_or_its_reset():
    """The trainers' wrappers (a Gaussian policy's noise in the state) have no reset: x0 is given instead."""
    from gradstop.trainers.noise import Noisy
    from sims import make

    sim = make("pointmass", backend="torch", dims=2)
    noisy = Noisy(sim, 5)
    policy = gs.torch.gaussian(sim.obs_dim, sim.action_dim, hidden=(8,), dtype=torch.float64, seed=0)
    x0 = noisy.wrap(sim.reset(0, 3, dtype=torch.float64), torch.randn(3, 5, 2, dtype=torch.float64))
    d = gs.diagnose(policy, noisy, flows=["none", "input"], horizon=5, x0=x0)
    assert d.nonfinite == [] and d.lam_mean["none"].shape == (6,)
    # The wrapper's own reset starts from zero noise: without x0 the diagnosis is of the mean policy.
    d0 = gs.diagnose(policy, noisy, flows=["none"], horizon=5, batch=3)
    assert d0.nonfinite == [] and d0.lam_mean["none"].shape == (6,)

    class NoReset:
        """A wrapper that cannot draw initial states: only its own x0 can start it."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            if name == "reset":
                raise AttributeError(name)
            return getattr(self.inner, name)

    bare = NoReset(noisy)
    assert gs.diagnose(policy, bare, flows=["none"], horizon=5, x0=x0).nonfinite == []
    with pytest.raises(TypeError, match="has no method 'reset'"):
        gs.diagnose(policy, bare, flows=["none"], horizon=5)
