"""SHAC as published (Xu et al., ICLR 2022; NVlabs/DiffRL): each switch changes what it should, the earlier variant
stays reproducible by config, and JAX and torch still agree in float64."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest

from gradstop.trainers import NonFiniteError, TrainConfig, train
from gradstop.trainers.config import ADDED_LATER, ALGO_DEFAULTS, RUN_ONLY
from gradstop.trainers.run import program_for
from gradstop.trainers.shac import GUARD_LIMIT, GuardError, Window, check_guards, critic_weights, sane, td_lambda
from sims import make
from sims.pointmass import PointMass

BACKENDS = ["jax", "torch"]
PUBLISHED = dict(critic_layer_norm=True, critic_init="orthogonal", critic_optimizer="actor", td_dones="step",
                 time_limit="bootstrap", guards=True, actor_layer_norm=True, action_squash="tanh", obs_norm=True)
EARLIER = dict(critic_layer_norm=False, critic_init="uniform", critic_optimizer="adam", td_dones="window",
               time_limit="terminal", guards=False, actor_layer_norm=False, action_squash="none", obs_norm=False)
# published values of fields older than config files: an old file holds its own (the dataclass's) values of them
PUBLISHED_OLD_FIELDS = dict(policy="gaussian", init_std=math.exp(-1.0))
EARLIER_OLD_FIELDS = dict(policy="deterministic", init_std=0.5)
TINY = dict(sim="pointmass", horizon=8, window=4, batch=4, epochs=1, updates_per_epoch=2, hidden=(8,), critic_hidden=(8,),
            critic_iterations=1, critic_minibatches=2, test_size=4)


def to_np(a):
    return np.asarray(a.detach()) if hasattr(a, "detach") else np.asarray(a)


# -- the config -----------------------------------------------------------------------------------
def test_shac_takes_the_published_values_and_bptt_and_old_files_the_earlier_ones():
    published, earlier = {**PUBLISHED, **PUBLISHED_OLD_FIELDS}, {**EARLIER, **EARLIER_OLD_FIELDS}
    assert {k: ALGO_DEFAULTS["shac"][k] for k in published} == published
    assert {k: getattr(TrainConfig(algo="shac"), k) for k in published} == published
    assert math.log(TrainConfig(algo="shac").init_std) == -1.0  # the published log σ, exactly
    assert {k: getattr(TrainConfig(), k) for k in earlier} == earlier  # BPTT ignores them; the dataclass keeps the old
    assert {k: ADDED_LATER[k] for k in EARLIER} == EARLIER
    assert TrainConfig(algo="shac", guards=False, td_dones="window").td_dones == "window"  # a field given wins
    # a SHAC config file written before these fields existed: the earlier variant, with the hash it had then
    new = TrainConfig.for_algo("shac", **TINY)
    later = ("model_use", "max_seconds", "until_done")  # fields added after these: absent from such a file too
    old = {**{k: v for k, v in new.to_dict().items() if k not in PUBLISHED and k not in later}, **EARLIER_OLD_FIELDS}
    loaded = TrainConfig.from_dict(old)
    assert {k: getattr(loaded, k) for k in earlier} == earlier
    before = {"compile": False, "weight_init": "torch", "adam_eps": 1e-8, "validation": False}  # ADDED_LATER until then
    identity = {k: v for k, v in old.items() if k not in RUN_ONLY and not (k in before and v == before[k])}
    assert loaded.digest() == hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    assert loaded.digest() != new.digest() and sorted(new.differences(loaded)) == sorted(
        f"{k}: {earlier[k]!r} -> {published[k]!r}" for k in published)
    assert TrainConfig(sim="pointmass", epochs=3).digest() == "a95c83bb"  # a BPTT config keeps its hash too


@pytest.mark.parametrize("field, bad, valid", [("critic_init", "xavier", "orthogonal, uniform"),
                                               ("critic_optimizer", "sgd", "actor, adam"),
                                               ("td_dones", "steps", "step, window"),
                                               ("time_limit", "bootstrapped", "bootstrap, terminal"),
                                               ("action_squash", "clamp", "tanh, clip, none")])
def test_a_bad_value_names_the_field_and_the_valid_ones(field, bad, valid):
    with pytest.raises(ValueError, match=f"unknown {field} {bad!r}; choose one of {valid}"):
        TrainConfig(algo="shac", **{field: bad})


@pytest.mark.parametrize("field", ["critic_layer_norm", "guards", "actor_layer_norm", "obs_norm"])
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
    assert main(["train", "--algo", "shac", "--sim", "pointmass", "--no-actor-layer-norm", "--action-squash", "clip",
                 "--no-obs-norm", "--policy", "deterministic", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["actor_layer_norm"], printed["action_squash"], printed["obs_norm"]) == (False, "clip", False)


@pytest.mark.parametrize("given, named", [(dict(action_squash="tanh"), "action_squash='tanh'"), (dict(obs_norm=True), "obs_norm=True")])
def test_bptt_refuses_the_shac_actors_squash_and_normalisation(given, named):
    with pytest.raises(ValueError, match=f"{named} is SHAC's .* use --algo shac, or --action-squash none --no-obs-norm"):
        TrainConfig(**given)


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
def test_a_time_limit_end_whose_observation_is_beyond_1e6_bootstraps_zero_as_published(backend):
    """The published code's fix: at an episode end whose observation before reset is non-finite or beyond ±1e6, V = 0
    (actor and critic); a window that does not end its episode there, and a sane observation, keep V."""
    sim = make("pointmass", backend=backend, dims=1)
    cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", action_squash="none", **TINY)
    program = program_for(cfg, sim)
    value = lambda o: o[..., 0] * 0 + 7.0  # noqa: E731
    program.value_fn = lambda target: value
    program._value = value
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    x = xp.asarray([[2e6, 0.0], [2e6, 0.0], [0.5, 0.0], [float("nan"), 0.0]], dtype=xp.float64)
    ends = xp.asarray([1.0, 0.0, 1.0, 1.0], dtype=xp.float64)
    assert to_np(sane(sim, x)).tolist() == [False, False, True, False]
    window = Window(sim, value, gamma=0.5, window=2, time_limit="bootstrap")
    np.testing.assert_allclose(to_np(window.terminal_cost(window.wrap(x[:3], ends[:3]))), [0.0, 7.0 / 2, 7.0 / 2])
    # the critic's last target at the time limit: c + γ·0 for the observation beyond 1e6, c + γ·V for the sane one
    import gradstop as gs

    policy = gs.jax.mlp(0, 2, 1, hidden=(4,)) if backend == "jax" else gs.torch.mlp(2, 1, hidden=(4,), seed=0).double()
    x0 = xp.asarray([[1e7, 0.0], [0.5, 0.0]], dtype=xp.float64)  # a point mass at 1e7 stays beyond 1e6 for one window
    ends = x0[:, 0] * 0 + 1
    out = gs.rollout(policy, Window(sim, value, cfg.gamma, cfg.window, "bootstrap"), horizon=cfg.window,
                     x0=window.wrap(x0, ends))
    states = out.states.detach() if backend == "torch" else out.states
    acts = out.actions.detach() if backend == "torch" else out.actions
    last_cost = to_np(sim.cost(states[-1][..., :2], acts[-1]))
    _, targets, _ = (program._targets(None, out, ends) if backend == "jax" else program._targets(out, ends))
    np.testing.assert_allclose(to_np(targets).reshape(cfg.window, 2)[-1], last_cost + cfg.gamma * np.array([0.0, 7.0]),
                               rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_critics_last_target_at_a_time_limit_is_cost_plus_discounted_value(backend):
    import gradstop as gs

    sim = make("pointmass", backend=backend, dims=1)
    cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", action_squash="none", **TINY)
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


# -- episodes that end inside a window ------------------------------------------------------------------
def published_window(policy, sim, value, x0, steps0, restart, gamma, h, T, bootstrap=True):
    """The published ``compute_actor_loss`` (NVlabs/DiffRL algorithms/shac.py) re-written for costs, torch, one window:
    auto-resetting environments (time limit T or ``sim.terminated``), the per-step charge of a done environment,
    its discount and accumulated cost cleared; also the critic's data as that loop stores it (costs, next values with
    the published rules at a done step, done mask, the observations)."""
    import torch

    x, t = x0.clone(), steps0.clone()
    gam, acc = torch.ones(len(x), dtype=x.dtype), torch.zeros(len(x), dtype=x.dtype)
    loss, rews, nvs, dones, obs = 0.0, [], [], [], []
    for i in range(h):
        obs.append(sim.obs(x).detach())
        a = policy(sim.obs(x))
        x_new = sim.step(x, a)
        c = sim.cost(x_new, a)
        t = t + 1
        done = (t >= T) | (sim.terminated(x_new) > 0)
        nv = value(sim.obs(x_new))
        at_limit = value(sim.obs(x_new)) if bootstrap else sim.terminal_cost(x_new)
        ok = (sim.obs(x_new).abs() <= 1e6).all(-1)
        nv = torch.where(done, torch.where(~ok, 0 * nv, torch.where(t < T, 0 * nv, at_limit)), nv)
        acc = acc + gam * c
        charged = done if i < h - 1 else torch.ones_like(done)  # the last step: every environment
        loss = loss + torch.where(charged, acc + gamma * gam * nv, 0 * acc).sum()
        rews.append(c.detach()), nvs.append(nv.detach()), dones.append(done.to(x.dtype))
        gam = torch.where(done, torch.ones_like(gam), gam * gamma)
        acc = torch.where(done, 0 * acc, acc)
        x = torch.where(done[:, None], restart, x_new)
        t = torch.where(done, 0 * t, t)
    return loss / (h * len(x)), (torch.stack(rews), torch.stack(nvs), torch.stack(dones), torch.stack(obs)), x, t


def episode_case(backend):
    """Four point masses in windows of 4 steps, episodes of 6: one terminates at its first step (x > 0.3) and restarts,
    two reach the time limit inside the window, one exactly at its end."""
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    x0 = xp.asarray([[0.0, 5.0], [-0.5, 0.1], [0.0, -1.0], [-0.2, 0.3]], dtype=xp.float64)
    steps = xp.asarray([0.0, 3.0, 5.0, 2.0], dtype=xp.float64)
    restart = xp.asarray([[-0.4, 0.0], [0.1, -0.2], [-0.3, 0.5], [0.2, 0.1]], dtype=xp.float64)
    return x0, steps, restart


@pytest.mark.parametrize("time_limit", ["bootstrap", "terminal"])
def test_episodes_ending_inside_the_window_give_the_published_actor_loss_gradient_and_critic_data(time_limit):
    import torch

    import gradstop as gs

    sim = Falls(backend="torch", dims=1)
    value = lambda o: (o ** 2).sum(-1) + 1.0  # noqa: E731
    policy = gs.torch.mlp(2, 1, hidden=(6,), seed=3).double()
    x0, steps, restart = episode_case("torch")
    h, T, gamma = 4, 6, 0.9
    ref_loss, (rews, nvs, dones, obs), x_end, t_end = published_window(policy, sim, value, x0, steps, restart, gamma, h, T,
                                                                        time_limit == "bootstrap")
    assert to_np(dones).tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]  # the case (step, env)
    ref_grads = torch.autograd.grad(ref_loss, list(policy.parameters()))
    window = Window(sim, value, gamma, h, time_limit, episode=T, terminations=True)
    for impl in ("native", "fused"):
        out = gs.rollout(policy, window, horizon=h, x0=window.wrap(x0, (steps + h >= T).double(), steps, restart), impl=impl)
        grads = torch.autograd.grad(out.loss, list(policy.parameters()))
        np.testing.assert_allclose(float(out.loss.detach()), float(ref_loss.detach()), rtol=1e-13)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(to_np(g), to_np(r), rtol=1e-11, atol=1e-14)
    # the critic's data: the published costs, done mask and next values give the TD(λ) targets; the observations the
    # environments were in (restart states after an end)
    cfg = TrainConfig.for_algo("shac", backend="torch", dtype="float64", time_limit=time_limit,
                               **{**TINY, "horizon": T, "window": h})
    program = program_for(cfg, sim)
    program._value = value
    got_obs, targets, _ = program._targets(out, (steps + h >= T).double(), sim, window)
    expected = np.stack(td_lambda(to_np(rews), to_np(nvs), cfg.gamma, cfg.td_lambda, to_np(dones)))
    np.testing.assert_allclose(to_np(targets).reshape(h, 4), expected, rtol=1e-12)
    np.testing.assert_allclose(to_np(got_obs), to_np(obs).reshape(-1, 2), rtol=1e-14)
    # and the environments go on from where the published loop leaves them: an episode that ends at the window's last
    # step is restarted by the trainer after the window (with the same restart state), the others by the window
    W = out.states.detach()
    last, t_last = window.current(W)[-1], window.parts(W)[3][-1]
    at_end = t_last >= T
    assert to_np(at_end).tolist() == [False, False, False, True]
    np.testing.assert_allclose(to_np(torch.where(at_end[:, None], restart, last)), to_np(x_end), rtol=1e-14)
    np.testing.assert_allclose(to_np(torch.where(at_end, 0 * t_last, t_last)), to_np(t_end))


def test_the_jax_window_runs_episodes_across_its_steps_as_the_torch_one():
    import copy

    import jax
    import torch

    import gradstop as gs

    value = lambda o: (o ** 2).sum(-1) + 1.0  # noqa: E731
    results = []
    for backend in BACKENDS:
        sim = Falls(backend=backend, dims=1)
        window = Window(sim, value, 0.9, 4, "bootstrap", episode=6, terminations=True)
        x0, steps, restart = episode_case(backend)
        X0 = window.wrap(x0, steps * 0, steps, restart)
        if backend == "jax":
            policy = gs.jax.mlp(3, 2, 1, hidden=(6,))
            for impl in ("native", "fused"):
                loss, grads = jax.value_and_grad(lambda p: gs.rollout(p, window, horizon=4, x0=X0, impl=impl).loss)(policy)
                results.append((float(loss), gs.jax.get_weights(grads)))  # the gradient in the weights' layout
        else:
            policy = gs.torch.set_weights(gs.torch.mlp(2, 1, hidden=(6,)).double(), gs.jax.get_weights(gs.jax.mlp(3, 2, 1, hidden=(6,))))
            loss = gs.rollout(policy, window, horizon=4, x0=X0).loss
            as_module = copy.deepcopy(policy)
            for p, g in zip(as_module.parameters(), torch.autograd.grad(loss, list(policy.parameters()))):
                p.data = g
            results.append((float(loss.detach()), gs.torch.get_weights(as_module)))
    ref_loss, ref_grads = results[-1]
    for loss, grads in results[:-1]:
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_window_whose_episodes_end_at_its_end_computes_what_it_did_without_episodes(backend):
    """Episodes that end only at window ends (no termination, T a multiple of h): the same loss and gradient, bit for bit."""
    import gradstop as gs

    sim = make("pointmass", backend=backend, dims=1)
    value = lambda o: (o ** 2).sum(-1) + 1.0  # noqa: E731
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    x0 = xp.asarray([[0.3, 0.1], [-0.2, 0.4], [0.1, -0.3]], dtype=xp.float64)
    steps = xp.asarray([0.0, 4.0, 4.0], dtype=xp.float64)
    ends = (steps + 4 >= 8) * 1.0
    plain, runs = Window(sim, value, 0.9, 4, "bootstrap"), Window(sim, value, 0.9, 4, "bootstrap", episode=8)
    if backend == "jax":
        import jax

        policy = gs.jax.mlp(1, 2, 1, hidden=(6,))
        a = jax.value_and_grad(lambda p: gs.rollout(p, plain, horizon=4, x0=plain.wrap(x0, ends)).loss)(policy)
        b = jax.value_and_grad(lambda p: gs.rollout(p, runs, horizon=4, x0=runs.wrap(x0, ends, steps, x0 * 0)).loss)(policy)
        pairs = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    else:
        import torch

        policy = gs.torch.mlp(2, 1, hidden=(6,), seed=1).double()
        la = gs.rollout(policy, plain, horizon=4, x0=plain.wrap(x0, ends)).loss
        lb = gs.rollout(policy, runs, horizon=4, x0=runs.wrap(x0, ends, steps, x0 * 0)).loss
        ga, gb = (torch.autograd.grad(v, list(policy.parameters())) for v in (la, lb))
        pairs = [(la, lb)] + list(zip(ga, gb))
    for u, v in pairs:
        np.testing.assert_array_equal(to_np(u), to_np(v))


@pytest.mark.slow
def test_jax_and_torch_take_the_same_steps_with_episodes_ending_inside_windows_in_float64():
    runs = []
    for backend in BACKENDS:
        cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64",
                                   **{**TINY, "horizon": 10, "window": 4, "epochs": 2, "updates_per_epoch": 3})
        result = train(cfg, sim=Falls(backend=backend, dims=1))
        runs.append(np.asarray([[float(u[k]) for k in ("loss", "grad_norm", "critic_loss")] for u in result.updates]))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-10)


def test_an_episode_shorter_than_the_window_or_not_a_multiple_of_it_with_window_dones_is_named():
    with pytest.raises(ValueError, match=r"the window \(32 steps\) is longer than the episode \(horizon=20\); shorten it "
                                         r"\(--window 20\) or lengthen the episode \(--horizon 32\)"):
        TrainConfig(algo="shac", horizon=20)
    with pytest.raises(ValueError, match=r"td_dones='window' ends episodes at window ends only, so the episode length "
                                         r"horizon=100 must be a multiple of window=32 \(e.g. --horizon 96\)"):
        TrainConfig(algo="shac", horizon=100, td_dones="window")
    assert TrainConfig(algo="shac", horizon=100).horizon == 100  # the published per-step dones: any episode length
    with pytest.raises(ValueError, match="episode must be an integer ≥ window=4"):
        Window(make("pointmass", dims=1), lambda o: o[..., 0], 0.9, 4, episode=3)


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
def test_a_run_whose_gradient_explodes_stops_with_the_guards_message(backend, tmp_path):
    """The stop names the update; the stopping update is in updates.csv, with the gradient norm that stopped it."""
    import csv

    cfg = TrainConfig.for_algo("shac", backend=backend, **{**TINY, "hidden": (4,), "critic_hidden": (4,),
                                                           "sim": f"{__name__}:Loud", "sim_params": {"dims": 1}})
    with pytest.raises(GuardError, match=r"SHAC stopped at update 1 \(epoch 1\), flow none: the actor's gradient norm"):
        train(cfg, out=tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "updates.csv")))
    assert [r["update"] for r in rows] == ["1"] and float(rows[0]["grad_norm"]) > GUARD_LIMIT


# -- 7: the actor: LayerNorm, Gaussian with log σ = −1, bounded actions ------------------------------
def policies(cfg, obs_dim=4, action_dim=2):
    from gradstop.trainers.jax.bptt import make_policy as jax_policy
    from gradstop.trainers.torch.bptt import make_policy as torch_policy

    class Shape:  # make_policy reads only the sizes
        pass

    sim = Shape()
    sim.obs_dim, sim.action_dim = obs_dim, action_dim
    return jax_policy(cfg, sim), torch_policy(cfg, sim)


def test_the_published_actor_is_a_gaussian_with_layer_norms_and_log_std_minus_one_in_both_frameworks():
    import torch

    from gradstop.jax import get_weights as jget
    from gradstop.torch import get_weights as tget

    cfg = TrainConfig(algo="shac", hidden=(16, 8), dtype="float64")
    pj, pt = policies(cfg)
    assert [type(m).__name__ for m in pt.mean] == ["Linear", "ELU", "LayerNorm", "Linear", "ELU", "LayerNorm", "Linear"]
    assert len(pj.mean.norms) == 2 and isinstance(pt.log_std, torch.nn.Parameter)
    np.testing.assert_array_equal(to_np(pt.log_std), [-1.0, -1.0])
    np.testing.assert_array_equal(np.asarray(pj.log_std), [-1.0, -1.0])
    for a, b in zip(jget(pj), tget(pt)):  # the same initial weights (PyTorch's default rule, as the published actor)
        np.testing.assert_array_equal(a, b)
    obs = np.random.default_rng(0).normal(size=(5, 4))
    eps = np.random.default_rng(1).normal(size=(5, 2))
    mean = to_np(pt(torch.as_tensor(obs)))  # given only observations: the mean (identity output)
    np.testing.assert_allclose(np.asarray(pj(obs)), mean, rtol=1e-12)
    sample = to_np(pt(torch.as_tensor(np.concatenate([obs, eps], -1))))  # with noise: a = μ + σ·ε
    np.testing.assert_allclose(sample, mean + math.exp(-1.0) * eps, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(pj(np.concatenate([obs, eps], -1))), sample, rtol=1e-12)
    # the earlier actor: no LayerNorm
    _, plain = policies(dataclasses.replace(cfg, actor_layer_norm=False, policy="deterministic"))
    assert [type(m).__name__ for m in plain] == ["Linear", "ELU", "Linear", "ELU", "Linear"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_actions_are_bounded_before_the_step_and_the_cost_with_the_frameworks_gradients(backend):
    from gradstop.trainers.shac import Task

    sim = make("pointmass", backend=backend, dims=2)
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    x = xp.asarray([[0.1, -0.2, 0.3, 0.0], [0.0, 0.5, -0.1, 0.2]], dtype=xp.float64)
    a = np.asarray([[-3.0, 0.4], [0.9, 2.5]])
    for squash, f, df in (("tanh", np.tanh, lambda v: 1 - np.tanh(v) ** 2), ("clip", lambda v: np.clip(v, -1, 1),
                                                                                lambda v: (np.abs(v) < 1).astype(float))):
        task = Task(sim, squash)
        np.testing.assert_allclose(to_np(task.step(x, xp.asarray(a))), to_np(sim.step(x, xp.asarray(f(a)))), rtol=1e-14)
        np.testing.assert_allclose(to_np(task.cost(x, xp.asarray(a))), to_np(sim.cost(x, xp.asarray(f(a)))), rtol=1e-14)
        # d(step)/da through the bound: the framework's tanh' or clip' (zero outside [−1, 1]) times the sim's
        if backend == "jax":
            import jax

            got = np.asarray(jax.grad(lambda v: task.step(x, v)[..., 2:].sum())(xp.asarray(a)))
            inner = np.asarray(jax.grad(lambda v: sim.step(x, v)[..., 2:].sum())(xp.asarray(f(a))))
        else:
            import torch

            v = torch.tensor(a, requires_grad=True)
            task.step(x, v)[..., 2:].sum().backward()
            got = v.grad.numpy()
            w = torch.tensor(f(a), requires_grad=True)
            sim.step(x, w)[..., 2:].sum().backward()
            inner = w.grad.numpy()
        np.testing.assert_allclose(got, df(a) * inner, rtol=1e-12, atol=1e-15)
    assert Task(sim, "none").step(x, xp.asarray(a)) is not None
    with pytest.raises(ValueError, match="unknown action_squash 'clamp'; choose one of tanh, clip, none"):
        Task(sim, "clamp")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_window_samples_mu_plus_sigma_eps_with_the_runs_noise_and_steps_the_squashed_action(backend):
    from gradstop.rollout import rollout
    from gradstop.trainers.data import Data

    sim = make("pointmass", backend=backend, dims=1)
    cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", **TINY)
    program = program_for(cfg, sim)
    data = Data.from_config(sim, cfg)
    eps = data.noise(0, cfg.window)  # (updates, batch, window, action_dim): the run's own stream, both frameworks
    assert eps.shape == (2, 4, 4, 1)
    state = program.state if backend == "jax" else None
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    noise = xp.asarray(eps[0], dtype=xp.float64)
    actor_sim, X0, task, _, _ = program._window(state, noise) if backend == "jax" else program._window(noise)
    policy = program.policy
    out = rollout(policy, actor_sim, horizon=cfg.window, x0=X0)
    xs = to_np(out.states)[..., :2]
    acts = to_np(out.actions)
    mean = policy.mean
    for i in range(cfg.window):  # a_i = μ(normalised o_i) + e^{-1}·ε_i; x_{i+1} = step(x_i, tanh(a_i))
        o = xp.asarray(to_np(task.obs(xp.asarray(xs[i]))))
        np.testing.assert_allclose(acts[i], to_np(mean(o)) + math.exp(-1.0) * eps[0, :, i], rtol=1e-12)
        np.testing.assert_allclose(xs[i + 1], to_np(sim.step(xp.asarray(xs[i]), xp.asarray(np.tanh(acts[i])))), rtol=1e-12)
    np.testing.assert_allclose(to_np(task.obs(xp.asarray(xs[0]))), to_np(sim.obs(xp.asarray(xs[0]))) / math.sqrt(1 + 1e-5),
                               rtol=1e-14)  # the statistics' start: mean 0, var 1
    # reparameterised: the loss's gradient reaches the log-std (through σ·ε), which the optimizer then moves
    program.run_epoch(data, 0)
    log_std = program.weights()[-1]
    assert log_std.shape == (1,) and np.isfinite(log_std).all() and abs(float(log_std[0]) + 1.0) > 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_runs_the_mean_on_the_bounded_task_with_the_current_statistics(backend):
    from gradstop.rollout import rollout
    from gradstop.trainers.data import Data
    from gradstop.trainers.shac import Task

    sim = make("pointmass", backend=backend, dims=1)
    cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", **TINY)
    program = program_for(cfg, sim)
    data = Data.from_config(sim, cfg)
    program.run_epoch(data, 0)
    rms = program.state["rms"] if backend == "jax" else program.rms
    assert not np.allclose(to_np(rms[0]), 0.0)
    xp = __import__("jax.numpy" if backend == "jax" else "torch", fromlist=["asarray"])
    task = Task(sim, "tanh", (rms[0], rms[1]))
    by_hand = rollout(program.policy.mean, task, horizon=cfg.horizon, x0=xp.asarray(data.test, dtype=xp.float64)).loss
    np.testing.assert_allclose(program.evaluate(data.test)["test_loss"], float(to_np(by_hand)), rtol=1e-12)


# -- 8: observation normalisation ------------------------------------------------------------------
def test_rms_update_is_the_mean_and_variance_of_all_it_saw():
    from gradstop.trainers.shac import RMS_COUNT0, rms_init, rms_update

    rng = np.random.default_rng(3)
    batches = [rng.normal(2.0, 3.0, size=(n, 3)) for n in (5, 40, 7)]
    rms = rms_init(3, np.zeros)
    for b in batches:
        rms = rms_update(rms, b)
    seen = np.concatenate(batches)
    n = len(seen) + RMS_COUNT0  # the start counts as RMS_COUNT0 samples of mean 0 and variance 1
    mean = seen.sum(0) / n
    np.testing.assert_allclose(rms[0], mean, rtol=1e-12)
    np.testing.assert_allclose(rms[1], (RMS_COUNT0 * 1.0 + (seen ** 2).sum(0)) / n - mean ** 2, rtol=1e-10)
    np.testing.assert_allclose(rms[0], seen.mean(0), rtol=1e-5)  # numpy's, up to the start's weight
    np.testing.assert_allclose(rms[1], seen.var(0), rtol=1e-5)
    assert rms[2] == pytest.approx(n)


def test_the_statistics_take_each_windows_observations_and_stay_frozen_inside_it(monkeypatch):
    import torch

    import gradstop.trainers.torch.shac as tshac
    from gradstop.trainers.data import Data

    sim = make("pointmass", backend="torch", dims=1)
    cfg = TrainConfig.for_algo("shac", backend="torch", dtype="float64", **TINY)
    program = program_for(cfg, sim)
    data = Data.from_config(sim, cfg)
    seen, frozen, real_update, real_task = [], [], tshac.rms_update, tshac.make_task
    monkeypatch.setattr(tshac, "rms_update", lambda rms, x: seen.append(x.numpy().copy()) or real_update(rms, x))
    monkeypatch.setattr(tshac, "make_task", lambda s, c, stats=None: (
        frozen.append(None if stats is None else [a.numpy().copy() for a in stats]) or real_task(s, c, stats)))
    after, real_targets = [], program._targets

    def targets(out, ends, task=None, window=None):  # the critic's observations: normalised by the window's frozen statistics
        obs, t, v = real_targets(out, ends, task, window)
        raw = sim.obs(out.states.detach()[:-1, :, :2]).reshape(-1, 2)
        np.testing.assert_allclose(obs.numpy(), ((raw - task.stats[0]) / torch.sqrt(task.stats[1] + 1e-5)).numpy(), rtol=1e-12)
        return obs, t, v

    program._targets = targets
    for epoch in range(2):
        program.run_epoch(data, epoch)
        after.append([a.numpy().copy() for a in program.rms])
    windows = [f for f in frozen if f is not None]
    assert len(seen) == 4 and len(windows) == 4
    np.testing.assert_array_equal(windows[0][0], 0.0)  # the first window sees the start: mean 0, var 1
    np.testing.assert_array_equal(windows[0][1], 1.0)
    # each window saw its start x_0 … x_{h−1} and the environments' next states: (h + 1)·B samples
    assert all(s.shape == ((cfg.window + 1) * cfg.batch, 2) for s in seen)
    np.testing.assert_allclose(seen[0][: cfg.batch], to_np(sim.obs(torch.as_tensor(data.start()))), rtol=1e-14)
    np.testing.assert_array_equal(seen[1][: cfg.batch], seen[0][-cfg.batch:])  # the next window starts where this one ended
    from gradstop.trainers.shac import RMS_COUNT0

    everything = np.concatenate(seen)
    n = len(everything) + RMS_COUNT0
    np.testing.assert_allclose(after[-1][0], everything.sum(0) / n, rtol=1e-10)
    np.testing.assert_allclose(after[-1][1], (RMS_COUNT0 + (everything ** 2).sum(0)) / n - (everything.sum(0) / n) ** 2, rtol=1e-8)
    # window u used the statistics after the windows before it, unchanged while it ran
    before = [(np.zeros(2), np.ones(2))]
    rms = (np.zeros(2), np.ones(2), RMS_COUNT0)
    for s in seen[:-1]:
        rms = real_update(rms, s)
        before.append(rms[:2])
    for w, st in zip(windows, before):
        np.testing.assert_allclose(w[0], st[0], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(w[1], st[1], rtol=1e-12)


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_shac_with_obs_norm_resumes_from_a_checkpoint_to_the_same_numbers(backend, tmp_path, monkeypatch):
    import importlib

    cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", **{**TINY, "epochs": 3, "checkpoint_every": 1})
    assert cfg.obs_norm and cfg.policy == "gaussian"
    whole = train(cfg, out=tmp_path / "whole")
    program = importlib.import_module(f"gradstop.trainers.{backend}.shac").SHAC
    real = program.run_epoch

    def cut_in_epoch_2(self, data, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, data, epoch)

    monkeypatch.setattr(program, "run_epoch", cut_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut")
    monkeypatch.setattr(program, "run_epoch", real)
    resumed = train(cfg, out=tmp_path / "cut")
    keys = ("loss", "grad_norm", "critic_loss")
    assert [[u[k] for k in keys] for u in resumed.updates] == [[u[k] for k in keys] for u in whole.updates]
    assert [e["test_loss"] for e in resumed.evals] == [e["test_loss"] for e in whole.evals]


@pytest.mark.slow
def test_jax_and_torch_take_the_same_steps_with_the_published_actor_in_float64():
    from gradstop.trainers.data import Data

    runs, stats = [], []
    for backend in BACKENDS:
        cfg = TrainConfig.for_algo("shac", backend=backend, dtype="float64", **{**TINY, "epochs": 2})
        sim = make("pointmass", backend=backend, dims=1)
        program, data = program_for(cfg, sim), Data.from_config(sim, cfg)
        rows = []
        for epoch in range(cfg.epochs):
            m = program.run_epoch(data, epoch)
            rows += [[float(m[k][i]) for k in ("loss", "grad_norm", "critic_loss")] for i in range(len(m["loss"]))]
            rows.append([program.evaluate(data.test)["test_loss"]] * 3)
        runs.append(np.asarray(rows))
        rms = program.state["rms"] if backend == "jax" else program.rms
        stats.append(np.concatenate([np.ravel(to_np(a)) for a in rms] + [program.weights()[-1]]))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-10)
    np.testing.assert_allclose(stats[0], stats[1], rtol=1e-10)


def test_the_noisy_window_resets_with_zero_noise_for_the_rollouts_structure_check():
    """A rollout checks a pytree x0 (Brax) against ``sim.reset(0, 1)``: the Gaussian actor's Noisy sim resets too."""
    import sims
    from gradstop.trainers.noise import Noisy

    noisy = Noisy(sims.make("pointmass", backend="numpy"), horizon=3)
    X = noisy.reset(np.random.default_rng(0), 2)
    assert X.shape == (2, noisy.state_dim) and not X[:, noisy.sim.state_dim:].any()
