"""Brax environments behind the simulator protocol: pytree states through every flow and both impls.

Brax's compile times (30–60 s per gradient on these machines) put every gradient test in the
slow target; the default run checks construction, errors and one forward rollout.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("brax", reason="Brax simulators need the brax extra: pip install 'gradstop[brax]'")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import gradstop as gs  # noqa: E402
from helpers import assert_close  # noqa: E402
from sims import make  # noqa: E402

FLOWS = ["none", "input", "state", "all", "decay:0.8", "input+truncate:3", "combined", "directional"]
ENVS = ["inverted_pendulum", "reacher", "hopper", "halfcheetah", "ant"]


def _policy(sim, seed=0):
    return gs.jax.mlp(seed, sim.obs_dim, sim.action_dim, hidden=(16, 16), dtype=jnp.float32)


def _flat(tree):
    return np.concatenate([np.ravel(w) for w in gs.get_weights(tree)])


@pytest.fixture(scope="module")
def pendulum():
    return make("brax:inverted_pendulum", pipeline="spring")


def test_brax_sim_describes_itself(pendulum):
    assert pendulum.describe() == {"name": "brax:inverted_pendulum", "pipeline": "spring",
                                   "solver_iterations": None, "dt": pytest.approx(pendulum.dt)}
    assert (pendulum.obs_dim, pendulum.action_dim) == (4, 1)


@pytest.mark.parametrize("make_it, message", [
    (lambda: make("brax:no_such_env"), "unknown Brax environment 'no_such_env'; this Brax has: "),
    (lambda: make("brax:hopper", backend="torch"), "runs in JAX only"),
    (lambda: make("brax:hopper", pipeline="euler"), "unknown pipeline 'euler'"),
    (lambda: make("brax:hopper", solver_iterations=2), "solver_iterations applies to pipeline='mjx' only"),
    (lambda: make("brax:hopper", pipeline="mjx", solver_iterations=0), "solver_iterations must be an integer ≥ 1"),
    (lambda: make("brax:hopper", poles=2), "no parameter 'poles'"),
    (lambda: make("brax:hopper", preset="literature"), "has no presets"),
])
def test_brax_errors_name_the_fix(make_it, message):
    with pytest.raises(ValueError) as err:
        make_it()
    assert message in str(err.value)


def test_pytree_x0_is_checked(pendulum):
    policy = _policy(pendulum)
    with pytest.raises(ValueError, match="structure of this sim's states"):
        gs.rollout(policy, pendulum, horizon=2, x0=jnp.zeros((1, 4)))


@pytest.mark.slow  # Brax compiles: about 40 s
def test_rollout_of_pytree_states_is_time_major(pendulum):
    policy = _policy(pendulum)
    out = jax.jit(lambda p: gs.rollout(p, pendulum, horizon=3, key=jax.random.key(1), batch=2))(policy)
    assert out.states.obs.shape == (4, 2, 4)
    assert out.states.pipeline_state.q.shape == (4, 2, 2)
    assert out.actions.shape == (3, 2, 1) and out.costs.shape == (3, 2) and out.terminal.shape == (2,)
    np.testing.assert_allclose(out.states.obs[1:], jax.vmap(pendulum.step)(
        jax.tree.map(lambda v: v[:-1], out.states), out.actions).obs, rtol=1e-6)


def _gradients(sim, flows, impl, memory="residuals", horizon=5, batch=2):
    policy = _policy(sim)
    x0 = sim.reset(3, batch)
    fn = jax.jit(lambda p: gs.gradients(p, sim, flows=flows, horizon=horizon, x0=x0, impl=impl, memory=memory))
    return fn(policy)


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["residuals", "recompute"])
def test_fused_equals_native_every_flow_on_brax(pendulum, memory):
    """float32 (Brax's dtype): within 1e-5 of native, relative to each gradient's largest entry."""
    native = _gradients(pendulum, FLOWS, "native")
    fused = _gradients(pendulum, FLOWS, "fused", memory)
    assert_close(np.asarray(fused.loss), np.asarray(native.loss), dtype="float32", what="loss")
    for flow in FLOWS:
        g_native = _flat(native.grads[flow])
        assert np.abs(g_native).max() > 0, f"{flow}: the gradient is zero, the comparison would prove nothing"
        assert_close(_flat(fused.grads[flow]), g_native, dtype="float32", what=flow)


@pytest.mark.slow
@pytest.mark.parametrize("env", ENVS[1:])
def test_fused_equals_native_on_brax_envs(env):
    sim = make(f"brax:{env}", pipeline="spring")
    native = _gradients(sim, ["none", "input"], "native", horizon=3)
    fused = _gradients(sim, ["none", "input"], "fused", horizon=3)
    for flow in ("none", "input"):
        g_native = _flat(native.grads[flow])
        assert np.isfinite(g_native).all() and np.abs(g_native).max() > 0
        assert_close(_flat(fused.grads[flow]), g_native, dtype="float32", what=f"{env} {flow}")


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["positional", "generalized", "mjx"])
def test_every_differentiable_pipeline_gives_a_finite_gradient(pipeline):
    sim = make("brax:inverted_pendulum", pipeline=pipeline)
    policy, x0 = _policy(sim), sim.reset(0, 1)
    g = jax.jit(jax.grad(lambda p: gs.rollout(p, sim, stop="none", horizon=3, x0=x0, impl="fused").loss))(policy)
    flat = _flat(g)
    assert np.isfinite(flat).all() and np.abs(flat).max() > 0


# -- surrogate Jacobians on pytree states ----------------------------------------------------------
@pytest.fixture
def brax_surrogates(monkeypatch):
    """Brax variants as surrogates, registered in a per-test copy of the registry."""
    import sims

    monkeypatch.setattr(sims, "_REGISTRY", dict(sims._REGISTRY))
    for name, params in {"test-pendulum-spring": dict(pipeline="spring"), "test-pendulum-positional": dict(pipeline="positional"),
                         "test-pendulum-mjx1": dict(pipeline="mjx", solver_iterations=1)}.items():
        sims.register(name, lambda backend, p=params, **kw: make("brax:inverted_pendulum", **p))


def _grad(sim, flow, impl, horizon=3):
    policy, x0 = _policy(sim), sim.reset(3, 2)
    return _flat(jax.jit(jax.grad(lambda p: gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x0, impl=impl).loss))(policy))


@pytest.mark.slow  # two spring compiles per implementation
@pytest.mark.parametrize("impl", ["native", "fused"])
def test_a_brax_simulator_as_its_own_surrogate_changes_nothing(pendulum, brax_surrogates, impl):
    plain = _grad(pendulum, "none", impl)
    assert np.abs(plain).max() > 0
    assert_close(_grad(pendulum, "none+surrogate:test-pendulum-spring", impl), plain, dtype="float32", what=impl)


@pytest.mark.slow  # MJX compiles: about 3 min
def test_fewer_mjx_solver_iterations_as_surrogate_differentiate_the_full_solver(brax_surrogates):
    """MJX with 4 solver iterations has no reverse mode (its solver is a while loop); with the 1-iteration solver as
    surrogate the forward is still the 4-iteration solver's, exactly, and the gradient is finite, native = fused."""
    full = make("brax:inverted_pendulum", pipeline="mjx", solver_iterations=4)
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work for lax.while_loop"):
        _grad(full, "none", "native")
    native, fused = (_grad(full, "none+surrogate:test-pendulum-mjx1", impl) for impl in ("native", "fused"))
    assert np.isfinite(native).all() and np.abs(native).max() > 0
    assert_close(fused, native, dtype="float32", what="fused vs native")
    policy, x0 = _policy(full), full.reset(3, 2)
    states = [gs.rollout(policy, full, stop=flow, horizon=3, x0=x0).states.pipeline_state.q
              for flow in ("none", "none+surrogate:test-pendulum-mjx1")]
    np.testing.assert_array_equal(states[1], states[0])


@pytest.mark.slow  # builds two Brax systems
def test_a_brax_surrogate_of_another_pipeline_is_refused_naming_the_fix(pendulum, brax_surrogates):
    with pytest.raises(ValueError, match=r"the surrogate 'brax:inverted_pendulum \(pipeline positional\)' has a state tree "
                                         r"other than .*use the same environment and pipeline with other parameters"):
        gs.rollout(_policy(pendulum), pendulum, stop="none+surrogate:test-pendulum-positional", horizon=2, x0=pendulum.reset(0, 1))
    with pytest.raises(ValueError, match="the surrogate 'pointmass' has flat states where the simulator 'brax:inverted_pendulum \\(pipeline spring\\)' has pytree ones"):
        gs.rollout(_policy(pendulum), pendulum, stop="none+surrogate:pointmass", horizon=2, x0=pendulum.reset(0, 1))


# -- the trainers on Brax tasks (slow: each compiles its epoch for about a minute) -----------------
@pytest.mark.slow
@pytest.mark.parametrize("env", ["inverted_pendulum", "reacher", "hopper"])
def test_bptt_trains_on_a_brax_task_and_reports_the_episode_reward(env, tmp_path):
    from gradstop.trainers import TrainConfig, train

    cfg = TrainConfig(sim=f"brax:{env}", flow="input+truncate:8", horizon=16, batch=4, epochs=3, updates_per_epoch=4,
                      hidden=(32,), test_size=8, lr=1e-3, clip_norm=1.0)
    result = train(cfg, out=tmp_path / "run")
    rewards = [e["test_reward"] for e in result.evals]
    assert len(rewards) == 4 and np.isfinite(rewards).all() and np.isfinite([float(u["loss"]) for u in result.updates]).all()
    if env != "inverted_pendulum":  # its reward is the constant 1 per step; the cost gradient comes from COSTS
        np.testing.assert_allclose(rewards, [-e["test_loss"] for e in result.evals], rtol=1e-5)  # cost = −reward
    assert result.summary["final_test_reward"] == pytest.approx(rewards[-1])
    first = np.load(tmp_path / "run" / "policy.npz")
    assert (tmp_path / "run" / "summary.json").exists() and len(first.files) == 4


@pytest.mark.slow
def test_shac_trains_on_a_brax_task(tmp_path):
    from gradstop.trainers import TrainConfig, train

    cfg = TrainConfig.for_algo("shac", sim="brax:reacher", flow="input", horizon=32, window=16, batch=8, epochs=2,
                               updates_per_epoch=2, hidden=(32,), critic_hidden=(32,), critic_iterations=2, test_size=8)
    result = train(cfg, out=tmp_path / "run")
    critic = [float(u["critic_loss"]) for u in result.updates]
    rewards = [e["test_reward"] for e in result.evals]
    assert len(critic) == 4 and np.isfinite(critic).all() and np.isfinite(rewards).all()
    np.testing.assert_allclose(rewards, [-e["test_loss"] for e in result.evals], rtol=1e-5)


@pytest.mark.slow  # compiles a 12-step hopper window (about a minute)
def test_a_hopper_that_falls_inside_a_shac_window_restarts_there_with_its_discount_back_at_one():
    """The pytree path of SHAC's window with episodes (Window(episode=...)): a Brax ``done`` ends the episode at its
    step, the environment goes on from its restart state, and the discount and step count start again."""
    import equinox as eqx

    from gradstop.trainers.shac import Window

    sim = make("brax:hopper", pipeline="spring")
    policy = gs.jax.mlp(3, sim.obs_dim, sim.action_dim, hidden=(16,), dtype=jnp.float32)
    params, static = eqx.partition(policy, eqx.is_array)
    leaves, tree = jax.tree.flatten(params)  # a last-layer bias of −2 on every joint: the hopper falls at its 8th step
    policy = eqx.combine(jax.tree.unflatten(tree, leaves[:-1] + [jnp.full_like(leaves[-1], -2.0)]), static)
    x0, restart = sim.reset(0, 4), sim.reset(1, 4)
    window = Window(sim, lambda o: o[..., 0] * 0 + 5.0, 0.9, 12, "bootstrap", episode=1000, terminations=True)
    zero = jnp.zeros(4)
    out = gs.rollout(policy, window, horizon=12, x0=window.wrap(x0, zero, zero, restart))
    x, d, _, t, j, f, _ = window.parts(out.states)
    fell = np.argwhere(np.asarray(f) > 0)
    assert len(fell) and np.isfinite(float(out.loss))
    for i, b in fell:  # the step after the fall starts from the restart state, discount 1 and step 0
        current = window.current(jax.tree.map(lambda v: v[i], out.states))
        np.testing.assert_array_equal(np.asarray(current.obs[b]), np.asarray(restart.obs[b]))
        if i + 1 < 12 and not f[i + 1, b]:
            assert float(t[i + 1, b]) == 1.0 and float(d[i + 1, b]) == pytest.approx(0.9)
    np.testing.assert_array_equal(np.asarray(j[:, 0]), np.arange(13))


@pytest.mark.slow  # compiles a Brax step (15 s)
def test_a_brax_task_whose_reward_is_constant_is_refused_with_the_fix(monkeypatch):
    """inverted_pendulum's own reward is 1 every step: without its entry in COSTS nothing could be learned."""
    import sims.brax as sb
    from gradstop.trainers import TrainConfig, train

    monkeypatch.delitem(sb.COSTS, "inverted_pendulum")
    with pytest.raises(ValueError, match=r"brax:inverted_pendulum's cost is -1 whatever the state and action .* sims.brax.COSTS"):
        train(TrainConfig(sim="brax:inverted_pendulum", horizon=4, epochs=1, updates_per_epoch=1, batch=2))


# -- episode rewards as Brax counts them -------------------------------------------------------------
@pytest.mark.slow  # compiles two 80-step hopper unrolls and Brax's evaluator (about a minute)
@pytest.mark.parametrize("algo", ["bptt", "shac"])
def test_episode_rewards_stop_at_the_first_done_as_brax_evaluator_counts_them(algo):
    """hopper keeps paying its healthy reward after a fall (terminate_when_unhealthy): the trainers' test reward
    counts the step that ended an episode and none after it, which is what Brax's own ``Evaluator`` reports for the
    same policy from the same initial states."""
    import types

    from brax.envs.wrappers import training as brax_training
    from brax.training.acting import Evaluator

    from gradstop.trainers.config import TrainConfig
    from gradstop.trainers.jax.bptt import make_evaluate
    from gradstop.trainers.shac import make_task

    horizon, n = 80, 8
    sim = make("brax:hopper", pipeline="spring")
    policy = gs.jax.mlp(3, sim.obs_dim, sim.action_dim, hidden=(16, 16), dtype=jnp.float32)
    import equinox as eqx

    params, static = eqx.partition(policy, eqx.is_array)
    leaves, tree = jax.tree.flatten(params)  # a last-layer bias of 2 on every joint: the hopper falls within 80 steps
    params = jax.tree.unflatten(tree, leaves[:-1] + [jnp.full_like(leaves[-1], 2.0)])
    policy = eqx.combine(params, static)
    config = TrainConfig(algo=algo, sim="brax:hopper", horizon=horizon, window=16, obs_norm=False)
    task = make_task(sim, config)
    squash = jnp.tanh if config.action_squash == "tanh" else (lambda a: a)
    assert (algo == "shac") == (task is not sim)  # SHAC's actor steps the env through tanh, as published

    key = jax.random.PRNGKey(7)  # Brax's wrappers take raw uint32 keys
    evaluator = Evaluator(brax_training.wrap(sim._env, episode_length=horizon, action_repeat=1),
                          lambda p: (lambda obs, k: (squash(eqx.combine(p, static)(obs)), {})),
                          num_eval_envs=n, episode_length=horizon, action_repeat=1, key=key)
    brax_reward = evaluator.run_evaluation(params, {})["eval/episode_reward"]

    x0 = sim.reset(jax.random.split(key)[1], n)  # the evaluator's own reset keys for its first evaluation
    _, _, reward = make_evaluate(types.SimpleNamespace(horizon=horizon), task, static)(params, x0)
    np.testing.assert_allclose(float(reward), float(brax_reward), rtol=1e-4)

    # The test can fail: some episodes did end early, and summing past their done would pay more.
    out = gs.rollout(policy, task, stop="none", horizon=horizon, x0=x0)
    assert np.asarray(out.states.done[1:-1]).any(0).sum() >= 1  # at least one of the 8 falls before the last step
    unmasked = float(np.asarray(out.states.reward[1:]).sum(0).mean())
    assert unmasked > float(reward) + 1.0
    if algo == "bptt":  # BPTT's training objective with until_done is minus that same episode reward
        from gradstop.trainers.episodes import UntilDone

        ends = UntilDone(sim)
        masked = gs.rollout(policy, ends, stop="none", horizon=horizon, x0=ends.wrap(x0)).loss
        np.testing.assert_allclose(-float(masked), float(brax_reward), rtol=1e-4)
