"""The learned world model: one-step error under a stated bound, the same fit in both frameworks, the chain."""

from __future__ import annotations

import numpy as np
import pytest

from gradstop.trainers import TrainConfig, train
from gradstop.trainers import world_model as wm
from gradstop.trainers.run import make_sim, program_for
from sims.learned import Learned

FIT = dict(world_model=True, model_transitions=6000, model_epochs=40, model_hidden=64, model_batch=128, model_lr=3e-3)
BOUND = 0.05  # RMS one-step error ≤ 5% of the RMS size of a true step, on fresh transitions


@pytest.mark.parametrize("backend,sim,params", [("jax", "pointmass", {"dims": 2}), ("jax", "cartpole", {"poles": 1}),
                                                ("jax", "cartpole", {"poles": 2}), ("torch", "cartpole", {"poles": 1})])
def test_the_learned_model_predicts_one_step_within_the_bound(backend, sim, params):
    cfg = TrainConfig(sim=sim, sim_params=params, backend=backend, **FIT)
    model = wm.fit(cfg, make_sim(cfg))
    assert isinstance(model, Learned) and model.backend == backend
    assert wm.one_step_error(model, cfg) < BOUND


def test_both_frameworks_fit_the_same_model():
    small = {**FIT, "model_transitions": 1024, "model_epochs": 3}
    fits = [wm.fit(c, make_sim(c)) for c in (TrainConfig(sim="cartpole", backend=b, dtype="float64", **small) for b in ("jax", "torch"))]
    for (wj, bj), (wt, bt) in zip(fits[0].layers, fits[1].layers):
        np.testing.assert_allclose(wj, wt, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bj, bt, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("algo", ["bptt", "shac"])
def test_the_actor_learns_through_the_model_and_is_scored_on_the_true_sim(algo):
    # SHAC with gradstop's earlier actor (deterministic, unbounded, raw observations), which learns this task fast enough
    # for the check in 3 epochs; the published actor's own learning is tested in tests/test_shac.py
    extra = dict(window=16, batch=16, critic_hidden=(32,), critic_iterations=4, lr=3e-3, policy="deterministic",
                 actor_layer_norm=False, action_squash="none", obs_norm=False) if algo == "shac" else dict(batch=16, lr=1e-2)
    cfg = TrainConfig.for_algo(algo, sim="pointmass", sim_params={"dims": 2}, flow="input", horizon=32, epochs=3,
                               updates_per_epoch=8, hidden=(32,), test_size=32, **{**FIT, "model_epochs": 20}, **extra)
    program = program_for(cfg, make_sim(cfg))
    assert isinstance(program.train_sim, Learned) and not isinstance(program.sim, Learned)
    result = train(cfg)
    assert result.evals[-1]["test_loss"] < 0.5 * result.evals[0]["test_loss"]  # the TRUE sim's test loss


def test_torch_shac_chain_needs_no_second_forward_for_a_combining_flow():
    """actor -> model -> critic with `combined`: the critic's data comes from the gradients' own forward."""
    import gradstop.trainers.torch.shac as shac

    calls = []
    original = shac.rollout
    shac.rollout = lambda *a, **k: calls.append(k.get("stop")) or original(*a, **k)
    try:
        cfg = TrainConfig.for_algo("shac", sim="pointmass", backend="torch", flow="combined", horizon=16, window=8, batch=4,
                                   epochs=1, updates_per_epoch=2, hidden=(8,), critic_hidden=(8,), critic_iterations=1,
                                   **{**FIT, "model_transitions": 512, "model_epochs": 1})
        train(cfg)
    finally:
        shac.rollout = original
    assert calls == [], "SHAC ran an extra rollout for the critic's data"


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_world_model_as_a_surrogate_keeps_the_true_forward_and_takes_its_derivatives(backend):
    """model_use='surrogate': the actor's rollouts are the true simulator's (the first update's loss is exactly that of a
    run without a model, from the same weights and data), while its gradient is the fitted model's (it differs; the
    rollout goes through sims.surrogate.Surrogate(sim, model), tested in tests/test_surrogate.py); model_use='chain'
    changes the forward."""
    from sims.surrogate import Surrogate

    small = {**FIT, "model_transitions": 1024, "model_epochs": 3}
    base = dict(sim="pointmass", sim_params={"dims": 2}, backend=backend, dtype="float64", horizon=8, batch=4, epochs=1,
                updates_per_epoch=1, hidden=(8,), test_size=4)
    plain, surrogate, chain = (train(TrainConfig(**base, **extra)).updates[0]
                               for extra in ({}, {**small, "model_use": "surrogate"}, small))
    assert float(surrogate["loss"]) == float(plain["loss"]) != float(chain["loss"])
    assert abs(float(surrogate["grad_norm"]) - float(plain["grad_norm"])) > 1e-6 * float(plain["grad_norm"])
    cfg = TrainConfig(**base, **small, model_use="surrogate")
    program = program_for(cfg, make_sim(cfg))
    assert isinstance(program.train_sim, Surrogate) and isinstance(program.train_sim.model, Learned)
    with pytest.raises(ValueError, match=r"model_use='surrogate' says how to use the fitted world model, but world_model "
                                         r"is off: add --world-model"):
        TrainConfig(model_use="surrogate")
    with pytest.raises(ValueError, match="model_use"):
        TrainConfig(world_model=True, model_use="tangent")
