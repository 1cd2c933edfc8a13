"""Zeroth- and α-order flows (gradstop.mixing): estimators against exact gradients, the rule for α, parity, errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import gradstop as gs
from gradstop import mixing
from gradstop.flows import Mixing, parse_flow
from helpers import assert_close, flat, load

jax = pytest.importorskip("jax")
jnp = jax.numpy
eqx = pytest.importorskip("equinox")
torch = pytest.importorskip("torch")


# -- the estimators against the exact gradient of the noise-smoothed cost (linear-quadratic case) --------------

def _lq():
    """A 1-D point mass (linear dynamics, quadratic cost) under a linear policy, one initial state."""
    from sims import make

    sim = make("pointmass", backend="jax", dims=1)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(), dtype=jnp.float64)
    return sim, policy, jnp.asarray([[1.0, 0.5]])


def _smoothed_gradient(sim, policy, x0, horizon, sigma):
    """∇θ E_w V(θ, w) exactly, and ∇θ V(θ, 0), from a hand-written rollout: V is quadratic in the noise w
    here, so E V = V(0) + σ² Σ_j (V(e_j) + V(−e_j) − 2 V(0))/2 over the unit noise vectors e_j."""

    def value(p, w):
        x, total = x0, 0.0
        for t in range(horizon):
            a = p(sim.obs(x)) + w[t]
            x = sim.step(x, a)
            total = total + sim.cost(x, a)
        return jnp.sum(total + sim.terminal_cost(x))

    def smoothed(p):
        zero = jnp.zeros((horizon, 1))
        v0 = value(p, zero)
        curvature = sum((value(p, zero.at[j, 0].set(1.0)) + value(p, zero.at[j, 0].set(-1.0)) - 2 * v0) / 2
                        for j in range(horizon))
        return v0 + sigma**2 * curvature

    return _flat(jax.grad(smoothed)(policy)), _flat(jax.grad(lambda p: value(p, jnp.zeros((horizon, 1))))(policy))


def _flat(g):
    return np.concatenate([np.ravel(v) for v in jax.tree.leaves(eqx.filter(g, eqx.is_inexact_array))])


@pytest.mark.parametrize("estimator", ["zero", "alpha:1"])
def test_both_estimators_are_unbiased_for_the_smoothed_cost_of_a_linear_quadratic_problem(estimator):
    """E[ĝ0] = E[ĝ1] = ∇ E_w V: 40 independent estimates of 2000 noisy rollouts each lie within 4 standard
    errors of the exact gradient in every component. The first-order estimate is precise enough to tell the
    smoothed gradient from the unsmoothed one, which it must not match."""
    sim, policy, x0 = _lq()
    horizon, sigma = 5, 0.5
    true, unsmoothed = _smoothed_gradient(sim, policy, x0, horizon, sigma)
    flow = f"{estimator}+sigma:{sigma}+samples:2000"
    grad = jax.jit(lambda p, k: eqx.filter_grad(lambda q: gs.rollout(q, sim, stop=flow, horizon=horizon, x0=x0,
                                                                     key=k).loss)(p))
    draws = np.stack([_flat(grad(policy, jax.random.PRNGKey(k))) for k in range(40)])
    mean, se = draws.mean(0), draws.std(0, ddof=1) / math.sqrt(len(draws))
    assert np.all(np.abs(mean - true) < 4 * se), (mean, true, se)
    if estimator == "alpha:1":
        assert np.max(np.abs(mean - unsmoothed) / se) > 4, "the test could not tell smoothed from unsmoothed"


def test_the_loss_value_is_the_noise_free_cost_and_a_fixed_alpha_mixes_linearly():
    sim, policy, x0 = load("jax", "pointmass", batch=3)
    noise = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 8, 3, sim.action_dim), jnp.float64)

    def grad(flow):
        def loss(p):
            return gs.rollout(p, sim, stop=flow, horizon=8, x0=x0, noise=noise).loss
        return eqx.filter_jit(eqx.filter_value_and_grad(loss))(policy)

    plain = gs.rollout(policy, sim, stop="none", horizon=8, x0=x0).loss
    (l0, g0), (l1, g1), (lh, gh) = (grad(f"{a}+samples:2+sigma:0.3") for a in ("zero", "alpha:1", "alpha:0.25"))
    assert float(l0) == float(l1) == float(lh) == pytest.approx(float(plain), rel=1e-12)
    assert_close(_flat(gh), 0.25 * _flat(g1) + 0.75 * _flat(g0), what="ĝ_0.25")


# -- the rule for α and the bound, on hand-made numbers --------------------------------------------------------

@pytest.mark.parametrize(
    "var0,var1,bias,eps,tol,expected",
    [
        (3.0, 1.0, 0.5, 0.2, 1.0, 0.75),            # ᾱ·bias = 0.375 ≤ γ − ε = 0.8: the variance optimum ᾱ = 3/4
        (3.0, 1.0, 2.0, 0.2, 1.0, 0.8 / 2.0),       # ᾱ·bias = 1.5 > 0.8: on the constraint, (γ − ε)/bias
        (3.0, 1.0, 0.5, 1.5, 1.0, 0.0),             # ε > γ: ĝ0 too uncertain, α = 0
        (0.0, 0.0, 0.0, 0.1, 1.0, 1.0),             # both exact and equal: ᾱ = 1
        (1.0, 0.0, 0.0, 0.1, 1.0, 1.0),             # first order exact: ᾱ = 1, no bias
        (0.0, 2.0, 0.3, 0.1, 1.0, 0.0),             # zeroth order exact: ᾱ = 0
    ],
)
def test_alpha_follows_the_bias_constrained_rule(var0, var1, bias, eps, tol, expected):
    got = mixing.choose_alpha(np.float64(var0), np.float64(var1), np.float64(bias), np.float64(eps), tol, np)
    assert float(got) == pytest.approx(expected, abs=1e-15)
    for xp, cast in ((jnp, jnp.float64), (torch, lambda v: torch.tensor(v, dtype=torch.float64))):
        assert float(mixing.choose_alpha(cast(var0), cast(var1), cast(bias), cast(eps), tol, xp)) == pytest.approx(expected)


def test_bernstein_bound_by_hand():
    # d = 9, δ = 0.1: log((d+1)/δ) = log(100); M = 50, σ0² = 2, L = 3
    log = math.log(100)
    expected = math.sqrt(2 * 2 * log / 50) + 2 * 3 * log / (3 * 50)
    assert float(mixing.bernstein_bound(np.float64(2.0), 50, 9, 3.0, 0.1, np)) == pytest.approx(expected, rel=1e-15)


def test_auto_reports_the_statistics_alpha_was_chosen_from_and_mixes_with_it():
    sim, policy, x0 = load("jax", "pointmass", batch=4)
    noise = jax.random.normal(jax.random.PRNGKey(3), (2, 2, 6, 4, sim.action_dim), jnp.float64)
    flows = {"auto": "alpha:auto+samples:2+sigma:0.3+tol:400+bound:1", "zero": "zero+samples:2+sigma:0.3",
             "one": "alpha:1+samples:2+sigma:0.3"}

    def run(flow):
        def loss(p):
            out = gs.rollout(p, sim, stop=flow, horizon=6, x0=x0, noise=noise)
            return out.loss, out.mixing
        (_, stats), g = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))(policy)
        return _flat(g), {k: float(v) for k, v in stats.items()}

    (g, s), (g0, _), (g1, _) = (run(flows[k]) for k in ("auto", "zero", "one"))
    dim = g.size
    eps = math.sqrt(2 * s["var0"] * math.log((dim + 1) / 0.05) / 8) + 2 * 1.0 * math.log((dim + 1) / 0.05) / (3 * 8)
    assert s["eps"] == pytest.approx(eps, rel=1e-12)
    assert s["bias"] == pytest.approx(float(np.linalg.norm(g1 - g0)), rel=1e-10)
    expected = mixing.choose_alpha(s["var0"], s["var1"], s["bias"], s["eps"], 400.0, np)
    assert s["alpha"] == pytest.approx(float(expected), rel=1e-12) and 0.0 < s["alpha"] < 1.0
    assert_close(g, s["alpha"] * g1 + (1 - s["alpha"]) * g0, what="ĝα")


# -- implementations and frameworks agree ------------------------------------------------------------------------

FLOWS = ["zero+samples:2", "alpha:0.5+input", "alpha:auto+samples:2+tol:100", "alpha:0.3+combined"]


def _gradient(backend, flow, impl, noise, horizon=6):
    sim, policy, x0 = load(backend, "pointmass", batch=2)
    if backend == "jax":
        def loss(p):
            out = gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x0, impl=impl, noise=jnp.asarray(noise))
            return out.loss, out.mixing
        (value, stats), g = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))(policy)
        return float(value), flat(gs.jax.get_weights(g)), {k: float(v) for k, v in stats.items()}
    out = gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl=impl, noise=torch.as_tensor(noise))
    out.loss.backward()
    g = flat(p.grad.numpy() for lin in policy.linears for p in (lin.weight, lin.bias))
    return float(out.loss.detach()), g, {k: float(v) for k, v in out.mixing.items()}


@pytest.mark.parametrize("flow", FLOWS)
def test_native_fused_jax_and_torch_give_one_gradient(flow):
    samples = parse_flow(flow).mixing.samples
    noise = np.random.default_rng(0).standard_normal((2, samples, 6, 2, 2))
    reference = _gradient("jax", flow, "native", noise)
    for backend, impl in (("jax", "fused"), ("torch", "native"), ("torch", "fused")):
        value, g, stats = _gradient(backend, flow, impl, noise)
        assert value == pytest.approx(reference[0], rel=1e-12)
        assert_close(g, reference[1], what=f"{backend} {impl} {flow}")
        for k, v in stats.items():
            assert (math.isnan(v) and math.isnan(reference[2][k])) or v == pytest.approx(reference[2][k], rel=1e-9), k


def _torch_auto(sim, policy, x0, flow, impl, noise, vectorise, monkeypatch):
    monkeypatch.setattr(gs.torch.mixing, "VECTORISE", vectorise)
    policy.zero_grad(set_to_none=True)
    out = gs.rollout(policy, sim, stop=flow, horizon=noise.shape[2], x0=x0, impl=impl, noise=noise)
    out.loss.backward()
    return flat(p.grad.numpy() for p in policy.parameters()), {k: float(v) for k, v in out.mixing.items()}


@pytest.mark.parametrize("flow", ["alpha:auto+samples:3+tol:100", "alpha:auto+input+decay:0.8+tol:100",
                                  "alpha:auto+state+tol:100", "alpha:auto+surrogate:test-cartpole-light+tol:100"])
def test_torch_auto_batches_its_per_sample_gradients_to_the_one_at_a_time_numbers(flow, monkeypatch):
    import warnings

    import sims

    monkeypatch.setattr(sims, "_REGISTRY", dict(sims._REGISTRY))
    sims.register("test-cartpole-light", lambda backend, **p: sims.make("cartpole", backend=backend, poles=2,
                                                                       pole_mass=0.05, **p))
    sim, policy, x0 = load("torch", "cartpole", batch=2)
    samples = parse_flow(flow).mixing.samples
    noise = torch.as_tensor(np.random.default_rng(1).standard_normal((2, samples, 7, 2, sim.action_dim)))
    g_loop, s_loop = _torch_auto(sim, policy, x0, flow, "native", noise, False, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # batched without falling back
        for impl in ("native", "fused"):
            g, s = _torch_auto(sim, policy, x0, flow, impl, noise, True, monkeypatch)
            assert_close(g, g_loop, what=f"{impl} {flow}")
            for k, v in s.items():
                assert v == pytest.approx(s_loop[k], rel=1e-9), k
    assert 0.0 <= s_loop["alpha"] <= 1.0 and s_loop["var0"] > 0 and s_loop["var1"] > 0


def test_torch_auto_falls_back_to_one_sample_at_a_time_with_a_warning_where_torch_func_cannot_batch(monkeypatch):
    from test_faults_api import FunctionStep

    sim = FunctionStep(backend="torch", dims=2)
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(4,), dtype=torch.float64)
    x0 = sim.reset(0, 2, dtype=torch.float64)
    noise = torch.as_tensor(np.random.default_rng(2).standard_normal((2, 2, 4, 2, sim.action_dim)))
    flow = "alpha:auto+samples:2+tol:100"
    g_loop, s_loop = _torch_auto(sim, policy, x0, flow, "native", noise, False, monkeypatch)
    with pytest.warns(RuntimeWarning, match="torch.func could not batch the per-sample gradients.*one sample at a time"):
        g, s = _torch_auto(sim, policy, x0, flow, "native", noise, True, monkeypatch)
    assert_close(g, g_loop, what="fallback")
    assert s == pytest.approx(s_loop, rel=1e-12)


def test_key_draws_fresh_noise_and_the_same_key_repeats_it():
    sim, policy, x0 = load("jax", "pointmass", batch=2)

    grad_of = eqx.filter_jit(lambda p, key: eqx.filter_grad(
        lambda q: gs.rollout(q, sim, stop="zero", horizon=5, x0=x0, key=key).loss)(p))

    def grad(seed):
        return _flat(grad_of(policy, jax.random.PRNGKey(seed)))

    assert np.array_equal(grad(1), grad(1)) and not np.allclose(grad(1), grad(2))
    tsim, tpolicy, tx0 = load("torch", "pointmass", batch=2)

    def tgrad(key):
        tpolicy.zero_grad(set_to_none=True)
        gs.rollout(tpolicy, tsim, stop="zero", horizon=5, x0=tx0, key=key).loss.backward()
        return flat(p.grad.numpy() for p in tpolicy.parameters())

    assert np.array_equal(tgrad(1), tgrad(1)) and not np.allclose(tgrad(1), tgrad(2))


def test_first_order_flows_report_no_mixing():
    sim, policy, x0 = load("jax", "pointmass")
    assert gs.rollout(policy, sim, stop="input", horizon=3, x0=x0).mixing is None


# -- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "flow,match",
    [
        ("alpha:1.5", "alpha must be a number in \\[0, 1\\] or 'auto'"),
        ("alpha:-0.1", "alpha must be a number in \\[0, 1\\]"),
        ("zero+sigma:0", "sigma must be a finite number > 0, got 0.0"),
        ("zero+sigma:-1", "sigma must be a finite number > 0"),
        ("zero+samples:0", "samples N must be an integer ≥ 1, got 0"),
        ("alpha:auto+delta:1.5", "delta must be a number in \\(0, 1\\)"),
        ("sigma:0.1", "sets sigma: but no zero \\| alpha:α \\| alpha:auto"),
        ("alpha:0.5+tol:1", "tol only apply to alpha:auto"),
        ("zero+input", "zero \\(α = 0\\) uses no first-order gradient"),
        ("alpha:auto+combined", "alpha:auto needs per-sample first-order gradients"),
        ("alpha", "'alpha' in flow 'alpha' needs a parameter"),
        ("zero+alpha:0.5", "gives alpha twice"),
    ],
)
def test_bad_mixing_flows_name_the_fix(flow, match):
    with pytest.raises(ValueError, match=match):
        parse_flow(flow)


def test_mixing_round_trips_and_defaults():
    for text in ("zero", "alpha:0.5+input", "alpha:auto+tol:0.5+decay:0.9", "zero+sigma:0.2+samples:4", "alpha:1.0"):
        flow = parse_flow(text)
        assert parse_flow(flow.name) == flow
    assert parse_flow("alpha:auto").mixing == Mixing()
    with pytest.raises(ValueError, match="no single \\(k_phys, k_in\\)"):
        parse_flow("alpha:0.5+input").k_phys
    assert parse_flow("alpha:0.5+input").first_order == parse_flow("input")


def test_rollout_errors_for_mixing_flows():
    sim, policy, x0 = load("jax", "pointmass", batch=1)
    with pytest.raises(ValueError, match="batch × samples = 1 × 1 = 1 noisy rollout; it needs at least 2"):
        gs.rollout(policy, sim, stop="alpha:auto", horizon=3, x0=x0, key=0)
    with pytest.raises(ValueError, match="needs a key to draw it: pass key="):
        gs.rollout(policy, sim, stop="zero", horizon=3, x0=x0)
    with pytest.raises(ValueError, match="noise has shape \\(2, 1, 3, 1\\), but flow 'zero' .* reads \\(2, 1, 3, 1, 2\\)"):
        gs.rollout(policy, sim, stop="zero", horizon=3, x0=x0, noise=jnp.zeros((2, 1, 3, 1)))
    with pytest.raises(ValueError, match="noise= is read only by the zeroth-/α-order flows"):
        gs.rollout(policy, sim, stop="input", horizon=3, x0=x0, noise=jnp.zeros((2, 1, 3, 1, 2)))
    tsim, tpolicy, tx0 = load("torch", "pointmass", batch=1)
    with pytest.raises(ValueError, match="it needs at least 2"):
        gs.rollout(tpolicy, tsim, stop="alpha:auto", horizon=3, x0=tx0)
    with pytest.raises(TypeError, match="noise must be a torch.Tensor"):
        gs.rollout(tpolicy, tsim, stop="zero", horizon=3, x0=tx0, noise=np.zeros((2, 1, 3, 1, 2)))


# -- trainers ------------------------------------------------------------------------------------------------

def _config(backend, flow, epochs):
    from gradstop.trainers import TrainConfig

    return TrainConfig(sim="pointmass", sim_params={"dims": 1}, backend=backend, flow=flow, horizon=5, epochs=epochs,
                       batch=4, updates_per_epoch=2, test_size=4, dtype="float64", hidden=(8,), checkpoint_every=1)


@pytest.mark.parametrize("flow", ["alpha:auto+samples:2+tol:50", "zero"])
def test_bptt_logs_the_mixing_statistics_the_same_in_both_frameworks_and_resumes_exactly(flow, tmp_path, monkeypatch):
    from gradstop.trainers import train
    from gradstop.trainers.jax.bptt import BPTT

    straight = {b: train(_config(b, flow, 2), out=tmp_path / f"{b}-straight") for b in ("jax", "torch")}
    j, t = (straight[b].updates for b in ("jax", "torch"))
    assert len(j) == len(t) == 4 and {"alpha", "bias", "eps", "var0", "var1"} <= set(j[0])
    for a, b in zip(j, t):
        for k in ("loss", "grad_norm", "alpha", "bias", "eps", "var0", "var1"):
            assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-9), k
    if flow == "zero":
        assert all(r["alpha"] == 0.0 for r in j)
    else:
        assert all(0.0 <= r["alpha"] <= 1.0 and r["eps"] > 0 for r in j)
    for b in ("jax", "torch"):  # the record keeps the α the updates took
        s, alphas = straight[b].summary, [r["alpha"] for r in straight[b].updates]
        assert (s["mean_alpha"], s["min_alpha"], s["max_alpha"]) == pytest.approx((np.mean(alphas), min(alphas), max(alphas)))
        assert json.loads((tmp_path / f"{b}-straight" / "summary.json").read_text())["mean_alpha"] == s["mean_alpha"]
    real = BPTT.run_epoch

    def cut_in_epoch_2(self, data, epoch):  # the run stops after epoch 1's checkpoint
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, data, epoch)

    monkeypatch.setattr(BPTT, "run_epoch", cut_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(_config("jax", flow, 2), out=tmp_path / "resumed")
    monkeypatch.setattr(BPTT, "run_epoch", real)
    resumed = train(_config("jax", flow, 2), out=tmp_path / "resumed")
    assert [r["loss"] for r in resumed.updates] == [r["loss"] for r in j]
    assert resumed.summary["final_test_loss"] == straight["jax"].summary["final_test_loss"]


def test_a_gaussian_policy_trains_a_mixing_flow_alike_in_jax_and_torch():
    """Its own noise ε rides in the state, the flow's action noise w is added to its action μ + σε: ĝ0 and ĝ1 both
    estimate the gradient of E_{ε,w}[V]; float64, the same updates and statistics in both frameworks."""
    from gradstop.mixing import STAT_NAMES
    from gradstop.trainers import TrainConfig, train

    table = {}
    for backend in ("jax", "torch"):
        cfg = TrainConfig(sim="pointmass", backend=backend, flow="alpha:auto+samples:2", policy="gaussian", horizon=6,
                          train_size=8, batch=4, epochs=2, hidden=(8,), dtype="float64")
        table[backend] = np.asarray([[float(u[k]) for k in ("loss", "grad_norm", *STAT_NAMES)] for u in train(cfg).updates])
    assert np.isfinite(table["jax"][:, :3]).all()
    np.testing.assert_allclose(table["jax"], table["torch"], rtol=1e-9, atol=1e-12)


def test_gradients_refuses_a_mixing_flow():
    sim, policy, x0 = load("jax", "pointmass")
    with pytest.raises(ValueError, match="gs.gradients sweeps first-order flows"):
        gs.gradients(policy, sim, flows=["none", "zero"], horizon=3, x0=x0)


# -- the empirical-bias test (gs.bias_test, gs.diagnose(bias_test=...)) ------------------------------------------

class _Wall:
    """x' = x + a/10; each step past the wall at x = 1 costs 1: a Heaviside, whose pathwise gradient is 0
    everywhere while the noise-smoothed cost's gradient is not, near the wall."""

    backend, name, dt, obs_dim, action_dim, state_dim = "jax", "wall", 1.0, 1, 1, 1

    def step(self, x, a):
        return x + 0.1 * a

    def obs(self, x):
        return x

    def cost(self, x, a):
        return (x[..., 0] > 1.0).astype(x.dtype) + 0.0 * a[..., 0]

    def terminal_cost(self, x):
        return 0.0 * x[..., 0]

    def reset(self, key, batch, dtype=None):
        return jnp.zeros((batch, 1), dtype)


@pytest.mark.parametrize("start,fires", [(0.0, False), (0.97, True), (2.0, False)])
def test_the_bias_test_fires_at_the_discontinuity_and_not_away_from_it(start, fires):
    policy = gs.jax.mlp(0, 1, 1, hidden=(4,), dtype=jnp.float64)
    t = gs.bias_test(policy, _Wall(), horizons=[1, 3], x0=jnp.full((1, 1), start), samples=256, sigma=0.5, bound=1.0, key=0)
    assert list(t.fires) == [fires, fires], t.summary()
    assert np.all(t.var1 == 0.0)  # the pathwise gradient of a step function: exactly zero, for every sample
    assert ("beyond its confidence bound" in t.summary()) == fires


@pytest.mark.slow  # 2 × 8192 noisy rollouts per horizon (about 30 s)
@pytest.mark.parametrize("contact,fires", [("hard", [False, True]), ("soft", [False, False])])
def test_the_bias_test_fires_at_the_bouncing_balls_floor_impact_and_not_before_it(contact, fires):
    """The ball starts at the mean initial state and hits the wall in step 4 and the floor in step 9 (the noise-free
    rollout). With hard impacts the step is discontinuous where an impact moves to another substep, the state jumping
    by about (1 + e)·g·h against the floor; the pathwise gradient misses those jumps, so after the floor impact
    (H = 10) it disagrees with the zeroth-order one beyond ĝ0's confidence bound, and before it (H = 8) it does not.
    The soft contact is smooth: the test does not fire at either horizon."""
    from sims import make

    sim = make("bounce", backend="jax", contact=contact)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(4,), dtype=jnp.float64)
    low, high = sim.init_bounds()
    x0 = jnp.asarray((low + high)[None] / 2, jnp.float64)
    states = np.asarray(gs.rollout(policy, sim, stop="none", horizon=10, x0=x0).states[:, 0])
    if contact == "hard":
        assert np.all(states[1:9, 3] < 0) and states[9, 3] > 0  # vy flips in step 9 (the floor), not before
    t = gs.bias_test(policy, sim, horizons=[8, 10], x0=x0, samples=8192, sigma=0.1, bound=1.0, key=0)
    assert list(t.fires) == fires, t.summary()


def test_diagnose_runs_the_bias_test_of_each_first_order_flow_on_its_own_states():
    sim, policy, x0 = load("jax", "pointmass", batch=2)
    d = gs.diagnose(policy, sim, flows=["none", "input", "combined"], horizon=4, x0=x0,
                    bias_test=dict(horizons=[2, 4], samples=4))
    assert set(d.bias) == {"none", "input"} and list(d.bias["none"].horizons) == [2, 4]
    direct = gs.bias_test(policy, sim, horizons=[2, 4], flow="input", x0=x0, samples=4, key=0)
    assert np.array_equal(direct.bias, d.bias["input"].bias) and "empirical-bias test of 'input'" in d.summary()
    with pytest.raises(ValueError, match="already mixes a zeroth-order estimate"):
        gs.bias_test(policy, sim, horizons=[2], flow="alpha:0.5", x0=x0)
    with pytest.raises(ValueError, match="bias_test needs horizons"):
        gs.diagnose(policy, sim, flows=["none"], horizon=2, x0=x0, bias_test=dict(samples=4))


def test_gradstop_diagnose_bias_test_writes_its_table(tmp_path, capsys):
    import csv
    import json

    from gradstop import cli

    out = tmp_path / "d"
    code = cli.main(["diagnose", "--sim", "pointmass", "--flows", "none,combined", "--horizon", "3", "--batch", "2",
                     "--no-precision", "--bias-test", "2,3", "--bias-samples", "2", "--out", str(out)])
    assert code == 0 and "empirical-bias test of 'none'" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "bias.csv")))
    assert [(r["flow"], r["horizon"]) for r in rows] == [("none", "2"), ("none", "3")]
    assert json.loads((out / "summary.json").read_text())["bias_test"]["none"]["samples"] == 4
    with pytest.raises(SystemExit):
        cli.main(["diagnose", "--sim", "pointmass", "--bias-test", "0,5", "--out", str(tmp_path / "e")])
    assert "--bias-test horizons must be integers ≥ 1" in capsys.readouterr().err


def test_the_bias_test_reports_where_the_first_order_variance_explodes():
    """σ1² growing more than ten times per step of horizon is a finding of its own (an impact): the summary names it."""
    from gradstop.health.bias import BiasTest

    hs = np.array([8, 9, 10, 12, 16])
    var1 = np.array([1e-3, 3.3e-3, 0.39, 7e-3, 5e-1])  # ×3.3 (no), ×118 (yes), a fall, ×71 over 4 steps (no: < 10⁴)
    t = BiasTest("none", hs, np.ones(5), np.full(5, 2.0), np.ones(5), var1, np.zeros(5, bool), 64, 0.1, 1.0, 0.05)
    assert [(a, b) for a, b, _ in t.variance_jumps()] == [(9, 10)]
    assert t.variance_jumps()[0][2] == pytest.approx(0.39 / 3.3e-3)
    assert "σ1² jumps ×118 from H = 9 to H = 10" in t.summary()
    quiet = dataclasses.replace(t, var1=np.array([1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]))
    assert quiet.variance_jumps() == [] and "jumps" not in quiet.summary()
