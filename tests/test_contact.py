"""The contact tasks (sims/contact.py): JAX/torch parity through impacts, the physics of a bounce,
derivatives where they exist, parameter checks, and policy rollouts."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradstop as gs
import sims
from sims.contact import Bounce

CONTACTS = ["hard", "soft"]
FLOWS = ("none", "input")  # the simulator's blocks are checked whatever the flows; two keep JAX's compiles few
X0 = np.array([[0.0, 1.0, 2.75, 0.0], [0.03, 0.96, 2.6, 0.08]])  # in the start box, heading for the wall


def to_backend(backend, array, dtype="float64"):
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array, dtype=getattr(jnp, dtype))
    if backend == "torch":
        import torch

        return torch.as_tensor(array, dtype=getattr(torch, dtype))
    return np.asarray(array, dtype=dtype)


def simulate(sim, x0, actions, dtype="float64"):
    """(H+1, B, 4) states and (H, B) running costs, and the (B,) terminal cost, as float64 NumPy."""
    x = to_backend(sim.backend, x0, dtype)
    states, costs = [np.asarray(x, dtype=np.float64)], []
    for a in actions:
        a = to_backend(sim.backend, a, dtype)
        x = sim.step(x, a)
        states.append(np.asarray(x, dtype=np.float64))
        costs.append(np.asarray(sim.cost(x, a), dtype=np.float64))
    return np.stack(states), np.stack(costs), np.asarray(sim.terminal_cost(x), dtype=np.float64), x


# -- the registry ---------------------------------------------------------------------------------
def test_bounce_is_a_built_in_with_both_contacts():
    assert "bounce" in sims.BUILTINS and "bounce" in sims.names()
    for contact in CONTACTS:
        sim = sims.make("bounce", backend="torch", contact=contact)
        assert type(sim) is Bounce and sim.contact == contact and sim.name == "bounce"
        assert (sim.state_dim, sim.obs_dim, sim.action_dim) == (4, 4, 2)
        assert sim.describe()["contact"] == contact and sim.describe()["target"] == [0.0, 0.5]


# -- parity: the same physics in JAX and torch ----------------------------------------------------
@pytest.mark.parametrize("contact", CONTACTS)
def test_jax_and_torch_give_identical_trajectories_through_impacts(contact):
    actions = 0.5 * np.random.default_rng(1).normal(size=(30, 2, 2))
    runs = {b: simulate(sims.make("bounce", backend=b, contact=contact), X0, actions) for b in ("jax", "torch", "numpy")}
    states, costs, terminal, _ = runs["torch"]
    # the trajectory hits the wall (vx turns negative) and the floor (vy turns from negative to positive)
    assert np.all(states[0, :, 2] > 0) and np.all(states[-1, :, 2] < 0), "no wall bounce"
    assert np.all(((states[:-1, :, 3] < 0) & (states[1:, :, 3] > 0)).any(0)), "no floor bounce"
    assert np.all(states[:, :, 0] <= 0.5 + 0.1) and np.all(np.isfinite(states))
    for backend in ("jax", "numpy"):
        other = runs[backend]
        for got, want, what in zip(other[:3], runs["torch"][:3], ("states", "costs", "terminal cost")):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"{backend} vs torch: {what}")


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("contact", CONTACTS)
def test_float32_keeps_its_dtype_and_follows_float64(backend, contact):
    sim = sims.make("bounce", backend=backend, contact=contact)
    actions = 0.5 * np.random.default_rng(2).normal(size=(12, 2, 2))
    s32, _, _, x32 = simulate(sim, X0, actions, "float32")
    s64, *_ = simulate(sim, X0, actions, "float64")
    assert str(x32.dtype).endswith("float32")
    np.testing.assert_allclose(s32, s64, atol=2e-3)


# -- physics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("contact", CONTACTS)
def test_an_elastic_ball_without_force_bounces_back_to_its_height(contact):
    sim = sims.make("bounce", backend="torch", contact=contact, restitution=1.0, wall_x=5.0)
    states, *_ = simulate(sim, [[0.0, 1.0, 0.0, 0.0]], np.zeros((30, 1, 2)))  # 1.5 s: down in 0.45 s, up again by 0.9 s
    y, vy = states[:, 0, 1], states[:, 0, 3]
    bounce = int(np.argmax((vy[:-1] < 0) & (vy[1:] > 0))) + 1
    assert 5 <= bounce <= 12 and y[:bounce].min() < 0.25, "no floor bounce"
    peak = y[bounce:].max()
    assert abs(peak - 1.0) < 0.03, f"rebound height {peak:.4f}, not the drop height 1"
    energy = 0.5 * vy**2 + sim.gravity * y
    free = y > 0.05  # out of contact (the soft spring holds energy while compressed)
    # semi-implicit Euler's energy error is first order in the substep h: g²·h·t/2 ≤ 0.37 over the 1.5 s
    assert free[bounce:].sum() > 10 and np.abs(energy[free] - energy[0]).max() < 0.04 * energy[0]


@pytest.mark.parametrize("restitution", [0.5, 0.8, 1.0])
@pytest.mark.parametrize("contact", CONTACTS)
def test_the_rebound_speed_is_restitution_times_the_impact_speed(contact, restitution):
    """No gravity, no force: the ball meets the floor at 4 m/s and leaves at e·4 m/s (the soft contact's damping is set
    from e); likewise the wall."""
    stiff = dict(stiffness=2e4, substeps=150) if contact == "soft" else {}
    sim = sims.make("bounce", backend="torch", contact=contact, restitution=restitution, gravity=0.0, **stiff)
    states, *_ = simulate(sim, [[0.21, 0.29, 4.0, -4.0]], np.zeros((4, 1, 2)))  # 0.2 s: both impacts at 0.0725 s
    vx, vy = states[-1, 0, 2], states[-1, 0, 3]
    tol = 1e-12 if contact == "hard" else 0.01
    assert abs(vy - restitution * 4.0) <= tol * 4 and abs(vx + restitution * 4.0) <= tol * 4, (vx, vy)
    if contact == "hard":  # the impact in the middle of a substep: the rest of it is travelled at the rebound speed
        assert abs(states[-1, 0, 1] - restitution * 4.0 * (0.2 - 0.0725)) < 1e-12
        assert abs(states[-1, 0, 0] - (0.5 - restitution * 4.0 * (0.2 - 0.0725))) < 1e-12


def test_a_stiffer_soft_contact_penetrates_less():
    depths = []
    for k in (2e3, 2e4, 2e5):
        n = int(50 * math.sqrt(k / 2e3))  # steps of 4 ms / n, one substep each: the states of every substep
        sim = sims.make("bounce", backend="numpy", contact="soft", stiffness=k, dt=0.004 / n, substeps=1, gravity=0.0,
                        wall_x=5.0)
        states, *_ = simulate(sim, [[0.0, 0.3, 0.0, -4.0]], np.zeros((50 * n, 1, 2)))  # 0.2 s: the impact at 0.075 s
        depths.append(-states[:, 0, 1].min())
        assert states[-1, 0, 3] > 3.0  # it rebounded
    assert 0.06 < depths[0] < 0.12  # about v·√(m/k) = 0.089
    assert depths[0] > 2.5 * depths[1] > 2.5**2 * depths[2] > 0  # ∝ 1/√k: √10 ≈ 3.2 per decade


# -- derivatives ----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])  # JAX: ~30 s of compiles
def test_the_soft_contact_passes_the_gradient_check_in_contact(backend):
    sim = sims.make("bounce", backend=backend, contact="soft")
    # at warmup 3 the ball is at the wall (px ≈ 0.41–0.5): the check's states are in contact or about to be
    report = gs.check_gradients(sim, flows=FLOWS, horizon=4, warmup=3)
    assert report.passed, str(report)


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_the_hard_contact_passes_the_gradient_check_before_any_impact(backend):
    sim = sims.make("bounce", backend=backend, wall_x=3.0)
    # the worst case of the check's 1 + 4 steps (start box, full force down and right) hits neither the floor nor the wall
    worst = sims.make("bounce", backend="numpy", wall_x=3.0)
    x = np.array([[0.05, 0.95, 3.0, -0.1]])
    for _ in range(5):
        x = worst.step(x, np.array([[50.0, -50.0]]))
        assert x[0, 1] > 0.2 and x[0, 0] < 2.0 and x[0, 3] < 0 and x[0, 2] > 0
    report = gs.check_gradients(sim, flows=FLOWS, horizon=4, warmup=1)
    assert report.passed, str(report)


def test_the_hard_impacts_pathwise_gradient_misses_the_impact_time():
    """The known bias (Suh et al. 2022; DiffTaichi's time-of-impact): dropped from y0 = 1, the ball's height at
    T = 0.7 s, after one bounce, has the pathwise derivative −e (the reflection's, with the impact's substep held
    fixed) for every y0, while the height itself rises with y0 (continuous time: +0.19): a finite difference across
    many impact substeps sees it, autodiff never does."""
    import torch

    e, g, T = 0.8, 9.81, 0.7
    sim = sims.make("bounce", backend="torch", restitution=e, wall_x=5.0)

    def height(y0):
        zero = torch.zeros_like(y0)
        x = torch.stack([zero, y0, zero, zero], -1)[None]
        for _ in range(14):
            x = sim.step(x, torch.zeros(1, 2, dtype=torch.float64))
        return x[0, 1]

    y0 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    pathwise = float(torch.autograd.grad(height(y0), y0)[0])
    assert abs(pathwise + e) < 1e-12
    t_impact, v_impact = math.sqrt(2 / g), math.sqrt(2 * g)
    tau = T - t_impact
    exact = e * g / v_impact * tau - e * v_impact / (g * t_impact) + tau / t_impact  # d y(T) / d y0 in continuous time
    with torch.no_grad():
        for eps in (0.05, 0.1):
            spread = float((height(y0 + eps) - height(y0 - eps)) / (2 * eps))
            assert spread > 0 and abs(spread - exact) < 0.15, (eps, spread, exact)


# -- parameters -----------------------------------------------------------------------------------
@pytest.mark.parametrize("params,match", [
    (dict(restitution=1.5), r"bounce: restitution must be in \[0, 1\]"),
    (dict(restitution=-0.1), r"bounce: restitution must be a number ≥ 0"),
    (dict(stiffness=-1.0), r"bounce: stiffness must be a positive number"),
    (dict(contact="soft", stiffness=0.0), r"bounce: stiffness must be a positive number"),
    (dict(dt=math.inf), r"bounce: dt must be a positive number"),
    (dict(mass=0.0), r"bounce: mass must be a positive number"),
    (dict(gravity=math.nan), r"bounce: gravity must be a number ≥ 0"),
    (dict(force_scale=-5.0), r"bounce: force_scale must be a positive number"),
    (dict(contact="sticky"), r"bounce: unknown contact 'sticky'; choose one of \('hard', 'soft'\)"),
    (dict(substeps=0), r"bounce: substeps must be an integer ≥ 1"),
    (dict(wall_x=0.0), r"bounce: wall_x must be a positive number"),
    (dict(wall_x=0.04), r"bounce: wall_x must be right of the start box"),
    (dict(target=(1.0,)), r"bounce: target must be two finite numbers"),
    (dict(target=(0.0, math.inf)), r"bounce: target must be two finite numbers"),
    (dict(target=(1.0, 0.5)), r"bounce: target \(1.0, 0.5\) must be left of the wall"),
    (dict(stifness=1.0), r"bounce has no parameter 'stifness'; its parameters:.*stiffness"),
])
def test_a_bad_parameter_is_named(params, match):
    with pytest.raises(ValueError, match=match):
        sims.make("bounce", **params)


# -- policies -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("contact", CONTACTS)
def test_a_policy_rollout_gives_a_finite_loss_and_gradient(backend, contact):
    sim = sims.make("bounce", backend=backend, contact=contact)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(16, 16), dtype=jnp.float64)
        out = gs.rollout(policy, sim, stop="none", horizon=20, key=0, batch=4)
        grads = jax.grad(lambda p: gs.rollout(p, sim, stop="none", horizon=20, key=0, batch=4).loss)(policy)
        grad = np.concatenate([np.ravel(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads)])
    else:
        import torch

        policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(16, 16), dtype=torch.float64)
        out = gs.rollout(policy, sim, stop="none", horizon=20, key=0, batch=4)
        out.loss.backward()
        grad = np.concatenate([p.grad.detach().numpy().ravel() for p in policy.parameters()])
    loss = float(out.loss.detach()) if backend == "torch" else float(out.loss)
    assert np.isfinite(loss) and loss > 0
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    success = np.asarray(sim.success(sim.reset(0, 4)))
    assert success.shape == (4,) and set(success.tolist()) <= {0.0, 1.0}
