"""The public surface: mirrored backends, weight transfer, jit/optimizer compatibility, Rollout fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gradstop as gs
from helpers import load, to_numpy
from sims import make

PACKAGE = Path(gs.__file__).parent


# Modules only one backend has: torch's compiled path (JAX is compiled by jax.jit, with no module of ours).
BACKEND_ONLY = {"jax": set(), "torch": {"compiled.py"}}


def test_backends_mirror_each_other_file_for_file_and_name_for_name():
    files = {b: sorted(p.name for p in (PACKAGE / b).glob("*.py") if p.name not in BACKEND_ONLY[b]) for b in ("jax", "torch")}
    assert files["jax"] == files["torch"]
    assert all((PACKAGE / b / name).exists() for b in BACKEND_ONLY for name in BACKEND_ONLY[b])
    assert sorted(gs.jax.__all__) == sorted(gs.torch.__all__)
    trainers = {b: sorted(p.name for p in (PACKAGE / "trainers" / b).glob("*.py")) for b in ("jax", "torch")}
    assert trainers["jax"] == trainers["torch"]


def test_framework_neutral_modules_import_neither_framework():
    neutral = list(PACKAGE.glob("*.py")) + list((PACKAGE / "trainers").glob("*.py")) + list((PACKAGE.parent / "sims").glob("*.py"))
    for path in neutral:
        lines = [line.strip() for line in path.read_text().splitlines() if line.startswith(("import ", "from "))]
        top_level = [line for line in lines if line.split()[1].split(".")[0] in ("jax", "torch", "equinox", "optax")]
        assert not top_level, f"{path.name} imports a framework at module level: {top_level}"


def test_weights_round_trip_between_frameworks_and_outputs_agree():
    import jax.numpy as jnp
    import torch

    sim = make("cartpole", poles=2)
    pj = gs.jax.mlp(3, sim.obs_dim, sim.action_dim, hidden=(32, 16), dtype=jnp.float64)
    pt = gs.copy_weights(pj, gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(32, 16), dtype=torch.float64))
    obs = np.random.default_rng(0).normal(size=(5, sim.obs_dim))
    np.testing.assert_allclose(pt(torch.as_tensor(obs)).detach().numpy(), np.asarray(pj(jnp.asarray(obs))), rtol=1e-12)
    back = gs.copy_weights(pt, gs.jax.mlp(9, sim.obs_dim, sim.action_dim, hidden=(32, 16), dtype=jnp.float64))
    for a, b in zip(gs.get_weights(back), gs.get_weights(pj)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_rollout_fields_have_the_documented_shapes(backend):
    sim, policy, x0 = load(backend, "cartpole")
    out = gs.rollout(policy, sim, stop="input", horizon=6, x0=x0)
    assert tuple(out.states.shape) == (7, 2, sim.state_dim)
    assert tuple(out.actions.shape) == (6, 2, sim.action_dim)
    assert tuple(out.costs.shape) == (6, 2) and tuple(out.terminal.shape) == (2,)
    np.testing.assert_allclose(to_numpy(out.states[0]), to_numpy(x0))
    expected = (to_numpy(out.costs).sum(0) + to_numpy(out.terminal)).mean()
    assert abs(float(to_numpy(out.loss)) - expected) < 1e-12


def test_jax_rollout_jits_and_samples_with_a_key():
    import jax

    sim = make("pointmass")
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim)
    f = jax.jit(lambda p, k: gs.rollout(p, sim, stop="input+decay:0.9", horizon=5, key=k, batch=3).loss)
    a, b = f(policy, jax.random.key(1)), f(policy, jax.random.key(1))
    assert a == b and a != f(policy, jax.random.key(2))
    assert gs.rollout(policy, sim, horizon=5, key=7, batch=3).states.shape == (6, 3, 6)


def test_torch_rollout_drives_any_optimizer_and_no_grad_works():
    import torch

    sim = make("pointmass", backend="torch")
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, seed=0)
    opt = torch.optim.SGD(policy.parameters(), lr=1e-3)
    x0 = sim.reset(0, 8)
    before = float(to_numpy(gs.rollout(policy, sim, horizon=10, x0=x0).loss))
    for stop in ("combined", "input", "directional"):
        opt.zero_grad()
        gs.rollout(policy, sim, stop=stop, horizon=10, x0=x0).loss.backward()
        opt.step()
    assert float(to_numpy(gs.rollout(policy, sim, horizon=10, x0=x0).loss)) < before
    with torch.no_grad():
        out = gs.rollout(policy, sim, stop="combined", horizon=4, x0=x0)
    assert not out.loss.requires_grad


def test_torch_seeded_mlp_is_reproducible_and_leaves_global_rng_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = gs.torch.mlp(4, 2, seed=5)
    after = torch.rand(3)
    b = gs.torch.mlp(4, 2, seed=5)
    assert torch.equal(expected, after)
    for x, y in zip(gs.get_weights(a), gs.get_weights(b)):
        np.testing.assert_array_equal(x, y)
