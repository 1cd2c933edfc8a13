"""DiffRL's cartpole swing-up (sims/diffrl_cartpole.py): the published values, the physics against an independent
reference built from the URDF's geometry, the reward, the three backends, and the derivatives."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradstop as gs
import sims
from sims import make

BACKENDS = ["jax", "torch", "numpy"]
ENV = "NVlabs/DiffRL@6b8d695 envs/cartpole_swing_up.py"
YAML = "NVlabs/DiffRL@6b8d695 examples/cfg/shac/cartpole_swing_up.yaml"
URDF = "NVlabs/DiffRL@fb0e1e1 dflex/dflex/envs/assets/cartpole.urdf"  # the store lacks envs/assets/cartpole.urdf
MODEL = "NVlabs/DiffRL@6b8d695 dflex/dflex/model.py"
SIM = "NVlabs/DiffRL@6b8d695 dflex/dflex/sim.py"
LOAD = "NVlabs/DiffRL@6b8d695 utils/load_utils.py"

# Every parameter of the preset, the value the published code runs with, and where it comes from
# (docs/simulators.md, "DiffRL's cartpole", has the same table with line numbers).
PUBLISHED = [
    ("dt", 1 / 60, f"{ENV}:70 self.dt = 1/60, the env's sim_dt per step"),
    ("substeps", 4, f"{ENV}:71 sim_substeps = 4; {SIM} SemiImplicitIntegrator.forward: dt/substeps each"),
    ("mass_matrix_every", 4, f"{YAML}:6 MM_caching_frequency: 4; {SIM} forward: update_mass_matrix=(i % freq == 0)"),
    ("gravity", 9.81, f"{ENV}:94 model.gravity = (0, -9.81, 0)"),
    ("cart_mass", 1000 * 0.5 * 0.5 * 0.2, f"{URDF}:32 collision box 0.5×0.5×0.2; {MODEL} add_shape_box density=1000 "
                                          f"(urdf_load in {LOAD} reads collisions, never <inertial>)"),
    ("pole_mass", 1000 * 0.05 * 0.05 * 1.0, f"{URDF}:67 collision box 0.05×0.05×1.0, density 1000"),
    ("pole_com", 0.5, f"{URDF}:69 collision origin xyz='0 0 0.5'"),
    ("pole_inertia", 2.5 * (0.05**2 + 1.0**2) / 12, f"{MODEL} compute_box_inertia: m(w² + d²)/12 about the hinge axis y"),
    ("armature", 0.01, f"{MODEL} add_link(armature=0.01), which {LOAD} urdf_load does not pass; {SIM} dense_chol adds it"),
    ("damping", 1.0, f"{ENV}:89 limit_kd=1.; {SIM} jcalc_tau: damping_f = -limit_k_d·qd outside the limit test"),
    ("limit", 4.0, f"{URDF}:47 slider_to_cart limit lower=-4 upper=4"),
    ("limit_stiffness", 100.0, f"{LOAD} urdf_load(limit_ke=100.0), not overridden by the env"),
    ("force_scale", 1000.0, f"{ENV}:45 action_strength = 1000."),
    ("squash", "clip", f"{ENV}:117 torch.clip(actions, -1., 1.) (SHAC's tanh before it, algorithms/shac.py "
                       "compute_actor_loss: env.step(torch.tanh(actions)), is gradstop's --action-squash tanh)"),
    ("angle", 1.0, f"{ENV}:48 pole_angle_penalty"),
    ("angle_velocity", 0.1, f"{ENV}:49 pole_velocity_penalty"),
    ("cart", 0.05, f"{ENV}:51 cart_position_penalty"),
    ("cart_velocity", 0.1, f"{ENV}:52 cart_velocity_penalty"),
    ("effort", 0.0, f"{ENV}:54 cart_action_penalty"),
    ("init", "published", f"{YAML}:4 stochastic_env: True -> the env's stochastic_init ({ENV}:167-174)"),
]


def to_backend(backend, array):
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    if backend == "torch":
        import torch

        return torch.as_tensor(array)
    return np.asarray(array)


@pytest.mark.parametrize("field,value,source", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_the_defaults_are_the_published_values(field, value, source):
    sim = make("diffrl_cartpole", backend="numpy")
    got = getattr(sim, field)
    assert (got == value) if isinstance(value, str) else math.isclose(got, value, rel_tol=1e-15), f"{field}: {source}"


def test_every_parameter_has_its_source_in_the_table():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(sims.DiffRLCartPole)} - {"backend"}
    assert fields == {p[0] for p in PUBLISHED}


# -- an independent reference: the Lagrangian of the URDF's two bodies, differentiated numerically -----------------
ROOT_P = np.array([0.0, 2.5, 0.0])  # the env's urdf_load transform: (0, 2.5, 0), rotated −π/2 about x (z up -> y up)
GRAVITY = np.array([0.0, -9.81, 0.0])


def _rot(axis, a):
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.result_type(a, float))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.result_type(a, float))


def _box_inertia(m, w, h, d):
    return m / 12 * np.diag([h * h + d * d, w * w + d * d, w * w + h * h])


BODIES = [(50.0, _box_inertia(50.0, 0.5, 0.5, 0.2)), (2.5, _box_inertia(2.5, 0.05, 0.05, 1.0))]


def _frames(q):
    """World centre-of-mass positions and orientations of the cart and the pole (prismatic x, then revolute y)."""
    R0 = _rot("x", -math.pi / 2)
    p_cart = ROOT_P + R0 @ np.array([q[0], 0 * q[0], 0 * q[0]])
    R_pole = R0 @ _rot("y", q[1])
    return [(p_cart, R0 + 0 * q[0]), (p_cart + R_pole @ np.array([0.0, 0.0, 0.5]), R_pole)]


def _kinetic(q, qd):
    h = 1e-20  # complex step: exact body velocities along qd
    moved = _frames(q + 1j * h * qd)
    T = 0.0
    for (m, I), (p, R), (pc, Rc) in zip(BODIES, _frames(q), moved):
        v = pc.imag / h
        W = (Rc.imag / h) @ R.T  # skew(ω) = Ṙ Rᵀ
        w = np.array([W[2, 1], W[0, 2], W[1, 0]])
        T += 0.5 * m * v @ v + 0.5 * w @ (R @ I @ R.T) @ w
    return T


def _potential(q):
    return -sum(m * GRAVITY @ p for (m, _), (p, _) in zip(BODIES, _frames(q)))


def _mass_matrix(q):
    e = np.eye(2)
    H = np.empty((2, 2))
    for i in range(2):
        H[i, i] = 2 * _kinetic(q, e[i])
    H[0, 1] = H[1, 0] = _kinetic(q, e[0] + e[1]) - 0.5 * (H[0, 0] + H[1, 1])
    return H


def _generalized_force(q, qd, force, sim):
    """Right-hand side of H q̈ = τ: applied forces (F, limit, damping) + ∂T/∂q − Ḣ q̇ − ∂V/∂q."""
    eps, e = 1e-5, np.eye(2)
    dT = np.array([(_kinetic(q + eps * e[k], qd) - _kinetic(q - eps * e[k], qd)) / (2 * eps) for k in range(2)])
    dV = np.array([(_potential(q + eps * e[k]) - _potential(q - eps * e[k])) / (2 * eps) for k in range(2)])
    Hdot = (_mass_matrix(q + eps * qd) - _mass_matrix(q - eps * qd)) / (2 * eps)
    limit = sim.limit_stiffness * ((-sim.limit - q[0]) * (q[0] < -sim.limit) + (sim.limit - q[0]) * (q[0] > sim.limit))
    applied = np.array([force + limit, 0.0]) - sim.damping * qd
    return applied + dT - Hdot @ qd - dV


def _reference_step(sim, state, a):
    """One step as dflex takes it: substeps of semi-implicit Euler, H (plus armature) formed every mass_matrix_every."""
    q, qd = state[:2].astype(float), state[2:].astype(float)
    force = sim.force_scale * (np.tanh(a) if sim.squash == "tanh" else np.clip(a, -1.0, 1.0))
    h = sim.dt / sim.substeps
    for i in range(sim.substeps):
        if i % sim.mass_matrix_every == 0:
            H = _mass_matrix(q) + sim.armature * np.eye(2)
        qd = qd + h * np.linalg.solve(H, _generalized_force(q, qd, force, sim))
        q = q + h * qd
    return np.concatenate([q, qd])


@pytest.mark.parametrize("params", [dict(substeps=1, mass_matrix_every=1), dict(), dict(squash="tanh")],
                         ids=["one-substep", "published", "tanh"])
def test_the_dynamics_are_the_urdf_bodies_lagrangian(params):
    """Steps from random states (some past the cart's limit) equal the reference's, to 1e-9."""
    sim = make("diffrl_cartpole", backend="numpy", **params)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-5, 5, (6, 1)), rng.uniform(-4, 4, (6, 1)), rng.normal(0, 2, (6, 2))], 1)
    x[0, 0], x[1, 0] = 4.5, -4.3  # past the cart's limits: the limit spring is in the test
    a = rng.normal(size=(6, 1))
    got = sim.step(x, a)
    expect = np.stack([_reference_step(sim, x[b], a[b, 0]) for b in range(6)])
    np.testing.assert_allclose(got, expect, rtol=1e-9, atol=1e-9)


def test_a_cached_mass_matrix_is_what_the_published_config_integrates():
    sim, fresh = make("diffrl_cartpole", backend="numpy"), make("diffrl_cartpole", backend="numpy", mass_matrix_every=1)
    x, a = np.array([[0.0, -2.0, 1.0, 6.0]]), np.array([[0.7]])
    assert np.abs(sim.step(x, a) - fresh.step(x, a)).max() > 1e-5  # the caching changes the numbers
    np.testing.assert_allclose(sim.step(x, a)[0], _reference_step(sim, x[0], 0.7), rtol=1e-9, atol=1e-9)


def test_hanging_and_upright_at_rest_are_equilibria():
    sim = make("diffrl_cartpole", backend="numpy")
    for th in (-math.pi, 0.0):
        x = np.array([[0.0, th, 0.0, 0.0]])
        for _ in range(60):
            x = sim.step(x, np.zeros((1, 1)))
        np.testing.assert_allclose(x, [[0.0, th, 0.0, 0.0]], atol=1e-12)


# -- the task ---------------------------------------------------------------------------------------------------
# (x, θ, ẋ, θ̇) and the published reward −(wrap(θ)² + 0.1·θ̇² + 0.05·x² + 0.1·ẋ²), computed by hand.
REWARDS = [
    ((0.0, -math.pi, 0.0, 0.0), -math.pi**2),  # the published start: hanging, wrap(−π) = −π
    ((1.0, 0.0, 0.0, 0.0), -0.05),
    ((0.5, 2 * math.pi + 0.3, -1.0, 2.0), -(0.09 + 0.4 + 0.0125 + 0.1)),  # one turn on: the angle is wrapped
    ((-2.0, -math.pi / 2, 0.5, -0.3), -(math.pi**2 / 4 + 0.009 + 0.2 + 0.025)),
    ((0.0, 5 * math.pi / 4, 0.0, 0.0), -(3 * math.pi / 4) ** 2),  # wraps to −3π/4
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reward_and_cost_are_the_published_formula(backend):
    sim = make("diffrl_cartpole", backend=backend)
    x = to_backend(backend, np.array([s for s, _ in REWARDS]))
    expect = np.array([r for _, r in REWARDS])
    np.testing.assert_allclose(np.asarray(sim.reward(x)), expect, rtol=1e-12, atol=1e-12)
    a = to_backend(backend, np.full((len(REWARDS), 1), 0.8))
    np.testing.assert_allclose(np.asarray(sim.cost(x, a)), -expect, rtol=1e-12, atol=1e-12)  # action weight 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_observation_is_the_published_vector(backend):
    sim = make("diffrl_cartpole", backend=backend)
    x = np.array([[0.3, 1.2, -0.4, 2.5]])
    o = np.asarray(sim.obs(to_backend(backend, x)))
    np.testing.assert_allclose(o, [[0.3, -0.4, math.sin(1.2), math.cos(1.2), 2.5]], atol=1e-15)


def test_the_action_is_clipped_as_the_env_does_or_squashed_as_shac_feeds_it():
    x, a = np.zeros((1, 4)), np.array([[3.0], [0.4]])
    clip, tanh = make("diffrl_cartpole", backend="numpy"), make("diffrl_cartpole", backend="numpy", squash="tanh")
    np.testing.assert_allclose(clip.control(a), [1.0, 0.4])
    np.testing.assert_allclose(tanh.control(a), np.tanh([3.0, 0.4]))
    np.testing.assert_allclose(clip.step(x[[0]], a[[0]]), clip.step(x[[0]], np.array([[1.0]])), atol=0)
    np.testing.assert_allclose(tanh.step(x[[0]], a[[1]]), clip.step(x[[0]], np.tanh(a[[1]])), atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_draws_the_stochastic_init(backend):
    """x ∈ U(−π/2, π/2), θ ∈ −π + U(−π/2, π/2), ẋ, θ̇ ∈ U(−0.25, 0.25) (π·(U − ½) and ½·(U − ½) in the env)."""
    sim = make("diffrl_cartpole", backend=backend)
    x = np.asarray(sim.reset(0, 4000), dtype=np.float64)
    half = np.array([math.pi / 2, math.pi / 2, 0.25, 0.25])
    centred = x - np.array([0.0, -math.pi, 0.0, 0.0])
    assert np.all(np.abs(centred) <= half + 1e-6) and np.all(np.abs(centred).max(0) > 0.99 * half)
    fixed = np.asarray(make("diffrl_cartpole", backend=backend, init="fixed").reset(0, 3))
    np.testing.assert_allclose(fixed, np.tile([0.0, -math.pi, 0.0, 0.0], (3, 1)), atol=1e-6)


def test_success_is_within_12_degrees_of_upright():
    sim = make("diffrl_cartpole", backend="numpy")
    x = np.array([[0.0, math.radians(11), 0, 0], [0.0, 2 * math.pi - math.radians(11), 0, 0], [0.0, math.radians(13), 0, 0]])
    np.testing.assert_array_equal(sim.success(x), [1.0, 1.0, 0.0])


# -- backends and derivatives -----------------------------------------------------------------------------------
def test_backends_simulate_identically_over_an_episode():
    """240 steps (one published episode) from the same states with the same actions: equal states, obs, costs."""
    ref = make("diffrl_cartpole", backend="numpy")
    rng = np.random.default_rng(0)
    x0, actions = ref.reset(rng, 4), rng.normal(size=(240, 4, 1))
    traces = {}
    for backend in BACKENDS:
        sim = make("diffrl_cartpole", backend=backend)
        step = sim.step
        if backend == "jax":
            import jax

            step = jax.jit(sim.step)
        x, trace = to_backend(backend, x0), []
        for a in actions:
            a = to_backend(backend, a)
            x_next = step(x, a)
            trace.append(np.concatenate([np.asarray(x_next), np.asarray(sim.obs(x)), np.asarray(sim.cost(x_next, a))[:, None]], -1))
            x = x_next
        traces[backend] = np.stack(trace)
    assert np.all(np.isfinite(traces["numpy"])) and np.abs(traces["numpy"][:, :, 0]).max() > 0.5  # it moved
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(traces[backend], traces["numpy"], rtol=1e-9, atol=1e-9, err_msg=backend)


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])  # JAX: compiles
def test_the_gradient_check_passes(backend):
    report = gs.check_gradients(make("diffrl_cartpole", backend=backend), flows=("none", "input"), horizon=4, warmup=3)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(substeps=0), "substeps must be an integer ≥ 1"),
        (dict(mass_matrix_every=1.5), "mass_matrix_every must be an integer ≥ 1"),
        (dict(squash="sigmoid"), "unknown squash 'sigmoid'"),
        (dict(init="wide"), "unknown init 'wide'"),
        (dict(pole_mass=0.0), "pole_mass must be a positive number"),
        (dict(damping=-1.0), "damping must be a number ≥ 0"),
    ],
)
def test_bad_parameters_name_the_problem(params, match):
    with pytest.raises(ValueError, match=match):
        make("diffrl_cartpole", **params)
