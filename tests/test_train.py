"""Trainers on tiny budgets: learning, JAX/torch agreement, schedules, clipping, non-finite handling, the front door."""

from __future__ import annotations

import csv

import re

import dataclasses
import math

import numpy as np
import pytest

import gradstop as gs
import sims
from gradstop.trainers import NonFiniteError, TrainConfig, train
from helpers import Faulty
from gradstop.trainers.data import Data
from gradstop.trainers.schedule import lr_at
from sims import make
from sims.pointmass import PointMass

BACKENDS = ["jax", "torch"]


def column(result, key):
    return np.asarray([float(r[key]) for r in result.updates])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", ["none", "input", "combined"])
def test_bptt_lowers_the_test_loss_on_pointmass(backend, flow):
    cfg = TrainConfig(sim="pointmass", sim_params={"dims": 2}, backend=backend, flow=flow, horizon=20, epochs=4,
                      updates_per_epoch=15, batch=16, lr=1e-2, hidden=(32,), test_size=64)
    result = train(cfg)
    test = [e["test_loss"] for e in result.evals]
    assert len(result.updates) == 60 and len(test) == 5  # the untrained policy, then after every epoch
    assert np.all(np.isfinite(column(result, "loss")))
    assert test[-1] < 0.5 * test[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", ["none", "input", "combined"])
def test_bptt_lowers_the_test_loss_on_cartpole_with_a_fixed_training_set(backend, flow):
    cfg = TrainConfig(sim="cartpole", sim_params={"poles": 1, "task": "balance"}, backend=backend, flow=flow, horizon=30,
                      data="fixed", train_size=64, test_size=64, batch=8, epochs=4, lr=1e-2, hidden=(32,))
    result = train(cfg)
    assert result.evals[0]["update"] == 0  # the untrained policy
    assert result.evals[-1]["test_loss"] < 0.7 * result.evals[0]["test_loss"]
    if flow == "combined":  # the combining flows report the cosine between their input and none gradients
        cos = column(result, "cos_input_none")
        assert np.all(np.abs(cos) <= 1 + 1e-6) and np.isfinite(cos).all()
    else:
        assert np.isnan(column(result, "cos_input_none")).all()


@pytest.mark.parametrize("flow", ["none", "combined", "input+truncate:4"])
def test_jax_and_torch_trainers_take_the_same_steps_in_float64(flow):
    # float64: tests/conftest.py enables JAX's 64-bit mode
    runs = []
    for backend in BACKENDS:
        cfg = TrainConfig(sim="cartpole", sim_params={"poles": 2}, backend=backend, flow=flow, horizon=15, data="fixed",
                          train_size=24, batch=8, epochs=2, lr=1e-2, hidden=(16,), dtype="float64", clip_norm=0.05,
                          clip_value=0.5, optimizer="adamw", schedule="cosine", lr_final=0.1, zero_last=True)
        result = train(cfg)
        runs.append(np.stack([column(result, k) for k in ("loss", "grad_norm", "grad_norm_clipped", "lr")]))
        runs.append(np.asarray([e["test_loss"] for e in result.evals]))
    np.testing.assert_allclose(runs[0], runs[2], rtol=1e-10)
    np.testing.assert_allclose(runs[1], runs[3], rtol=1e-10)
    assert np.any(runs[0][1] > runs[0][2]), "clipping never engaged: the test would not see a difference"


def test_glorot_init_and_adam_eps_are_the_published_codes_and_both_frameworks_apply_them():
    """weight_init='glorot' (Keras' Dense default: W ~ U(±√(6/(in+out))), b = 0) and adam_eps (Keras: 1e-7)."""
    from gradstop._policy import init_weights

    w = init_weights([6, 100, 100, 1], seed=3, scheme="glorot")
    assert all(np.all(b == 0) for b in w[1::2])
    for W, (n_in, n_out) in zip(w[::2], [(6, 100), (100, 100), (100, 1)]):
        bound = math.sqrt(6 / (n_in + n_out))
        assert W.shape == (n_out, n_in) and np.abs(W).max() <= bound and np.abs(W).max() > 0.9 * bound
    runs = []
    for backend in BACKENDS:
        cfg = TrainConfig(sim="cartpole", preset="literature", sim_params={"poles": 2, "observation": "raw"}, backend=backend,
                          horizon=12, data="fixed", train_size=16, batch=8, epochs=2, hidden=(16,), dtype="float64",
                          weight_init="glorot", adam_eps=1e-7, test_size=8)
        result = train(cfg)
        runs.append(np.stack([column(result, k) for k in ("loss", "grad_norm")]))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-10)
    base = TrainConfig(sim="cartpole", preset="literature", sim_params={"poles": 2, "observation": "raw"}, horizon=12,
                       data="fixed", train_size=16, batch=8, epochs=2, hidden=(16,), dtype="float64", test_size=8)
    other = np.stack([column(train(base), k) for k in ("loss", "grad_norm")])
    assert np.abs(other - runs[0]).max() > 1e-6  # the options change the numbers


def test_fields_added_later_keep_the_hash_of_configs_written_before_them():
    cfg = TrainConfig(sim="pointmass", epochs=3)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("weight_init", "adam_eps", "compile")}
    loaded = TrainConfig.from_dict(old)
    assert loaded == cfg and loaded.digest() == cfg.digest() and not cfg.differences(loaded)
    assert cfg.digest() == "a95c83bb"  # this config's hash before weight_init and adam_eps existed (commit 89c528c)
    changed = dataclasses.replace(cfg, weight_init="glorot")
    assert changed.digest() != cfg.digest() and changed.differences(cfg) == ["weight_init: 'torch' -> 'glorot'"]
    with pytest.raises(ValueError, match="unknown weight_init 'xavier'; choose one of torch, glorot"):
        TrainConfig(weight_init="xavier")
    with pytest.raises(ValueError, match="adam_eps must be a finite number > 0"):
        TrainConfig(adam_eps=0.0)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedules_follow_the_documented_formula_in_both_frameworks(schedule):
    cfg = TrainConfig(sim="pointmass", epochs=3, updates_per_epoch=4, lr=0.1, schedule=schedule, lr_final=0.2)
    expected = [lr_at(schedule, 0.1, 0.2, 12, t) for t in range(12)]
    if schedule == "linear":
        assert expected[0] == 0.1 and math.isclose(lr_at(schedule, 0.1, 0.2, 12, 12), 0.02)
    for backend in BACKENDS:
        result = train(dataclasses.replace(cfg, backend=backend, horizon=3, hidden=(4,)))
        np.testing.assert_allclose(column(result, "lr"), expected, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_every_optimizer_trains(backend, optimizer):
    cfg = TrainConfig(sim="pointmass", backend=backend, horizon=10, epochs=2, updates_per_epoch=20, batch=16, hidden=(16,),
                      optimizer=optimizer, lr=3e-3 if optimizer != "sgd" else 1e-3, momentum=0.9 if optimizer == "sgd" else 0.0)
    result = train(cfg)
    loss = column(result, "loss")
    assert loss[-5:].mean() < loss[:5].mean()


def test_fixed_data_is_an_epoch_of_the_training_set_and_shuffles_by_epoch():
    sim = make("cartpole", backend="numpy")
    data = Data(sim, mode="fixed", train_size=20, test_size=5, batch=8, shuffle=True, updates_per_epoch=99, seed=3)
    e0, e1 = data.order(0), data.order(1)
    assert e0.shape == (2, 8) and len(set(e0.ravel())) == 16 and not np.array_equal(e0, e1)
    np.testing.assert_array_equal(data.epoch(1), data.train[e1])
    fixed = Data(sim, mode="fixed", train_size=20, test_size=5, batch=8, shuffle=False, updates_per_epoch=99, seed=3)
    np.testing.assert_array_equal(fixed.order(0), fixed.order(5))
    np.testing.assert_array_equal(fixed.train, data.train)  # the order option does not change the set
    assert not np.array_equal(data.test[:5], data.train[:5])
    low, high = sim.init_bounds()
    assert np.all(data.train >= low) and np.all(data.train <= high)


def test_zero_last_starts_at_zero_action_and_the_success_measure_counts_upright_poles():
    cfg = TrainConfig(sim="cartpole", backend="torch", zero_last=True, hidden=(8,))
    from gradstop.trainers.torch.bptt import make_policy
    import torch

    sim = make("cartpole", backend="torch", poles=2)
    policy = make_policy(cfg, sim)
    assert torch.count_nonzero(policy(torch.ones(3, sim.obs_dim))) == 0
    x = torch.zeros(2, sim.state_dim)
    x[0, 1], x[0, 2] = math.radians(11), math.radians(13)
    x[1, 1], x[1, 2] = math.pi, -math.radians(5)
    np.testing.assert_allclose(sim.success(x).numpy(), [0.5, 0.5])


# -- non-finite updates ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Fragile(PointMass):
    """A point mass whose cost is NaN once an action leaves (-1, 1); its cost pulls actions there."""

    name = "fragile"

    def cost(self, x_next, a):
        return super().cost(x_next, a) + self.xp.log(1.0 - (a * a).sum(-1))


@pytest.fixture
def fragile(monkeypatch):
    monkeypatch.setitem(sims._REGISTRY, "fragile", Fragile)
    return dict(sim="fragile", sim_params={"dims": 1}, horizon=5, batch=4, updates_per_epoch=5, epochs=20, lr=0.01, hidden=(8,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_update_stops_the_run_naming_update_and_flow_and_keeps_the_checkpoint(backend, fragile, tmp_path):
    cfg = TrainConfig(backend=backend, flow="input", **fragile)
    with pytest.raises(NonFiniteError, match=r"non-finite .* at update \d+ \(epoch \d+\), flow input") as info:
        train(cfg, out=tmp_path / "run")
    err = info.value
    assert err.flow == "input" and err.update > 5
    rows = (tmp_path / "run" / "updates.csv").read_text().splitlines()
    assert rows[-1].split(",")[1] == str(err.update) and rows[-1].split(",")[7] == "0"  # the bad update is logged, marked
    assert not (tmp_path / "run" / "summary.json").exists()
    assert "last good checkpoint" in str(err) and (tmp_path / "run" / ("checkpoint.npz" if backend == "jax" else "checkpoint.pt")).exists()
    # gradstop.diagnose's locator, replaying the update, names where its cost first went non-finite
    assert re.search(r"flow input: cost first NaN at step \d of 5 \(cost\), batch element \d; loss", str(err)), str(err)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_vjp_is_located_in_the_stop_message(backend):
    """A finite forward with a NaN backward (the contact case): the message names the step, stage and element."""
    sim = Faulty(backend=backend, fault="vjp", at=3, element=1)  # its states all carry id 1: every element is hit
    cfg = TrainConfig(backend=backend, sim="pointmass", flow="combined", horizon=6, batch=4, updates_per_epoch=2,
                      epochs=1, hidden=(8,))
    with pytest.raises(NonFiniteError) as info:
        train(cfg, sim=sim)
    assert ("flow combined: in its none component, λ first NaN at step 3 of 6 (VJP through the simulator), "
            "batch element 0; loss") in str(info.value), str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_mode_skips_non_finite_updates_counts_them_and_stops_once_a_whole_epoch_is_skipped(backend, fragile,
                                                                                                 tmp_path):
    cfg = TrainConfig(backend=backend, flow="input", on_nonfinite="skip", checkpoint_every=1, **fragile)
    with pytest.raises(NonFiniteError, match=r"every update of epoch \d+ \(5\) was non-finite and skipped") as info:
        train(cfg, out=tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "updates.csv")))
    finite = np.asarray([int(r["finite"]) for r in rows])
    assert len(rows) == 5 * info.value.epoch and finite[-5:].sum() == 0  # logged up to the dead epoch
    assert 0 < finite.sum() < len(rows) and finite[:5].all()  # finite updates first, then skipped ones
    weights = np.load(tmp_path / "run" / "checkpoint.npz") if backend == "jax" else None
    if weights is not None:
        assert all(np.isfinite(weights[k]).all() for k in weights.files if k.startswith("leaf_"))


# -- the one-call front door -----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_gs_bptt_reduces_the_loss_and_records_every_update(backend):
    sim = make("pointmass", backend=backend, dims=2)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(32,)) if backend == "jax" else \
        gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(32,), seed=0)
    _, hist = gs.bptt(policy, sim, stop="input", horizon=20, iters=60, lr=1e-2, batch=16)
    assert hist.loss.shape == hist.grad_norm.shape == hist.seconds.shape == (60,)
    assert np.all(np.isfinite(hist.loss))
    # `seconds` is the cumulative wall clock at each update (a contract on the record, no timing claim)
    assert np.all(np.diff(hist.seconds) >= 0)
    assert hist.loss[-10:].mean() < 0.5 * hist.loss[:5].mean()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gs_bptt_clips_the_gradient(backend):
    """Adam's first step is ≈ lr·sign(g) per weight; clipping g far below Adam's ε shrinks it to almost nothing."""
    sim = make("pointmass", backend=backend)

    def first_step(clip_norm):
        policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim) if backend == "jax" else gs.torch.mlp(sim.obs_dim, sim.action_dim, seed=0)
        before = gs.get_weights(policy)
        trained, hist = gs.bptt(policy, sim, horizon=10, iters=1, lr=0.1, clip_norm=clip_norm)
        return max(np.abs(a - b).max() for a, b in zip(gs.get_weights(trained), before)), hist.grad_norm[0]

    free, norm = first_step(None)
    clipped, norm_clipped = first_step(1e-10)
    assert free > 0.05 and clipped < 0.01
    assert norm == pytest.approx(norm_clipped, rel=1e-5) and norm > 1.0  # the recorded norm is before clipping


@pytest.mark.parametrize("bad,match", [(dict(iters=0), "iters must be an integer ≥ 1"), (dict(lr=-1.0), "lr must be a finite number > 0"),
                                       (dict(batch=1.5), "batch must be an integer"), (dict(clip_norm=0.0), "clip_norm must be"),
                                       (dict(optimizer="adagrad"), "unknown optimizer 'adagrad'; choose one of adam, adamw, sgd")])
def test_gs_bptt_rejects_bad_hyperparameters(bad, match):
    sim = make("pointmass")
    kwargs = dict(horizon=5, iters=2) | bad
    with pytest.raises(ValueError, match=match):
        gs.bptt(gs.jax.mlp(0, sim.obs_dim, sim.action_dim), sim, **kwargs)


# -- populations -----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_population_equals_its_members_trained_one_by_one(backend):
    from gradstop.trainers import train_population

    cfg = TrainConfig(sim="cartpole", sim_params={"poles": 2}, backend=backend, flow="combined", horizon=10, data="fixed",
                      train_size=16, batch=4, epochs=2, hidden=(8,), lr=1e-2)
    together = train_population(cfg, seeds=[3, 5, 8])
    for seed, member in zip([3, 5, 8], together):
        alone = train(dataclasses.replace(cfg, seed=seed))
        np.testing.assert_allclose(column(member, "loss"), column(alone, "loss"), rtol=2e-5)
        np.testing.assert_allclose([e["test_loss"] for e in member.evals], [e["test_loss"] for e in alone.evals], rtol=2e-5)
        for a, b in zip(gs.get_weights(member.policy), gs.get_weights(alone.policy)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert column(together[0], "loss")[0] != column(together[1], "loss")[0]  # the seeds differ: so do the runs
    with pytest.raises(ValueError, match="seeds repeats a seed"):
        train_population(cfg, seeds=[1, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_population_of_an_alpha_order_flow_equals_its_members_trained_one_by_one(backend, flow="alpha:auto"):
    """Each member draws its own action noise (keyed by its seed and epoch), so a population logs the same losses and
    mixing statistics (α, ‖ĝ1 − ĝ0‖, ε, σ0², σ1²) as its members trained alone."""
    from gradstop.mixing import STAT_NAMES
    from gradstop.trainers import train_population

    cfg = TrainConfig(sim="pointmass", backend=backend, flow=flow, horizon=6, train_size=8, batch=4, epochs=2, hidden=(8,))
    together = train_population(cfg, seeds=[2, 7])
    for seed, member in zip([2, 7], together):
        alone = train(dataclasses.replace(cfg, seed=seed))
        for name in ("loss", *STAT_NAMES):
            np.testing.assert_allclose(column(member, name), column(alone, name), rtol=2e-5, atol=1e-7, err_msg=name)
        assert set(STAT_NAMES) <= set(member.updates[0])
    assert column(together[0], "loss")[0] != column(together[1], "loss")[0]  # the seeds differ: so do the runs


def test_a_population_shards_over_devices_and_gives_the_same_numbers(tmp_path):
    """With 4 (forced host) devices the population axis is split over them; the numbers do not change."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from gradstop.trainers import train_population

    cfg = TrainConfig(sim="pointmass", horizon=6, epochs=2, updates_per_epoch=3, batch=4, hidden=(8,))
    script = f"""
import json, jax
from gradstop.trainers import TrainConfig, train_population
from gradstop.trainers.jax.population import population_sharding
cfg = TrainConfig.from_dict(json.loads({json.dumps(json.dumps(cfg.to_dict()))}))
results = train_population(cfg, seeds=range(4))
print(json.dumps({{"devices": len(jax.devices()), "sharded": population_sharding(4) is not None,
                  "loss": [[float(u["loss"]) for u in r.updates] for r in results]}}))
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["sharded"]
    here = [[float(u["loss"]) for u in r.updates] for r in train_population(cfg, seeds=range(4))]
    np.testing.assert_allclose(out["loss"], here, rtol=1e-5)


# -- Gaussian policies -----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_noisy_sim_feeds_a_gaussian_policy_its_reparameterised_noise(backend):
    from gradstop.trainers.noise import Noisy

    sim = make("pointmass", backend=backend, dims=2)
    policy = gs.jax.gaussian(0, sim.obs_dim, 2, hidden=(8,), init_std=0.3) if backend == "jax" else \
        gs.torch.gaussian(sim.obs_dim, 2, hidden=(8,), seed=0, init_std=0.3)
    noisy = Noisy(sim, horizon=5)
    x0 = sim.reset(1, 3)
    eps = np.random.default_rng(0).standard_normal((3, 5, 2))
    if backend == "jax":
        import jax.numpy as xp
    else:
        import torch as xp
    out = gs.rollout(policy, noisy, horizon=5, x0=noisy.wrap(x0, xp.asarray(eps, dtype=x0.dtype)))
    to_np = lambda a: np.asarray(a.detach()) if backend == "torch" else np.asarray(a)  # noqa: E731
    mean = to_np(policy.mean(sim.obs(out.states[:-1, :, : sim.state_dim])))  # μ(o_t) along the noisy trajectory
    np.testing.assert_allclose(to_np(out.actions), mean + 0.3 * np.swapaxes(eps, 0, 1), rtol=1e-6, atol=1e-6)
    plain = gs.rollout(policy, sim, horizon=5, x0=x0)  # plain observations: the mean action
    np.testing.assert_allclose(to_np(plain.actions[0]), mean[0], rtol=1e-6)
    weights = gs.get_weights(policy)
    np.testing.assert_allclose(weights[-1], np.log(0.3), rtol=1e-6)  # log-std rides last in the weight list


@pytest.mark.parametrize("impl", ["native", "fused"])
def test_gaussian_bptt_learns_its_sigma_and_takes_the_same_steps_in_both_frameworks(impl):
    runs, sigmas = [], []
    for backend in BACKENDS:
        cfg = TrainConfig(sim="pointmass", sim_params={"dims": 2}, backend=backend, flow="combined", impl=impl, policy="gaussian",
                          horizon=10, batch=8, epochs=2, updates_per_epoch=3, hidden=(16,), dtype="float64", lr=1e-2)
        result = train(cfg)
        runs.append(np.stack([column(result, k) for k in ("loss", "grad_norm")]))
        sigmas.append(gs.get_weights(result.policy)[-1])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-10)
    np.testing.assert_allclose(sigmas[0], sigmas[1], rtol=1e-10)
    assert not np.allclose(sigmas[0], np.log(0.5)), "σ did not move: its gradient is missing"


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussian_bptt_lowers_the_test_loss_and_a_jax_population_of_them_runs(backend):
    cfg = TrainConfig(sim="pointmass", sim_params={"dims": 2}, backend=backend, flow="input", policy="gaussian", init_std=0.2,
                      horizon=20, epochs=4, updates_per_epoch=15, batch=16, lr=1e-2, hidden=(32,), test_size=64)
    result = train(cfg)
    assert result.evals[-1]["test_loss"] < 0.5 * result.evals[0]["test_loss"]
    if backend == "jax":
        from gradstop.trainers import train_population

        small = dataclasses.replace(cfg, epochs=1, updates_per_epoch=2)
        member = train_population(small, seeds=[4, 5])[1]
        np.testing.assert_allclose(column(member, "loss"), column(train(dataclasses.replace(small, seed=5)), "loss"), rtol=2e-5)
    assert TrainConfig.for_algo("shac").policy == "gaussian"  # SHAC's published actor (tests/test_shac_published.py)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_validation_set_is_drawn_apart_from_the_test_set_and_chooses_the_best_evaluation(backend, tmp_path):
    cfg = TrainConfig(sim="pointmass", backend=backend, horizon=8, epochs=4, updates_per_epoch=3, hidden=(8,), lr=0.05,
                      test_size=16, validation=True, dtype="float64")
    sim = sims.make("pointmass", backend=backend)
    data = Data.from_config(sim, cfg)
    assert data.validation.shape == data.test.shape and not np.allclose(data.validation, data.test)
    np.testing.assert_array_equal(data.test, Data.from_config(sim, dataclasses.replace(cfg, validation=False)).test)
    result = train(cfg, out=tmp_path / "run")
    val = np.asarray([e["val_loss"] for e in result.evals])
    test = np.asarray([e["test_loss"] for e in result.evals])
    best = int(np.argmin(val))
    s = result.summary
    assert s["best_val_loss"] == val[best] and s["test_loss_at_best_val"] == test[best] and s["final_val_loss"] == val[-1]
    assert s["best_val_epoch"] == result.evals[best]["epoch"] and s["best_test_loss"] == test.min()
    header = (tmp_path / "run" / "eval.csv").read_text().splitlines()[0]
    assert header.endswith("seconds,val_loss,val_success")
    # the validation set is an addition: a run without it has the numbers it had before the option existed
    plain = train(dataclasses.replace(cfg, validation=False))
    assert [e["test_loss"] for e in plain.evals] == [e["test_loss"] for e in result.evals]
    assert "best_val_loss" not in plain.summary
    assert "validation" not in dataclasses.replace(cfg, validation=False).identity()  # earlier runs keep their hash
    assert "validation" in cfg.identity()


class Ending(sims.pointmass.PointMass):
    """A point mass whose episode ends once x passes 0.5: reward 1 a step."""

    name = "ending"

    def reward(self, x):
        return 1.0 + 0.0 * x[..., 0]

    def terminated(self, x):
        return self.xp.where(x[..., 0] > 0.5, 1.0 + 0.0 * x[..., 0], 0.0 * x[..., 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_episode_reward_stops_at_the_first_step_that_ends_the_episode(backend, monkeypatch):
    from gradstop.trainers.run import program_for

    monkeypatch.setitem(sims._REGISTRY, "ending", Ending)
    cfg = TrainConfig(sim="ending", sim_params={"dims": 1}, backend=backend, horizon=30, hidden=(4,), zero_last=True,
                      dtype="float64")  # a = 0: the mass coasts
    sim = sims.make("ending", backend=backend, dims=1)
    x0 = np.array([[0.0, 1.0], [0.0, -1.0], [0.45, 0.5]])  # passes 0.5 later, never, at once
    reference = Ending(backend="numpy", dims=1)
    expected = []
    for x in x0:
        states, ended = [x[None]], None
        for t in range(1, 31):
            states.append(reference.step(states[-1], np.zeros((1, 1))))
            if ended is None and reference.terminated(states[-1])[0] == 1.0:
                ended = t
        expected.append(ended or 30)
    assert expected[0] < 30 and expected[1] == 30  # the check means something: one ends, one never does
    program = program_for(cfg, sim)
    program.compile(Data.from_config(sim, dataclasses.replace(cfg, test_size=3)), 0) if backend == "jax" else None
    ev = program.evaluate(x0)
    assert ev["test_reward"] == pytest.approx(np.mean(expected), abs=1e-12)


# -- episodes that end (until_done) ------------------------------------------------------------------
class _EndsFar:
    """tests/helpers.py's point mass, whose episode ends once it is more than 0.7 from the origin along its first axis."""

    def __init__(self, sim):
        self.__dict__.update(sim=sim, backend=sim.backend, dt=sim.dt, state_dim=sim.state_dim, obs_dim=sim.obs_dim,
                             action_dim=sim.action_dim, name="ends-far")

    def terminated(self, x):
        return (abs(x[..., 0]) > 0.7) * 1.0

    def __getattr__(self, name):
        return getattr(self.__dict__["sim"], name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_until_done_stops_each_rollouts_costs_after_its_episodes_first_done(backend):
    """The wrapped rollout's costs are the plain rollout's, each environment's counted up to and including the step
    that ends its episode (Brax's count), by hand; its trajectory is the plain one."""
    from gradstop.trainers.episodes import UntilDone
    from helpers import load

    plain_sim, policy, x0 = load(backend, "pointmass", batch=6)
    sim = _EndsFar(plain_sim)
    wrapped = UntilDone(sim)
    plain = gs.rollout(policy, sim, horizon=12, x0=x0)
    ours = gs.rollout(policy, wrapped, horizon=12, x0=wrapped.wrap(x0))
    to_np = (lambda a: np.asarray(a)) if backend == "jax" else (lambda a: a.detach().numpy())
    states, costs = to_np(plain.states), to_np(plain.costs)  # (H+1, B, n), (H, B)
    done = (np.abs(states[:, :, 0]) > 0.7).astype(float)
    on = np.cumprod(1 - done[:-1], 0)  # step t counts while no state up to x_t has ended the episode
    assert 0 < on.sum() < on.size and (on[-1] == 0).any() and (on[-1] == 1).any(), "episodes must end and go on"
    np.testing.assert_allclose(to_np(ours.costs), on * costs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(to_np(ours.states)[..., :-1], states, rtol=1e-12)  # the same trajectory
    loss = float(ours.loss) if backend == "jax" else float(ours.loss.detach())
    assert loss == pytest.approx(float((on * costs).sum(0).mean()), rel=1e-12)  # no terminal cost here


def test_until_done_trains_alike_in_jax_and_torch_and_refuses_what_it_cannot_do(monkeypatch):
    monkeypatch.setattr(sims, "_REGISTRY", dict(sims._REGISTRY))
    sims.register("test-ends-far", lambda backend, **kw: _EndsFar(make("pointmass", backend=backend, dims=2, **kw)))
    losses = {}
    for backend in BACKENDS:
        cfg = TrainConfig(sim="test-ends-far", backend=backend, flow="input", horizon=12, train_size=8, batch=4, epochs=2,
                          hidden=(8,), dtype="float64", until_done=True)
        losses[backend] = column(train(cfg), "loss")
    np.testing.assert_allclose(losses["jax"], losses["torch"], rtol=1e-10)
    plain = column(train(dataclasses.replace(cfg, until_done=False)), "loss")
    assert losses["torch"][0] < plain[0]  # the same first policy and data; costs ≥ 0 and some episodes end: less
    with pytest.raises(ValueError, match="has no terminated\\(x\\) to say where its episodes end"):
        train(TrainConfig(sim="pointmass", until_done=True, epochs=1))
    with pytest.raises(ValueError, match="until_done is BPTT's"):
        TrainConfig(algo="shac", sim="pointmass", until_done=True)
