"""Every flow, in both frameworks, against the independent NumPy reference and each other (float64)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import gradstop as gs
from helpers import SIMS, assert_close, gradient, load, problem
from reference import mlp_apply, reference_gradient, trajectory
from sims import make

FLOWS = ["none", "input", "state", "all", "decay:0.8", "truncate:3", "input+truncate:2", "input+decay:0.9",
         "combined", "directional", "combined+truncate:4"]
HORIZONS = [1, 2, 7, 30]
BACKENDS = ["jax", "torch"]


@functools.lru_cache(maxsize=None)
def ref_trajectory(sim_name: str, horizon: int):
    weights, x0 = problem(sim_name)
    return trajectory(sim_name, SIMS[sim_name], weights, x0, horizon)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("sim_name", sorted(SIMS))
def test_flow_matches_reference(sim_name, horizon, flow, backend):
    traj = ref_trajectory(sim_name, horizon)
    sim, policy, x0 = load(backend, sim_name)
    loss, grad = gradient(backend, policy, sim, x0, flow, horizon)
    assert_close(loss, traj.loss, what="loss")
    assert_close(grad, reference_gradient(traj, flow), what=f"{flow} gradient")


@pytest.mark.parametrize("horizon", [1, 7, 30])
@pytest.mark.parametrize("sim_name", sorted(SIMS))
def test_none_matches_finite_differences(sim_name, horizon):
    """Central differences of the float64 NumPy loss along random parameter directions."""
    weights, x0 = problem(sim_name)
    sim = make(sim_name, backend="numpy", **SIMS[sim_name])

    def loss(ws):
        x, total = x0, 0.0
        for _ in range(horizon):
            a = mlp_apply(ws, sim.obs(x))
            x = sim.step(x, a)
            total = total + sim.cost(x, a)
        return float(np.mean(total + sim.terminal_cost(x)))

    grad = reference_gradient(ref_trajectory(sim_name, horizon), "none")
    _, jax_grad = gradient("jax", *_policy_first(load("jax", sim_name)), "none", horizon)
    rng = np.random.default_rng(1)
    for _ in range(3):
        direction = [rng.normal(size=w.shape) for w in weights]
        eps = 1e-6
        plus = loss([w + eps * d for w, d in zip(weights, direction)])
        minus = loss([w - eps * d for w, d in zip(weights, direction)])
        fd = (plus - minus) / (2 * eps)
        flat_dir = np.concatenate([d.ravel() for d in direction])
        for g in (grad, jax_grad):
            assert abs(g @ flat_dir - fd) <= 1e-6 * max(abs(fd), 1.0), (g @ flat_dir, fd)


def _policy_first(loaded):
    sim, policy, x0 = loaded
    return policy, sim, x0


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("sim_name", sorted(SIMS))
def test_jax_and_torch_agree(sim_name, flow):
    """Same sim, weights and x0: same loss and gradient in both frameworks (float64, ≤1e-9 relative)."""
    horizon = 20
    (lj, gj), (lt, gt) = (gradient(b, *_policy_first(load(b, sim_name)), flow, horizon) for b in BACKENDS)
    assert abs(lj - lt) <= 1e-9 * abs(lj)
    assert np.abs(gj - gt).max() <= 1e-9 * np.abs(gj).max()


@pytest.mark.parametrize("sim_name", sorted(SIMS))
def test_flows_differ_where_they_must(sim_name):
    """The flows give distinct gradients; mapping every flow to 'none' would fail this."""
    traj = ref_trajectory(sim_name, 7)
    grads = {f: reference_gradient(traj, f) for f in ["none", "input", "state", "all", "decay:0.8", "truncate:3"]}
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rel = np.abs(grads[a] - grads[b]).max() / np.abs(grads[a]).max()
            assert rel > 1e-6, f"{a} and {b} coincide on {sim_name}"
    # The backends follow the reference (test_flow_matches_reference), so they differ too; check one.
    _, g_input = gradient("torch", *_policy_first(load("torch", sim_name)), "input", 7)
    _, g_none = gradient("torch", *_policy_first(load("torch", sim_name)), "none", 7)
    assert np.abs(g_input - g_none).max() > 1e-6 * np.abs(g_none).max()


def test_combining_flows_differ_from_their_components():
    """Where none and input disagree in sign, combined zeroes and directional flips those components."""
    traj = ref_trajectory("neural", 30)
    g_none, g_input = reference_gradient(traj, "none"), reference_gradient(traj, "input")
    disagree = np.sign(g_none) != np.sign(g_input)
    assert disagree.any(), "test problem has no sign disagreement; pick another"
    combined, directional = reference_gradient(traj, "combined"), reference_gradient(traj, "directional")
    assert np.all(combined[disagree] == 0) and np.all(combined[~disagree] == g_input[~disagree])
    assert np.all(np.sign(directional[disagree]) == np.sign(g_none[disagree]))
    for backend in BACKENDS:
        _, g = gradient(backend, *_policy_first(load(backend, "neural")), "combined", 30)
        assert np.all(g[disagree] == 0)
        assert_close(g, combined, what=f"{backend} combined")


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncate_at_or_beyond_horizon_is_none(backend):
    """truncate:K with K ≥ H never cuts: it equals 'none'."""
    g = [gradient(backend, *_policy_first(load(backend, "cartpole")), f, 5)[1] for f in ("none", "truncate:5", "truncate:9")]
    assert_close(g[1], g[0])
    assert_close(g[2], g[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_decay_endpoints(backend):
    """decay:1 is 'none' and decay:0 is 'all'."""
    run = lambda f: gradient(backend, *_policy_first(load(backend, "pointmass")), f, 7)[1]  # noqa: E731
    assert_close(run("decay:1"), run("none"))
    assert_close(run("decay:0"), run("all"))


@pytest.mark.parametrize("impl", ["native", "fused"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_observation_cartpole_matches_reference(backend, impl):
    """The published setting's policy input (observation='raw', literature preset, its initial states)."""
    import gradstop as gs

    params = dict(preset="literature", poles=2, observation="raw")
    ref = make("cartpole", backend="numpy", **params)
    rng = np.random.default_rng(3)
    sizes = [ref.obs_dim, 8, ref.action_dim]
    weights = [a for n_in, n_out in zip(sizes[:-1], sizes[1:])
               for a in (rng.uniform(-1, 1, (n_out, n_in)) / np.sqrt(n_in), rng.uniform(-1, 1, n_out) / np.sqrt(n_in))]
    x0 = ref.reset(rng, 3)
    traj = trajectory("cartpole", params, weights, x0, 12)
    sim = make("cartpole", backend=backend, **params)
    if backend == "jax":
        import jax.numpy as jnp

        policy, x = gs.jax.set_weights(gs.jax.mlp(0, sim.obs_dim, 1, hidden=(8,), dtype=jnp.float64), weights), jnp.asarray(x0)
    else:
        import torch

        policy = gs.torch.set_weights(gs.torch.mlp(sim.obs_dim, 1, hidden=(8,), dtype=torch.float64), weights)
        x = torch.as_tensor(x0)
    for flow in ("none", "input", "combined"):
        loss, grad = gradient(backend, policy, sim, x, flow, 12, impl=impl)
        assert_close(loss, traj.loss, what="loss")
        assert_close(grad, reference_gradient(traj, flow), what=f"{flow} gradient")


def test_torch_norms_and_cosines_are_computed_when_first_read():
    """In torch, norms and cosines are computed on first access, equal to the eager formula, read-only, and a
    gradient modified in place before the first read is an error, not a silently different norm."""
    from collections.abc import Mapping

    import torch

    sim, policy, x0 = load("torch", "pointmass")
    flows = ["none", "input", "combined"]
    out = gs.gradients(policy, sim, flows=flows, horizon=5, x0=x0)
    assert isinstance(out.norms, Mapping) and list(out.norms) == flows and len(out.cosine) == 3
    flat = {f: torch.cat([g.reshape(-1) for g in out.grads[f].values()]) for f in flows}
    for f in flows:
        assert_close(float(out.norms[f]), float(flat[f].norm()), what=f)
    assert_close(float(out.cosine[("none", "input")]),
                 float(flat["none"] @ flat["input"] / (flat["none"].norm() * flat["input"].norm())))
    assert "none" in repr(out.norms) and dict(out.cosine).keys() == out.cosine.keys()
    with pytest.raises(TypeError):
        out.norms["none"] = 0.0
    next(iter(out.grads["input"].values())).mul_(2.0)  # after the first read, the values read stand
    assert_close(float(out.norms["input"]), float(flat["input"].norm()))

    again = gs.gradients(policy, sim, flows=flows, horizon=5, x0=x0)
    next(iter(again.grads["none"].values())).add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place before"):
        again.norms["none"]
