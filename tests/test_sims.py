"""Simulators: the published cartpole trajectories, JAX/torch/NumPy parity, invariants, the registry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import sims
from sims import make

# A copy of shared/data/cartpole_reference.npz (see data/README.md for its source), kept with the tests.
REFERENCE = Path(__file__).resolve().parent / "data" / "cartpole_reference.npz"
BACKENDS = ["jax", "torch", "numpy"]


def to_backend(backend, array):
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    if backend == "torch":
        import torch

        return torch.as_tensor(array)
    return np.asarray(array)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("poles", [1, 2, 3, 4])
def test_cartpole_literature_preset_matches_published_trajectories(poles, backend):
    data = np.load(REFERENCE)
    states, forces = data[f"nc{poles}_states"], data[f"nc{poles}_forces"]  # (B, 101, N+1, 2), (B, 100)
    flat = np.concatenate([states[..., 0], states[..., 1]], -1)  # (x, θ..., ẋ, θ̇...)
    sim = make("cartpole", backend=backend, preset="literature", poles=poles)
    x = to_backend(backend, flat[:, 0])
    for t in range(forces.shape[1]):
        x = sim.step(x, to_backend(backend, forces[:, t : t + 1]))
        np.testing.assert_allclose(np.asarray(x), flat[:, t + 1], rtol=0, atol=1e-9, err_msg=f"step {t + 1}")
    # the paper's loss, 1 − mean_i cos θ_i at the final step, is the preset's terminal cost
    expected = 1 - np.cos(flat[:, -1, 1:poles + 1]).mean(-1)
    np.testing.assert_allclose(np.asarray(sim.terminal_cost(x)), expected, atol=1e-12)


PARITY = [("pointmass", {}), ("pointmass", {"dims": 2, "drag": 0.0, "target": (1.0, -1.0)}),
          ("cartpole", {"poles": 3}), ("cartpole", {"task": "balance", "poles": 1}), ("neural", {}),
          ("cartpole", {"preset": "literature", "poles": 2, "observation": "raw"})]


@pytest.mark.parametrize("name,params", PARITY, ids=lambda p: str(p))
def test_backends_simulate_identically(name, params):
    """200 steps from the same state with the same actions: equal states, observations and costs."""
    ref = make(name, backend="numpy", **params)
    rng = np.random.default_rng(0)
    x0 = ref.reset(rng, 4)
    actions = rng.normal(size=(200, 4, ref.action_dim))
    traces = {}
    for backend in BACKENDS:
        sim = make(name, backend=backend, **params)
        x, trace = to_backend(backend, x0), []
        for a in actions:
            a = to_backend(backend, a)
            x_next = sim.step(x, a)
            trace.append(np.concatenate([np.asarray(x_next), np.asarray(sim.obs(x)), np.asarray(sim.cost(x_next, a))[:, None]], -1))
            x = x_next
        traces[backend] = np.stack(trace)
    assert np.all(np.isfinite(traces["numpy"]))
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(traces[backend], traces["numpy"], rtol=1e-9, atol=1e-9, err_msg=backend)


def test_pointmass_without_drag_or_force_moves_uniformly():
    sim = make("pointmass", backend="numpy", drag=0.0, dims=2)
    x = np.array([[0.0, 0.0, 1.0, -2.0]])
    for _ in range(10):
        x = sim.step(x, np.zeros((1, 2)))
    np.testing.assert_allclose(x, [[10 * sim.dt, -20 * sim.dt, 1.0, -2.0]], atol=1e-12)


def test_pointmass_drag_dissipates_kinetic_energy():
    sim = make("pointmass", backend="numpy", drag=0.5)
    x = sim.reset(np.random.default_rng(0), 3) + np.concatenate([np.zeros(3), np.ones(3)])
    speeds = []
    for _ in range(20):
        x = sim.step(x, np.zeros((3, 3)))
        speeds.append((x[:, 3:] ** 2).sum(-1))
    assert np.all(np.diff(np.stack(speeds), axis=0) < 0)


@pytest.mark.parametrize("poles", [1, 3])
def test_cartpole_upright_is_an_equilibrium_and_hanging_is_stable(poles):
    sim = make("cartpole", backend="numpy", poles=poles)
    upright = np.zeros((1, sim.state_dim))
    hanging = upright.copy()
    hanging[:, 1 : poles + 1] = math.pi
    for x0 in (upright, hanging):
        x = x0
        for _ in range(100):
            x = sim.step(x, np.zeros((1, 1)))
        np.testing.assert_allclose(x, x0, atol=1e-12)
    assert sim.cost(upright, np.zeros((1, 1)))[0] == 0.0


def test_cartpole_unactuated_swing_conserves_energy_approximately():
    """One pole, no force: the cart-pole energy drifts little over 1 s (semi-implicit Euler, dt = 1 ms)."""
    sim = make("cartpole", backend="numpy", poles=1, dt=0.001)
    m, l, mc, g = sim.pole_mass, sim.half_length, sim.cart_mass, sim.gravity

    def energy(x):
        _, th, v, om = x[0]
        # point-mass-free rigid pole of half-length l (inertia m·(2l)²/12 about its centre)
        vx, vy = v + l * om * math.cos(th), -l * om * math.sin(th)
        return 0.5 * mc * v**2 + 0.5 * m * (vx**2 + vy**2) + 0.5 * (m * (2 * l) ** 2 / 12) * om**2 + m * g * l * math.cos(th)

    x = np.array([[0.0, 0.3, 0.0, 0.0]])
    e0 = energy(x)
    for _ in range(1000):
        x = sim.step(x, np.zeros((1, 1)))
    assert abs(energy(x) - e0) < 1e-2 * abs(e0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sims.names())
def test_reset_samples_within_bounds_and_repeats_by_seed(name, backend):
    sim = make(name, backend=backend)
    a, b = np.asarray(sim.reset(3, 64)), np.asarray(sim.reset(3, 64))
    low, high = sim.init_bounds()
    assert a.shape == (64, sim.state_dim)
    assert np.all(a >= low - 1e-6) and np.all(a <= high + 1e-6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.asarray(sim.reset(4, 64)))


def test_cartpole_swingup_starts_hanging_per_the_literature():
    sim = make("cartpole", backend="numpy", poles=2)
    x = sim.reset(0, 1000)
    th = x[:, 1:3]
    assert th.min() >= math.pi - math.pi / 6 and th.max() <= math.pi + math.pi / 6
    assert np.all(x[:, 3] == 0.0) and np.abs(x[:, 0]).max() <= 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_cartpole_literature_preset_draws_the_published_initial_states(backend):
    """x, ẋ, θ̇_i ∈ U(−1, 1) and θ_i = π + U(−1, 1)·π/6 (shared/data/README.md, the published task)."""
    sim = make("cartpole", backend=backend, preset="literature", poles=3)
    x = np.asarray(sim.reset(0, 4000), dtype=np.float64)
    th, rest = x[:, 1:4], np.concatenate([x[:, :1], x[:, 4:]], 1)
    assert th.min() >= math.pi - math.pi / 6 - 1e-6 and th.max() <= math.pi + math.pi / 6 + 1e-6
    assert np.abs(rest).max() <= 1 + 1e-6 and np.abs(rest).max() > 0.99  # the whole of (−1, 1), ẋ included
    assert np.abs(x[:, 4]).mean() > 0.4 and np.abs(th - math.pi).max() > 0.99 * math.pi / 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_cartpole_raw_observation_is_the_state_object_by_object(backend):
    """observation='raw': (x, ẋ, θ_1, θ̇_1, …, θ_N, θ̇_N), the published code's policy input."""
    sim = make("cartpole", backend=backend, preset="literature", poles=3, observation="raw")
    x = sim.reset(1, 5)
    o, x = np.asarray(sim.obs(x)), np.asarray(x)
    assert sim.obs_dim == 8 and o.shape == (5, 8)
    expect = np.stack([x[:, 0], x[:, 4], x[:, 1], x[:, 5], x[:, 2], x[:, 6], x[:, 3], x[:, 7]], 1)
    np.testing.assert_array_equal(o, expect)
    assert make("cartpole", backend=backend, poles=3).obs_dim == 11  # sin/cos: 2 + 3N


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: make("cartpole", init="wide"), "unknown init 'wide'; choose one of \\('narrow', 'published'\\)"),
        (lambda: make("cartpole", observation="angles"), "unknown observation 'angles'; choose one of \\('sincos', 'raw'\\)"),
        (lambda: make("cartpole", preset="literature", task="balance"), "init='published' is the swing-up task's"),
        (lambda: make("cartpol"), "unknown simulator 'cartpol'; available: bounce, cartpole, diffrl_cartpole, neural, pointmass"),
        (lambda: make("cartpole", pols=2), "cartpole has no parameter 'pols'; its parameters:.*poles"),
        (lambda: make("cartpole", backend="tf"), "unknown backend 'tf'"),
        (lambda: make("cartpole", preset="paper"), "no preset 'paper'; available: \\['literature'\\]"),
        (lambda: make("pointmass", preset="literature"), "no preset 'literature'; available: none"),
        (lambda: make("cartpole", poles=0), "poles must be an integer ≥ 1"),
        (lambda: make("cartpole", task="hover"), "unknown task 'hover'"),
        (lambda: make("cartpole", dt=-0.1), "dt must be a positive number"),
        (lambda: make("pointmass", mass=0), "mass must be a positive number"),
        (lambda: make("pointmass", dims=2, target=(1, 2, 3)), "target has 3 entries but dims=2"),
        (lambda: make("neural", state=0), "state must be an integer ≥ 1"),
        (lambda: make("cartpole").reset(0, batch=0), "batch must be an integer ≥ 1"),
    ],
)
def test_bad_simulator_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_preset_parameters_can_be_overridden():
    sim = make("cartpole", preset="literature", poles=3, terminal=2.0)
    assert (sim.total_mass, sim.terminal, sim.poles, sim.angle, sim.init) == (1.1, 2.0, 3, 0.0, "published")
    assert make("cartpole", preset="literature", init="narrow").init == "narrow"
