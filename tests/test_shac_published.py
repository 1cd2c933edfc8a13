"""SHAC as published (Xu et al., ICLR 2022; NVlabs/DiffRL): each switch changes what it should, the earlier variant
stays reproducible by config, and JAX and torch still agree in float64."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from gradstop.trainers import NonFiniteError, TrainConfig, train
from gradstop.trainers.config import ADDED_LATER, ALGO_DEFAULTS, RUN_ONLY
from gradstop.trainers.run import program_for
from gradstop.trainers.shac import GUARD_LIMIT, GuardError, Window, check_guards, critic_weights, td_lambda
from sims import make
from sims.pointmass import PointMass

BACKENDS = ["jax", "torch"]
PUBLISHED = dict(critic_layer_norm=True, critic_init="orthogonal", critic_optimizer="actor", td_dones="step",
                 time_limit="bootstrap", guards=True)
EARLIER = dict(critic_layer_norm=False, critic_init="uniform", critic_optimizer="adam", td_dones="window",
               time_limit="terminal", guards=False)
TINY = dict(sim="pointmass", horizon=8, window=4, batch=4, epochs=1, updates_per_epoch=2, hidden=(8,), critic_hidden=(8,),
            critic_iterations=1, critic_minibatches=2, test_size=4)


def to_np(a):
    return np.asarray(a.detach()) if hasattr(a, "detach") else np.asarray(a)


# -- the config -----------------------------------------------------------------------------------
def test_shac_takes_the_published_values_and_bptt_and_old_files_the_earlier_ones():
    assert {k: ALGO_DEFAULTS["shac"][k] for k in PUBLISHED} == PUBLISHED
    assert {k: getattr(TrainConfig(algo="shac"), k) for k in PUBLISHED} == PUBLISHED
    assert {k: getattr(TrainConfig(), k) for k in EARLIER} == EARLIER  # BPTT ignores them; the dataclass keeps the old
    assert {k: ADDED_LATER[k] for k in EARLIER} == EARLIER
    assert TrainConfig(algo="shac", guards=False, td_dones="window").td_dones == "window"  # a field given wins
    # a SHAC config file written before these fields existed: the earlier variant, with the hash it had then
    new = TrainConfig.for_algo("shac", **TINY)
    old = {k: v for k, v in new.to_dict().items() if k not in PUBLISHED}
    loaded = TrainConfig.from_dict(old)
    assert {k: getattr(loaded, k) for k in EARLIER} == EARLIER
    before = {"compile": False, "weight_init": "torch", "adam_eps": 1e-8, "validation": False}  # ADDED_LATER until then
    identity = {k: v for k, v in old.items() if k not in RUN_ONLY and not (k in before and v == before[k])}
    assert loaded.digest() == hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    assert loaded.digest() != new.digest() and sorted(new.differences(loaded)) == sorted(
        f"{k}: {EARLIER[k]!r} -> {PUBLISHED[k]!r}" for k in PUBLISHED)
    assert TrainConfig(sim="pointmass", epochs=3).digest() == "a95c83bb"  # a BPTT config keeps its hash too


@pytest.mark.parametrize("field, bad, valid", [("critic_init", "xavier", "orthogonal, uniform"),
                                               ("critic_optimizer", "sgd", "actor, adam"),
                                               ("td_dones", "steps", "step, window"),
                                               ("time_limit", "bootstrapped", "bootstrap, terminal")])
def test_a_bad_value_names_the_field_and_the_valid_ones(field, bad, valid):
    with pytest.raises(ValueError, match=f"unknown {field} {bad!r}; choose one of {valid}"):
        TrainConfig(algo="shac", **{field: bad})


@pytest.mark.parametrize("field", ["critic_layer_norm", "guards"])
def test_a_switch_must_be_a_bool(field):
    with pytest.raises(ValueError, match=f"{field} must be true or false, got 'yes'"):
        TrainConfig(algo="shac", **{field: "yes"})


def test_the_cli_takes_the_switches(capsys):
    from gradstop.cli import main

    assert main(["train", "--algo", "shac", "--sim", "pointmass", "--no-guards", "--td-dones", "window",
                 "--critic-init", "uniform", "--no-critic-layer-norm", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["guards"], printed["td_dones"], printed["critic_init"], printed["critic_layer_norm"]) == (False, "window", "uniform", False)
    assert printed["time_limit"] == "bootstrap" and printed["critic_optimizer"] == "actor"


# -- 1, 2: the critic's LayerNorm and initialisation ------------------------------------------------
def test_orthogonal_init_has_gain_sqrt2_on_every_layer_and_zero_biases():
    sim = make("pointmass", dims=2)  # obs 4
    cfg = TrainConfig(algo="shac", critic_hidden=(16, 8), critic_layer_norm=False)
    w = critic_weights(cfg, sim)
    shapes = [a.shape for a in w]
    assert shapes == [(16, 4), (16,), (8, 16), (8,), (1, 8), (1,)]
    for W, b in zip(w[0::2], w[1::2]):
        gram = W.T @ W if W.shape[0] > W.shape[1] else W @ W.T  # the orthonormal side, times gain² = 2
        np.testing.assert_allclose(gram, 2.0 * np.eye(len(gram)), atol=1e-12)
        assert not b.any()
    # uniform: the earlier rule, exactly
    from gradstop import _policy

    earlier = critic_weights(dataclasses.replace(cfg, critic_init="uniform"), sim)
    for a, b in zip(earlier, _policy.init_weights([4, 16, 8, 1], cfg.seed, stream=1)):
        np.testing.assert_array_equal(a, b)


def test_the_critic_has_a_layer_norm_after_each_hidden_activation_in_both_frameworks():
    import torch

    from gradstop.trainers.jax.shac import make_critic as jax_critic
    from gradstop.trainers.torch.shac import make_critic as torch_critic

    sim_j, sim_t = make("pointmass", dims=2), make("pointmass", backend="torch", dims=2)
    cfg = TrainConfig(algo="shac", critic_hidden=(16, 8), dtype="float64")
    cj, ct = jax_critic(cfg, sim_j), torch_critic(cfg, sim_t)
    kinds = [type(m).__name__ for m in ct]
    assert kinds == ["Linear", "ELU", "LayerNorm", "Linear", "ELU", "LayerNorm", "Linear"]
    assert len(cj.norms) == 2
    obs = np.random.default_rng(0).normal(size=(5, 4)) * 3
    # the same weights (LayerNorm's scale and offset moved too) give the same values
    from gradstop.jax import get_weights as jget, set_weights as jset
    from gradstop.torch import get_weights as tget

    w = [a + 0.1 * np.random.default_rng(i).normal(size=a.shape) for i, a in enumerate(tget(ct))]
    cj = jset(cj, w)
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in jget(cj)]), np.concatenate([a.ravel() for a in w]))
    from gradstop.torch import set_weights as tset

    tset(ct, w)
    np.testing.assert_allclose(np.asarray(cj(obs)), ct(torch.as_tensor(obs)).detach().numpy(), rtol=1e-12)
    # and the normalisation is there: each hidden layer's output has mean offset and spread scale
    h = torch.as_tensor(obs)
    for m in list(ct)[:3]:
        h = m(h)
    g, b = ct[2].weight.detach(), ct[2].bias.detach()
    z = ((h.detach() - b) / g).numpy()
    np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.var(-1), 1.0, rtol=1e-4)  # var/(var + 1e-5)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in torch_critic(dataclasses.replace(cfg, critic_layer_norm=False), sim_t))


# -- 3: the critic's optimizer ---------------------------------------------------------------------
def test_the_critic_optimizer_follows_the_config_or_the_earlier_fixed_adam():
    sim_t, sim_j = make("pointmass", backend="torch"), make("pointmass")
    cfg = TrainConfig.for_algo("shac", backend="torch", adam_eps=1e-5, **TINY)
    group = program_for(cfg, sim_t).critic_opt.param_groups[0]
    assert (group["eps"], group["betas"]) == (1e-5, (0.7, 0.95))
    adamw = program_for(dataclasses.replace(cfg, optimizer="adamw", weight_decay=0.03), sim_t).critic_opt
    assert type(adamw).__name__ == "AdamW" and adamw.param_groups[0]["weight_decay"] == 0.03
    earlier = program_for(dataclasses.replace(cfg, optimizer="adamw", critic_optimizer="adam"), sim_t).critic_opt
    assert type(earlier).__name__ == "Adam" and earlier.param_groups[0]["eps"] == 1e-8
    assert earlier.param_groups[0]["weight_decay"] == 0
    jax_cfg = dataclasses.replace(cfg, backend="jax")
    hyper = program_for(jax_cfg, sim_j).state["critic_opt"].hyperparams
    close = lambda a, b: np.isclose(float(a), b, rtol=1e-6)  # noqa: E731 -- held in the parameters' dtype, float32 here
    assert close(hyper["eps"], 1e-5) and close(hyper["b1"], 0.7) and close(hyper["b2"], 0.95)
    hyper = program_for(dataclasses.replace(jax_cfg, optimizer="adamw", weight_decay=0.03), sim_j).state["critic_opt"].hyperparams
    assert close(hyper["weight_decay"], 0.03) and close(hyper["eps"], 1e-5)
    hyper = program_for(dataclasses.replace(jax_cfg, optimizer="adamw", critic_optimizer="adam"), sim_j).state["critic_opt"].hyperparams
    assert close(hyper["eps"], 1e-8) and "weight_decay" not in hyper


# -- 4: TD(λ) with per-step dones --------------------------------------------------------------------
def test_td_lambda_restarts_at_a_done_step_as_computed_by_hand():
    # h = 3, two environments: env 0 terminates at x_2 (done after step 1, V there 0), env 1 at x_1 (done after step 0)
    g, lam = 0.9, 0.5
    c = np.asarray([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]])
    v = np.asarray([[10.0, 0.0], [0.0, 40.0], [30.0, 60.0]])  # V(x_{i+1}); 0 where terminated
    dones = np.asarray([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # the last step always ends the window
    env0 = [(1 - lam) * (c[0, 0] + g * v[0, 0]) + lam * (c[0, 0] + g * c[1, 0] + g * g * v[1, 0]),  # 2 steps to its done
            c[1, 0] + g * v[1, 0],
            c[2, 0] + g * v[2, 0]]
    env1 = [c[0, 1] + g * v[0, 1],
            (1 - lam) * (c[1, 1] + g * v[1, 1]) + lam * (c[1, 1] + g * c[2, 1] + g * g * v[2, 1]),
            c[2, 1] + g * v[2, 1]]
    got = np.stack(td_lambda(c, v, g, lam, dones))
    np.testing.assert_allclose(got, np.stack([env0, env1], -1), rtol=1e-14)
    # no done inside the window: exactly the earlier recursion (dones=None), bit for bit
    rng = np.random.default_rng(1)
    costs, values = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    np.testing.assert_array_equal(np.stack(td_lambda(costs, values, 0.99, 0.95, np.zeros((6, 3)))),
                                  np.stack(td_lambda(costs, values, 0.99, 0.95)))
    # and the frameworks' arrays give the same numbers
    import jax.numpy as jnp
    import torch

    for xp in (jnp.asarray, torch.as_tensor):
        np.testing.assert_allclose(np.stack([to_np(t) for t in td_lambda(xp(c), xp(v), g, lam, xp(dones))]), got, rtol=1e-14)


class Falls(PointMass):
    """A point mass whose episode ends early where its first coordinate passes 0.3 (``sim.terminated``)."""

    def terminated(self, x):
        return x[..., 0] * 0 + (x[..., 0] > 0.3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_termination_inside_the_window_enters_the_critics_targets_at_its_step(backend):
    import gradstop as gs

    sim = Falls(backend=backend, dims=1)
    cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", **TINY)
    program = program_for(cfg, sim)
    x0 = np.asarray([[0.0, 1.0], [0.0, 5.0], [-0.5, 0.0], [0.2, 2.0]])  # moving right fast: terminates mid-window
    window = Window(sim, lambda o: o[..., 0] * 0 + 7.0, cfg.gamma, cfg.window, cfg.time_limit)
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    x = xp.asarray(x0, dtype=xp.float64)
    ends = x[:, 0] * 0
    policy = gs.jax.mlp(0, 2, 1, hidden=(4,), zero_last=True) if backend == "jax" else gs.torch.mlp(2, 1, hidden=(4,), zero_last=True).double()
    out = gs.rollout(policy, window, horizon=cfg.window, x0=window.wrap(x, ends))
    states = out.states.detach() if backend == "torch" else out.states
    program.value_fn = lambda target: (lambda o: o[..., 0] * 0 + 7.0)  # a known target critic (JAX)
    program._value = lambda o: o[..., 0] * 0 + 7.0  # (torch)
    _, targets, vmax = (program._targets(None, out, ends) if backend == "jax" else program._targets(out, ends))
    xs = to_np(states)[..., :2]
    died = (xs[1:, :, 0] > 0.3).astype(float)  # (h, B): terminated at x_{i+1}
    assert died[:-1].any() and not died[:, 2].any()  # the case is one
    costs = to_np(sim.cost(states[1:][..., :2], out.actions.detach() if backend == "torch" else out.actions))
    v = 7.0 * (1 - died)
    expected = np.stack(td_lambda(costs, v, cfg.gamma, cfg.td_lambda, died))
    np.testing.assert_allclose(to_np(targets).reshape(expected.shape), expected, rtol=1e-12)
    assert vmax == 7.0
    # the earlier variant: V everywhere inside the window, the termination seen only at its end
    program.config = dataclasses.replace(cfg, td_dones="window")
    _, targets, _ = (program._targets(None, out, ends) if backend == "jax" else program._targets(out, ends))
    v = np.full_like(v, 7.0)
    v[-1] = 7.0 * (1 - died[-1])
    np.testing.assert_allclose(to_np(targets).reshape(expected.shape), np.stack(td_lambda(costs, v, cfg.gamma, cfg.td_lambda)),
                               rtol=1e-12)


@pytest.mark.slow
def test_jax_and_torch_take_the_same_steps_with_terminations_inside_windows_in_float64():
    runs = []
    for backend in BACKENDS:
        cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", **{**TINY, "epochs": 2, "updates_per_epoch": 3})
        result = train(cfg, sim=Falls(backend=backend, dims=1))
        runs.append(np.asarray([[float(u[k]) for k in ("loss", "grad_norm", "critic_loss")] for u in result.updates]))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-10)


# -- 5: the time limit -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_time_limit_end_bootstraps_with_the_target_critics_value(backend):
    sim = Falls(backend=backend, dims=1)
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    x = xp.asarray([[-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=xp.float64)  # the second has terminated
    ends = xp.asarray([1.0, 1.0, 0.0], dtype=xp.float64)  # the first two reach the time limit
    value = lambda o: o[..., 0] * 0 + 7.0  # noqa: E731
    boot = Window(sim, value, gamma=0.5, window=2, time_limit="bootstrap")
    term = Window(sim, value, gamma=0.5, window=2, time_limit="terminal")
    tc = to_np(sim.terminal_cost(x))
    # at the time limit: V (also where terminated, as published), else V where alive; the earlier: terminal cost there
    np.testing.assert_allclose(to_np(boot.terminal_cost(boot.wrap(x, ends))), [7.0 / 2, 7.0 / 2, 7.0 / 2])
    np.testing.assert_allclose(to_np(term.terminal_cost(term.wrap(x, ends))), [tc[0] / 2, tc[1] / 2, 7.0 / 2])
    assert abs(tc[0] - 7.0) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_critics_last_target_at_a_time_limit_is_cost_plus_discounted_value(backend):
    import gradstop as gs

    sim = make("pointmass", backend=backend, dims=1)
    cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", **TINY)
    program = program_for(cfg, sim)
    value = lambda o: (o ** 2).sum(-1) + 1.0  # noqa: E731
    program.value_fn = lambda target: value
    program._value = value
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    x = xp.asarray([[0.5, 0.1], [-0.3, 0.2]], dtype=xp.float64)
    ends = x[:, 0] * 0 + 1
    window = Window(sim, value, cfg.gamma, cfg.window, "bootstrap")
    policy = gs.jax.mlp(0, 2, 1, hidden=(4,)) if backend == "jax" else gs.torch.mlp(2, 1, hidden=(4,), seed=0).double()
    out = gs.rollout(policy, window, horizon=cfg.window, x0=window.wrap(x, ends))
    acts = out.actions.detach() if backend == "torch" else out.actions
    states = out.states.detach() if backend == "torch" else out.states
    last_cost = to_np(sim.cost(states[-1][..., :2], acts[-1]))
    for mode, end in (("bootstrap", to_np(value(sim.obs(states[-1][..., :2])))), ("terminal", to_np(sim.terminal_cost(states[-1][..., :2])))):
        program.config = dataclasses.replace(cfg, time_limit=mode)
        _, targets, _ = (program._targets(None, out, ends) if backend == "jax" else program._targets(out, ends))
        np.testing.assert_allclose(to_np(targets).reshape(cfg.window, 2)[-1], last_cost + cfg.gamma * end, rtol=1e-12)


# -- 6: the guards -----------------------------------------------------------------------------------
def test_the_guards_name_the_update_the_quantity_and_the_fix():
    cfg = TrainConfig.for_algo("shac", **TINY)  # 2 updates per epoch
    ok = dict(finite=[True, True], grad_norm=[1.0, 2.0], value_max=[3.0, 4.0])
    check_guards(cfg, ok, epoch=0)
    with pytest.raises(GuardError, match=r"SHAC stopped at update 4 \(epoch 2\), flow none: the target critic's value "
                                         r"reached \|V\| = 2e\+06 > 1e\+06; lower the critic's learning rate \(--critic-lr\)"
                                         r".*pass --no-guards \(guards=False\) to train on") as info:
        check_guards(cfg, dict(ok, value_max=[3.0, 2e6]), epoch=1)
    assert isinstance(info.value, NonFiniteError) and (info.value.update, info.value.epoch) == (4, 2)
    with pytest.raises(GuardError, match=r"update 1 \(epoch 1\).*gradient norm before clipping is 3e\+06 > 1e\+06; lower "
                                         r"the learning rate \(--lr\)"):
        check_guards(cfg, dict(ok, grad_norm=[3e6, 1.0]), epoch=0)
    check_guards(cfg, dict(ok, grad_norm=[np.nan, 3e6], finite=[False, True]), epoch=0)  # the non-finite stop comes first
    check_guards(dataclasses.replace(cfg, guards=False), dict(ok, grad_norm=[3e6, 3e6]), epoch=0)
    assert GUARD_LIMIT == 1e6


class Loud(PointMass):
    """A point mass whose cost is 1e10 times too large: the actor's gradient passes the guard at once."""

    def cost(self, x_next, a):
        return 1e10 * super().cost(x_next, a)


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_a_run_whose_gradient_explodes_stops_with_the_guards_message(backend):
    cfg = TrainConfig.for_algo("shac", backend=backend, **{**TINY, "hidden": (4,), "critic_hidden": (4,)})
    with pytest.raises(GuardError, match=r"SHAC stopped at update 1 \(epoch 1\), flow none: the actor's gradient norm"):
        train(cfg, sim=Loud(backend=backend, dims=1))
