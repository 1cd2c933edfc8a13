"""SHAC in JAX: one epoch of windows is one jitted ``lax.scan``; see ``gradstop.trainers.shac``.

Each update (one window of h steps from the B environments' current states):

1. the actor's loss is a rollout of :class:`~gradstop.trainers.shac.Window` (discounted costs, the
   target critic's value at the end) along the config's flow; clip, step the actor;
2. the critic is fitted to TD(λ) targets computed on the window's detached states, with
   ``critic_iterations`` passes of ``critic_minibatches`` optimizer steps (its learning rate follows
   the actor's schedule, scaled to ``critic_lr``), then the target critic moves: α·target + (1−α)·critic;
3. the environments continue from x_h; those whose episode ended (``horizon`` steps) or whose state
   is non-finite restart from the update's fresh initial states;
4. with ``obs_norm`` the running mean and variance take the window's observations (x_0 … x_{h−1} and the
   environments' next states), as published; the window itself saw them frozen at its start.

The actor acts on ``gradstop.trainers.shac.Task`` (its actions bounded, its observations normalised); a
Gaussian actor reads its noise (``Data.noise``, drawn in NumPy) from the window's state.

With ``guards`` the epoch's metrics are checked after it (``gradstop.trainers.shac.check_guards``).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradstop.health.diagnose import diagnose, explain
from gradstop.flows import parse_flow
from gradstop.gradients import gradients
from gradstop.jax.policy import get_weights, mlp, set_weights
from gradstop.rollout import rollout
from gradstop.trainers.jax import checkpoint, optim
from gradstop.trainers.jax.bptt import as_states, make_evaluate, make_policy
from gradstop.trainers.noise import Noisy
from gradstop.trainers.shac import (Window, alive, check_guards, critic_weights, episodes_inside, make_task, rms_init,
                                    rms_update, sane, td_lambda, window_part)

__all__ = ["SHAC", "make_critic"]

FRAMEWORK = "jax"


def make_critic(config, sim):
    """The critic MLP obs -> cost-to-go (LayerNorms with ``critic_layer_norm``), initialised from the config's
    seed (its own stream) by ``critic_init`` (``gradstop.trainers.shac.critic_weights``)."""
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    critic = mlp(config.seed, sim.obs_dim, 1, hidden=config.critic_hidden, activation=config.critic_activation, dtype=dtype,
                 layer_norm=config.critic_layer_norm)
    return set_weights(critic, critic_weights(config, sim))


def critic_optimizer(config) -> optax.GradientTransformation:
    """The critic's optimizer, its learning rate a hyperparameter that each update sets from the schedule:
    ``critic_optimizer="actor"``, the actor's (optimizer, betas, adam_eps, weight_decay, momentum);
    ``"adam"``, Adam with the actor's betas and optax's ε 1e-8."""
    lr = config.critic_lr
    if config.critic_optimizer == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=config.beta1, b2=config.beta2)
    if config.optimizer == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=config.beta1, b2=config.beta2, eps=config.adam_eps)
    if config.optimizer == "adamw":
        return optax.inject_hyperparams(optax.adamw)(learning_rate=lr, b1=config.beta1, b2=config.beta2, eps=config.adam_eps,
                                                     weight_decay=config.weight_decay)
    return optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=config.momentum or None)


def window_states(states, sim, noisy: bool = False):
    """The environments' states x out of window states (flat [x, d, e] or the tuple (x, d, e); ``noisy``: a Gaussian
    actor's, whose noise follows them: flat [x, d, e, ε…] or ((x, d, e), ε…))."""
    if noisy and isinstance(states, tuple):
        states = states[0]
    return states[0] if isinstance(states, tuple) else states[..., : sim.state_dim]


def finite_rows(tree, batch_dims: int):
    """(leading batch_dims,) mask: every entry of every leaf finite."""
    masks = [jnp.all(jnp.isfinite(v).reshape(v.shape[:batch_dims] + (-1,)), -1) for v in jax.tree.leaves(tree)]
    return functools.reduce(jnp.logical_and, masks)


class SHAC:
    """The state of a JAX SHAC run (actor, critic, target critic, optimizers, environments) and its steps."""

    framework = FRAMEWORK
    check_guards = staticmethod(check_guards)  # for trainers/jax/population.py

    def __init__(self, config, sim, policy=None, model=None):
        from gradstop.trainers.data import Data

        self.config, self.sim = config, sim
        self.train_sim = sim if model is None else model  # actor -> model -> critic; scored on the true sim
        actor = make_policy(config, sim) if policy is None else policy
        self.params, self.static = eqx.partition(actor, eqx.is_inexact_array)
        critic, self.critic_static = eqx.partition(make_critic(config, sim), eqx.is_inexact_array)
        self.dtype = jax.tree.leaves(self.params)[0].dtype
        self.actor_tx = optim.optimizer(config)
        # the critic takes many steps per update: its rate is set per update from the actor's schedule
        self.critic_tx = critic_optimizer(config)
        start = as_states(Data.from_config(sim, config).start(), self.dtype)
        self.state = dict(actor=self.params, actor_opt=self.actor_tx.init(self.params), critic=critic,
                          critic_opt=self.critic_tx.init(critic), target=critic, applied=jnp.zeros((), jnp.int32),
                          envs=start, steps=jnp.zeros(config.batch, jnp.int32))
        if config.obs_norm:  # the running (mean, var, count) of the observations, as published (utils/running_mean_std.py)
            self.state["rms"] = rms_init(sim.obs_dim, lambda shape: jnp.zeros(shape, self.dtype))
        self._epoch = jax.jit(self._make_epoch())
        self._evaluate = jax.jit(self.evaluate_fn())

    @property
    def policy(self):
        return eqx.combine(self.state["actor"], self.static)

    @property
    def env_steps_per_update(self) -> int:
        return self.config.batch * self.config.window

    # -- the pure pieces a population vmaps (trainers/jax/population.py) ---------------------------
    @property
    def carry(self):
        return self.state

    @carry.setter
    def carry(self, tree):
        self.state = tree

    def epoch_fn(self):
        epoch = self._make_epoch()
        return lambda carry, inputs: epoch(carry, *inputs)

    def evaluate_fn(self):
        """``f(actor_of(carry), x0)``: the policy at its mean (a Gaussian's) on the true sim, its actions bounded and
        (``obs_norm``) its observations normalised by the current statistics."""
        config, static = self.config, self.static
        if not config.obs_norm:
            return make_evaluate(config, make_task(self.sim, config), static)

        def evaluate(actor_rms, x0):
            actor, rms = actor_rms
            return make_evaluate(config, make_task(self.sim, config, rms[:2]), static)(actor, x0)

        return evaluate

    def actor_of(self, carry):
        return (carry["actor"], carry["rms"]) if self.config.obs_norm else carry["actor"]

    def value_fn(self, critic):
        model = eqx.combine(critic, self.critic_static)
        return lambda obs: model(obs)[..., 0]

    def _window(self, state, noise, restart=None):
        """The update's actor window: (the sim its rollout runs, its initial states, the task, the episode-end mask,
        the :class:`Window`). ``restart``: the states environments whose episode ends inside the window restart from."""
        config = self.config
        stats = state["rms"][:2] if config.obs_norm else None  # frozen over the window (the published deepcopy)
        task = make_task(self.train_sim, config, stats)
        window = Window(task, self.value_fn(state["target"]), config.gamma, config.window, config.time_limit,
                        episode=episodes_inside(config, self.train_sim), terminations=config.td_dones == "step")
        ends = (state["steps"] + config.window >= config.horizon).astype(self.dtype)
        if window.episode is None:
            X0 = window.wrap(state["envs"], ends)
        else:
            X0 = window.wrap(state["envs"], ends, state["steps"].astype(self.dtype), state["envs"] if restart is None else restart)
        if config.policy == "gaussian":  # a = μ + σ·ε with the run's own ε (Data.noise) riding in the state
            noisy = Noisy(window, config.window)
            return noisy, noisy.wrap(X0, noise), task, ends, window
        return window, X0, task, ends, window

    def _window_states(self, out, window):
        """(the states the steps led to, the states the environments were in, the episodes' step counts, the step-ended
        flags) of the window's rollout, (h+1, B, ...) each; the last two None where episodes end at window ends only."""
        config = self.config
        if window is None or window.episode is None:
            xs = window_states(out.states, self.train_sim, config.policy == "gaussian")
            return xs, xs, None, None
        W = window_part(out.states, window, config.policy == "gaussian")
        x, _, _, t, _, f, _ = window.parts(W)
        return x, window.current(W), t, f

    def _actor_step(self, state, window, X0, noise=None):
        """The actor's loss, gradient (and cosine), clipped and applied; also the window's rollout. ``noise``: a
        zeroth-/α-order flow's action noise over the window (its rollout is then the noise-free one)."""
        config, static, flow = self.config, self.static, parse_flow(self.config.flow)
        h = config.window

        def loss_fn(p):
            out = rollout(eqx.combine(p, static), window, stop=flow, horizon=h, x0=X0, impl=config.impl, memory=config.memory,
                          noise=noise)
            return out.loss, out

        if flow.combining:
            c_none, c_input = flow.components()
            g = gradients(eqx.combine(state["actor"], static), window, flows=[c_none, c_input, flow], horizon=h, x0=X0,
                          impl=config.impl, memory=config.memory)
            loss, grads, cos = g.loss, eqx.filter(g.grads[flow.name], eqx.is_inexact_array), g.cosine[(c_none.name, c_input.name)]
            out = g.rollout  # the forward the gradients were taken on
        else:
            (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["actor"])
            cos = jnp.asarray(jnp.nan, loss.dtype)
        norm = optim.global_norm(grads)
        clipped = optim.clip(config, grads)
        updates, actor_opt = self.actor_tx.update(clipped, state["actor_opt"], state["actor"])
        metrics = dict(loss=loss, grad_norm=norm, grad_norm_clipped=optim.global_norm(clipped), cos_input_none=cos,
                       lr=optim.schedule(config)(state["applied"]), finite=jnp.isfinite(loss) & jnp.isfinite(norm),
                       **(out.mixing if flow.mixed else {}))
        actor = optax.apply_updates(state["actor"], updates)
        return dict(state, actor=actor, actor_opt=actor_opt), jax.lax.stop_gradient(out), metrics

    def _targets(self, target, out, ends, task=None, window=None):
        """The critic's data from the window's rollout: (observations, TD(λ) targets, the guard's max |V|). ``task``:
        the window's (bounded actions, frozen normalisation); None: the config's without normalisation. ``window``:
        the :class:`Window` it ran (one with ``episode`` marks the episodes that ended inside it)."""
        config = self.config
        sim = make_task(self.train_sim, config) if task is None else task
        xs, current, t, f = self._window_states(out, window)  # (h+1, B, ...)
        after = jax.tree.map(lambda v: v[1:], xs)
        costs = sim.cost(after, out.actions)  # undiscounted c(x_{i+1}, a_i)
        v_next = self.value_fn(target)(sim.obs(after))
        last = jax.tree.map(lambda v: v[-1], xs)
        at_limit = (jnp.where(sane(sim, last), v_next[-1], 0.0) if config.time_limit == "bootstrap"
                    else sim.terminal_cost(last))
        dones = None
        if f is not None:  # an episode that ended inside the window: V_end there, the recursion restarts
            dones = f[1:]
            v_next = jnp.where(dones > 0, window._end_value(after, v_next, t[1:] >= config.horizon), v_next)
            ends = (t[-1] >= config.horizon).astype(v_next.dtype)
        elif config.td_dones == "step":  # a termination inside the window ends its episode there: V = 0, recursion restarts
            dones = 1 - alive(sim, after) * jnp.ones_like(v_next)
            v_next = (1 - dones) * v_next
        v_next = v_next.at[-1].set(jnp.where(ends > 0, at_limit, alive(sim, last) * v_next[-1]))
        v_next = jnp.where(finite_rows(after, 2), v_next, 0.0)  # non-finite states: V = 0
        value_max = jnp.max(jnp.where(jnp.isnan(v_next), 0.0, jnp.abs(v_next)))  # the guard's |V| (NaN: not finite)
        targets = jnp.stack(td_lambda(costs, v_next, config.gamma, config.td_lambda, dones))
        obs = sim.obs(jax.tree.map(lambda v: v[:-1], current)).reshape(-1, sim.obs_dim)
        return obs, targets.reshape(-1), value_max

    def _critic_fit(self, state, out, ends, orders, task=None, window=None):
        """TD(λ) targets from the window's rollout, then the critic's passes and the target's Polyak step."""
        config = self.config
        obs, targets, value_max = self._targets(state["target"], out, ends, task, window)

        def mse(critic, idx):
            return jnp.mean((self.value_fn(critic)(obs[idx]) - targets[idx]) ** 2)

        def minibatch(carry, idx):
            critic, opt = carry
            loss, g = jax.value_and_grad(mse)(critic, idx)
            g = optim.clip(config, g)
            updates, opt = self.critic_tx.update(g, opt, critic)
            return (optax.apply_updates(critic, updates), opt), loss

        def one_pass(carry, order):
            carry, losses = jax.lax.scan(minibatch, carry, order.reshape(config.critic_minibatches, -1))
            return carry, jnp.mean(losses)

        rate = config.critic_lr * optim.schedule(dataclasses.replace(config, lr=1.0))(state["applied"])
        old = state["critic_opt"].hyperparams
        opt = state["critic_opt"]._replace(hyperparams={**old, "learning_rate": jnp.asarray(rate, old["learning_rate"].dtype)})
        (critic, opt), pass_losses = jax.lax.scan(one_pass, (state["critic"], opt), orders)
        a = config.target_alpha
        target = jax.tree.map(lambda t, c: a * t + (1 - a) * c, state["target"], critic)
        return dict(state, critic=critic, critic_opt=opt, target=target), pass_losses[-1], value_max

    def _make_epoch(self):
        config, sim = self.config, self.train_sim
        skip = config.on_nonfinite == "skip"

        def one_update(state, inputs):
            resets, orders, noise, actions = inputs  # the Gaussian actor's noise; a zeroth-/α-order flow's action noise
            actor_sim, X0, task, ends, window = self._window(state, noise, resets)
            new, out, metrics = self._actor_step(state, actor_sim, X0, actions)
            new, critic_loss, value_max = self._critic_fit(new, out, ends, orders, task, window)
            new = dict(new, applied=state["applied"] + 1)
            xs, current, t, _ = self._window_states(out, window)
            x_h = jax.tree.map(lambda v: v[-1], xs)
            steps = state["steps"] + config.window if t is None else t[-1].astype(state["steps"].dtype)
            done = (steps >= config.horizon) | ~finite_rows(x_h, 1) | (alive(sim, x_h) == 0)
            new["envs"] = jax.tree.map(lambda r, x: jnp.where(done.reshape(done.shape + (1,) * (x.ndim - 1)), r, x), resets, x_h)
            new["steps"] = jnp.where(done, 0, steps)
            if config.obs_norm:  # the observations the published code feeds its RunningMeanStd: x_0 … x_{h−1}, next envs
                seen = sim.obs(jax.tree.map(lambda v: v[:-1], current)).reshape(-1, sim.obs_dim)
                new["rms"] = rms_update(state["rms"],  # in the statistics' dtype (a Brax obs may come in float64)
                                        jnp.concatenate([seen, sim.obs(new["envs"])]).astype(state["rms"][0].dtype))
            if skip:  # keep every learner's state where the actor's update is non-finite
                learners = ("actor", "actor_opt", "critic", "critic_opt", "target", "applied") + (("rms",) if config.obs_norm else ())
                new.update({k: jax.tree.map(lambda a, b: jnp.where(metrics["finite"], a, b), new[k], state[k]) for k in learners})
            return new, dict(metrics, critic_loss=critic_loss, value_max=value_max)

        def epoch(state, resets, orders, noise=None, actions=None):
            return jax.lax.scan(one_update, state, (resets, orders, noise, actions))

        return epoch

    def inputs(self, data, epoch):
        config = self.config
        n = config.window * config.batch
        noise = jnp.asarray(data.noise(epoch, config.window), self.dtype) if config.policy == "gaussian" else None
        mixing = parse_flow(config.flow).mixing  # a zeroth-/α-order flow: its action noise over each window
        actions = None if mixing is None else jnp.asarray(data.mixing_noise(epoch, config.window, mixing.samples), self.dtype)
        return (as_states(data.epoch(epoch), self.dtype),
                jnp.asarray(data.critic_order(epoch, config.critic_iterations, n), jnp.int32), noise, actions)

    # -- the steps the run loop calls -------------------------------------------------------------
    def compile(self, data, epoch: int) -> float:
        tick = time.perf_counter()
        self._epoch = self._epoch.lower(self.state, *self.inputs(data, epoch)).compile()
        self._evaluate = self._evaluate.lower(self.actor_of(self.state), as_states(data.test, self.dtype)).compile()
        return time.perf_counter() - tick

    def run_epoch(self, data, epoch: int) -> dict[str, np.ndarray]:
        self._epoch_start = self.state  # immutable arrays: kept for locate_nonfinite at no cost
        self.state, metrics = self._epoch(self.state, *self.inputs(data, epoch))
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        check_guards(self.config, metrics, epoch)
        return metrics

    def locate_nonfinite(self, data, epoch: int, index: int) -> str:
        """Where update ``index`` of ``epoch`` first went non-finite: the epoch is replayed from its start up to
        that update, whose actor window ``gradstop.diagnose`` then traces (``gradstop.diagnose.explain``)."""
        config, state = self.config, self._epoch_start
        inputs = self.inputs(data, epoch)
        if index:
            head = jax.tree.map(lambda v: v[:index], inputs)
            state, _ = jax.jit(self._make_epoch())(state, *head)
        noise = None if inputs[2] is None else inputs[2][index]
        actor_sim, X0, _, _, _ = self._window(state, noise, jax.tree.map(lambda v: v[index], inputs[0]))
        found = diagnose(eqx.combine(state["actor"], self.static), actor_sim, flows=[config.flow], horizon=config.window,
                         x0=X0, memory=config.memory, contributions=False)
        return "in the actor's window, " + explain(found, parse_flow(config.flow).name)

    def evaluate(self, x0: np.ndarray) -> dict[str, float]:
        loss, success, reward = self._evaluate(self.actor_of(self.state), as_states(x0, self.dtype))
        return {"test_loss": float(loss), "test_success": float(success), "test_reward": float(reward)}

    def weights(self) -> list[np.ndarray]:
        return get_weights(self.policy)

    def load_weights(self, weights) -> None:
        self.state["actor"], _ = eqx.partition(set_weights(self.policy, weights), eqx.is_inexact_array)

    # -- checkpoints ------------------------------------------------------------------------------
    def state_bytes(self, meta: dict) -> bytes:
        return checkpoint.pack(self.state, meta)

    read_meta = staticmethod(checkpoint.read_meta)

    def load_state(self, data: bytes) -> None:
        self.state = checkpoint.unpack(self.state, data)
