"""SHAC: TD(λ) targets against the λ-return by hand, the actor's window, learning, JAX/torch agreement, resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from gradstop.trainers import NonFiniteError, TrainConfig, train
from gradstop.trainers.config import ALGO_DEFAULTS
from gradstop.trainers.shac import Window, td_lambda
from sims import make

BACKENDS = ["jax", "torch"]


def lambda_return(costs, next_values, gamma, lam):
    """The λ-return by its definition: a (1−λ)λ^{n−1}-weighted mix of n-step returns, the last taking the rest."""
    h = len(costs)
    out = []
    for i in range(h):
        def n_step(n):
            return sum(gamma ** k * costs[i + k] for k in range(n)) + gamma ** n * next_values[i + n - 1]
        m = h - i
        out.append((1 - lam) * sum(lam ** (n - 1) * n_step(n) for n in range(1, m)) + lam ** (m - 1) * n_step(m))
    return np.asarray(out)


def test_td_lambda_targets_equal_the_lambda_return_computed_by_hand():
    # h = 3, one environment: every weight written out
    c, v, g, lam = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0], 0.9, 0.5
    g1 = [c[0] + g * v[0], c[1] + g * v[1], c[2] + g * v[2]]
    g2 = [c[0] + g * c[1] + g * g * v[1], c[1] + g * c[2] + g * g * v[2]]
    g3 = c[0] + g * c[1] + g * g * c[2] + g ** 3 * v[2]
    by_hand = [(1 - lam) * g1[0] + (1 - lam) * lam * g2[0] + lam ** 2 * g3, (1 - lam) * g1[1] + lam * g2[1], g1[2]]
    np.testing.assert_allclose(td_lambda(np.asarray(c), np.asarray(v), g, lam), by_hand, rtol=1e-14)
    # random windows, several environments: the recursion is the definition
    rng = np.random.default_rng(0)
    costs, values = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    np.testing.assert_allclose(np.stack(td_lambda(costs, values, 0.99, 0.95)), lambda_return(costs, values, 0.99, 0.95), rtol=1e-12)
    # λ = 0 is one-step TD
    np.testing.assert_allclose(np.stack(td_lambda(costs, values, 0.9, 0.0)), costs + 0.9 * values, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_window_sim_gives_the_discounted_value_terminated_loss(backend):
    import gradstop as gs

    sim = make("pointmass", backend=backend, dims=1)
    value = lambda obs: (obs ** 2).sum(-1) * 0.5 + 1.0  # noqa: E731
    window = Window(sim, value, gamma=0.9, window=4)
    policy = gs.jax.mlp(0, sim.obs_dim, 1, hidden=(4,)) if backend == "jax" else gs.torch.mlp(sim.obs_dim, 1, hidden=(4,), seed=0)
    x = sim.reset(0, 3)
    if backend == "jax":
        import jax.numpy as xp
    else:
        import torch as xp
    ends = xp.asarray([0.0, 1.0, 0.0], dtype=x.dtype)
    out = gs.rollout(policy, window, horizon=4, x0=window.wrap(x, ends))
    plain = gs.rollout(policy, sim, horizon=4, x0=x)
    to_np = lambda a: np.asarray(a.detach()) if backend == "torch" else np.asarray(a)  # noqa: E731
    costs, xs = to_np(plain.costs), to_np(plain.states)
    end = np.where(to_np(ends) > 0, to_np(sim.terminal_cost(plain.states[-1])), to_np(value(sim.obs(plain.states[-1]))))
    expected = ((0.9 ** np.arange(4))[:, None] * costs).sum(0) + 0.9 ** 4 * end
    np.testing.assert_allclose(float(to_np(out.loss)), expected.mean() / 4, rtol=1e-5)
    np.testing.assert_allclose(to_np(out.states)[..., :2], xs, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shac_with_its_published_actor_lowers_the_test_loss(backend):
    """The published defaults (Gaussian actor with LayerNorm, tanh-bounded actions, normalised observations) learn."""
    cfg = TrainConfig.for_algo("shac", sim="pointmass", sim_params={"dims": 2}, backend=backend, flow="none", horizon=48,
                               window=16, batch=16, epochs=3, updates_per_epoch=6, hidden=(32,), critic_hidden=(32,),
                               critic_iterations=4, test_size=32, lr=3e-3)
    assert cfg.policy == "gaussian" and cfg.obs_norm and cfg.action_squash == "tanh"
    test = [e["test_loss"] for e in train(cfg).evals]
    assert test[-1] < 0.6 * test[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", ["none", "input", "combined"])
def test_shac_lowers_the_test_loss(backend, flow):
    # gradstop's earlier actor (deterministic, unbounded, raw observations): with the published one (Gaussian,
    # tanh-bounded, normalised observations) pointmass's test loss falls to about a third in these 3 epochs, not a fifth
    earlier_actor = dict(policy="deterministic", actor_layer_norm=False, action_squash="none", obs_norm=False)
    cfg = TrainConfig.for_algo("shac", sim="pointmass", sim_params={"dims": 2}, backend=backend, flow=flow, horizon=48,
                               window=16, batch=16, epochs=3, updates_per_epoch=6, hidden=(32,), critic_hidden=(32,),
                               critic_iterations=4, test_size=32, lr=3e-3, **earlier_actor)
    result = train(cfg)
    test = [e["test_loss"] for e in result.evals]
    assert test[-1] < 0.2 * test[0]
    critic = np.asarray([float(u["critic_loss"]) for u in result.updates])
    assert np.isfinite(critic).all() and critic[-6:].mean() < critic[:6].mean()


@pytest.mark.parametrize("flow", ["none", "combined", "input+decay:0.8"])
def test_jax_and_torch_shac_take_the_same_steps_in_float64(flow):
    # float64: tests/conftest.py enables JAX's 64-bit mode
    runs = []
    for backend in BACKENDS:
        cfg = TrainConfig.for_algo("shac", sim="cartpole", sim_params={"poles": 1}, backend=backend, flow=flow, horizon=16,
                                   window=8, batch=8, epochs=2, updates_per_epoch=3, hidden=(16,), critic_hidden=(16,),
                                   critic_iterations=2, critic_minibatches=2, dtype="float64", test_size=8)
        result = train(cfg)
        runs.append(np.asarray([[float(u[k]) for k in ("loss", "grad_norm", "grad_norm_clipped", "lr", "critic_loss")]
                                for u in result.updates]))
        runs.append(np.asarray([e["test_loss"] for e in result.evals]))
    np.testing.assert_allclose(runs[0], runs[2], rtol=1e-10)
    np.testing.assert_allclose(runs[1], runs[3], rtol=1e-10)


@pytest.mark.parametrize("flow,policy", [("alpha:0.5+samples:2", "deterministic"),
                                         pytest.param("alpha:auto+samples:2", "gaussian", marks=pytest.mark.slow)])
def test_shac_trains_zeroth_and_alpha_order_flows_alike_in_jax_and_torch(flow, policy):
    """The actor's window objective (discounted costs and the critic's value at the window's end) mixed with its
    zeroth-order estimate, for the deterministic and the published Gaussian actor; each update logs α, ‖ĝ1 − ĝ0‖, ε
    and both variances; float64, JAX = torch."""
    from gradstop.mixing import STAT_NAMES

    runs = {}
    for backend in BACKENDS:
        cfg = TrainConfig.for_algo("shac", sim="cartpole", sim_params={"poles": 1}, backend=backend, flow=flow,
                                   policy=policy, horizon=16, window=8, batch=8, epochs=2, updates_per_epoch=2,
                                   hidden=(16,), critic_hidden=(16,), critic_iterations=2, critic_minibatches=2,
                                   dtype="float64", test_size=8)
        runs[backend] = train(cfg)
    keys = ("loss", "grad_norm", "critic_loss", *STAT_NAMES)
    table = {b: np.asarray([[float(u[k]) for k in keys] for u in r.updates]) for b, r in runs.items()}
    assert np.isfinite(table["jax"][:, :3]).all() and np.isfinite(table["jax"][:, 3]).all()  # α is logged every update
    np.testing.assert_allclose(table["jax"], table["torch"], rtol=1e-9, atol=1e-12)
    assert runs["jax"].summary["final_test_loss"] == pytest.approx(runs["torch"].summary["final_test_loss"], rel=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shac_resumes_from_a_checkpoint_to_the_same_numbers(backend, tmp_path, monkeypatch):
    import importlib

    cfg = TrainConfig.for_algo("shac", sim="pointmass", backend=backend, horizon=16, window=8, batch=4, epochs=4,
                               updates_per_epoch=2, hidden=(8,), critic_hidden=(8,), critic_iterations=2,
                               schedule="linear", checkpoint_every=2)
    whole = train(cfg, out=tmp_path / "whole")
    program = importlib.import_module(f"gradstop.trainers.{backend}.shac").SHAC
    real = program.run_epoch

    def cut_in_epoch_3(self, data, epoch):  # killed in the third epoch, after the checkpoint of epoch 2
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, data, epoch)

    monkeypatch.setattr(program, "run_epoch", cut_in_epoch_3)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut)
    monkeypatch.setattr(program, "run_epoch", real)
    resumed = train(cfg, out=cut)
    keys = ("loss", "grad_norm", "critic_loss", "lr")
    assert [[u[k] for k in keys] for u in resumed.updates] == [[u[k] for k in keys] for u in whole.updates]


def test_shac_defaults_are_the_published_ones_and_bad_settings_are_named():
    cfg = TrainConfig.for_algo("shac")
    assert (cfg.beta1, cfg.beta2, cfg.clip_norm, cfg.schedule, cfg.window, cfg.batch) == (0.7, 0.95, 1.0, "linear", 32, 64)
    assert (cfg.lr, cfg.critic_lr, cfg.gamma, cfg.td_lambda, cfg.target_alpha) == (1e-2, 1e-3, 0.99, 0.95, 0.2)
    assert (cfg.critic_iterations, cfg.critic_minibatches, cfg.activation) == (16, 4, "elu")
    assert ALGO_DEFAULTS["bptt"] == {}
    with pytest.raises(ValueError, match=r"horizon=100 must be a multiple of window=32 \(e.g. --horizon 96\)"):
        TrainConfig.for_algo("shac", horizon=100, td_dones="window")
    with pytest.raises(ValueError, match="algo shac keeps its environments running .* use data='fresh'"):
        TrainConfig.for_algo("shac", data="fixed")
    with pytest.raises(ValueError, match="do not split into critic_minibatches=3"):
        TrainConfig.for_algo("shac", critic_minibatches=3, batch=4, window=32, horizon=64)
    with pytest.raises(ValueError, match="unknown algo 'shack'.*did you mean 'shac'"):
        TrainConfig.for_algo("shack")


def test_the_cli_starts_shac_from_its_published_defaults(tmp_path, capsys):
    from gradstop.cli import main

    assert main(["train", "--algo", "shac", "--sim", "pointmass", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["algo"] == "shac" and printed["beta1"] == 0.7 and printed["clip_norm"] == 1.0 and printed["batch"] == 64
    assert main(["train", "--algo", "shac", "--sim", "pointmass", "--horizon", "16", "--window", "8", "--batch", "4",
                 "--epochs", "1", "--updates-per-epoch", "2", "--hidden", "8", "--critic-hidden", "8", "--critic-iterations", "1",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 0
    rows = (tmp_path / "r" / "none" / "updates.csv").read_text().splitlines()
    assert rows[0].split(",")[8] == "critic_loss" and len(rows) == 3


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_a_shac_population_equals_its_members_trained_one_by_one(backend):
    from gradstop.trainers import train_population

    cfg = TrainConfig.for_algo("shac", sim="pointmass", backend=backend, horizon=16, window=8, batch=4, epochs=2,
                               updates_per_epoch=2, hidden=(8,), critic_hidden=(8,), critic_iterations=2)
    together = train_population(cfg, seeds=[1, 2])
    for seed, member in zip([1, 2], together):
        alone = train(dataclasses.replace(cfg, seed=seed))
        for key in ("loss", "critic_loss"):
            np.testing.assert_allclose([float(u[key]) for u in member.updates], [float(u[key]) for u in alone.updates], rtol=2e-5)
        np.testing.assert_allclose([e["test_loss"] for e in member.evals], [e["test_loss"] for e in alone.evals], rtol=2e-5)


def test_a_terminated_environment_bootstraps_zero_at_the_window_end():
    """SHAC: V = 0 after an early termination (sim.terminated, Brax's `done`), the value otherwise."""
    from sims.pointmass import PointMass

    class Falls(PointMass):
        def terminated(self, x):
            return (x[..., 0] > 0).astype(x.dtype)  # "fallen" where the first coordinate is positive

    import jax.numpy as jnp

    sim = Falls(dims=1)
    window = Window(sim, lambda obs: jnp.full(obs.shape[:-1], 7.0), gamma=0.5, window=2)
    X = window.wrap(jnp.asarray([[1.0, 0.0], [-1.0, 0.0]]), jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(window.terminal_cost(X)), [0.0, 7.0 / 2])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_non_finite_actor_update_is_located_in_its_window(backend):
    """gradstop.diagnose's locator, on the actor's window of the failing update (replayed in JAX)."""
    from helpers import Faulty

    sim = Faulty(backend=backend, fault="vjp", at=3, element=1)
    cfg = TrainConfig.for_algo("shac", sim="pointmass", backend=backend, flow="input", horizon=8, window=4, batch=4,
                               epochs=1, hidden=(8,), critic_hidden=(8,))
    with pytest.raises(NonFiniteError) as info:
        train(cfg, sim=sim)
    assert ("flow input: in the actor's window, λ first NaN at step 3 of 4 (VJP through the simulator), batch element 0"
            in str(info.value)), str(info.value)


def test_a_shac_config_built_in_python_takes_shacs_published_defaults():
    cfg = TrainConfig(algo="shac", sim="cartpole")
    assert cfg == TrainConfig.for_algo("shac", sim="cartpole")
    assert {k: getattr(cfg, k) for k in ALGO_DEFAULTS["shac"]} == {k: (tuple(v) if isinstance(v, (list, tuple)) else v)
                                                                for k, v in ALGO_DEFAULTS["shac"].items()}
    assert TrainConfig(algo="shac", lr=3e-3).lr == 3e-3  # a field given wins
    assert TrainConfig().lr == 1e-3 and TrainConfig().horizon == 100  # BPTT's own
    with pytest.raises(TypeError, match="takes its fields by name"):
        TrainConfig("shac")
