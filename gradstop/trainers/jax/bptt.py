"""BPTT in JAX: one epoch of updates is one jitted ``lax.scan`` over its minibatches.

Each update rolls the policy out from a minibatch of initial states, takes the flow's gradient
(``gs.rollout``; for ``combined``/``directional`` ``gs.gradients``, which also gives the cosine
between the ``input`` and ``none`` gradients), clips it, and applies the optax optimizer. The
loop over epochs, the files and the checkpoints are framework-neutral
(``gradstop.trainers.run``); this file holds only what JAX must do.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradstop import _policy
from gradstop.health.diagnose import diagnose, explain
from gradstop.flows import parse_flow
from gradstop.gradients import gradients
from gradstop.jax.policy import gaussian, get_weights, mlp, set_weights
from gradstop.rollout import rollout
from gradstop.trainers.jax import checkpoint, optim
from gradstop.trainers.episodes import UntilDone
from gradstop.trainers.noise import Noisy

__all__ = ["BPTT", "make_policy", "make_evaluate", "update_direction", "as_states"]

FRAMEWORK = "jax"


def make_policy(config, sim):
    """The config's MLP policy (``actor_layer_norm``: LayerNorms), initialised from its seed with
    ``_policy.initial_policy_weights`` (the same in both frameworks)."""
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype='float64' needs JAX's 64-bit mode: call jax.config.update('jax_enable_x64', True) "
                         "before building arrays (the gradstop CLI does this for --dtype float64)")
    if config.policy == "gaussian":
        policy = gaussian(config.seed, sim.obs_dim, sim.action_dim, hidden=config.hidden, activation=config.activation,
                          dtype=dtype, init_std=config.init_std, layer_norm=config.actor_layer_norm)
    else:
        policy = mlp(config.seed, sim.obs_dim, sim.action_dim, hidden=config.hidden, activation=config.activation, dtype=dtype,
                     layer_norm=config.actor_layer_norm)
    return set_weights(policy, _policy.initial_policy_weights(config, sim))


def update_direction(config, sim):
    """``f(params, static, x0, noise) -> (loss, grads, cos_input_none, mixing)`` for the config's flow (cos is NaN
    unless combining; ``mixing``, the zeroth-/α-order flows' statistics, is {} for the others; ``noise`` is their
    action noise, None for the others)."""
    flow = parse_flow(config.flow)

    if flow.mixed:
        def direction(params, static, x0, noise):
            def loss_fn(p):
                out = rollout(eqx.combine(p, static), sim, stop=flow, horizon=config.horizon, x0=x0, impl=config.impl,
                              memory=config.memory, noise=noise)
                return out.loss, out.mixing

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return loss, grads, jnp.asarray(jnp.nan, loss.dtype), stats
    elif flow.combining:
        c_none, c_input = flow.components()

        def direction(params, static, x0, noise):
            out = gradients(eqx.combine(params, static), sim, flows=[c_none, c_input, flow], horizon=config.horizon,
                            x0=x0, impl=config.impl, memory=config.memory)
            grads = eqx.filter(out.grads[flow.name], eqx.is_inexact_array)
            return out.loss, grads, out.cosine[(c_none.name, c_input.name)], {}
    else:
        def direction(params, static, x0, noise):
            def loss_fn(p):
                return rollout(eqx.combine(p, static), sim, stop=flow, horizon=config.horizon, x0=x0, impl=config.impl,
                               memory=config.memory).loss

            loss, grads = jax.value_and_grad(loss_fn)(params)
            return loss, grads, jnp.asarray(jnp.nan, loss.dtype), {}
    return direction


def make_evaluate(config, sim, static):
    """``f(params, x0) -> (test loss, mean success, mean episode reward)``: the policy over ``horizon`` steps,
    flow-independent; NaN for a measure the sim does not define (``success``, ``reward``)."""

    def evaluate(params, x0):
        out = rollout(eqx.combine(params, static), sim, stop="none", horizon=config.horizon, x0=x0)
        success = sim.success(jax.tree.map(lambda v: v[-1], out.states)) if hasattr(sim, "success") else None
        nan = jnp.asarray(jnp.nan, out.loss.dtype)
        after = jax.tree.map(lambda v: v[1:], out.states)
        reward = jnp.mean(jnp.sum(_alive(sim, after, jnp) * sim.reward(after), 0)) if hasattr(sim, "reward") else nan
        return out.loss, (jnp.mean(success) if success is not None else nan), reward

    return evaluate


def _alive(sim, after, xp):
    """1 for the steps of an episode up to and including its first ``terminated`` one, 0 after it, (H, B): the
    episode reward counts the step that ended it and none after, as Brax's own evaluator does. All ones for a
    simulator without ``terminated``."""
    if not hasattr(sim, "terminated"):
        return 1.0
    done = xp.asarray(sim.terminated(after), dtype=sim.reward(after).dtype)
    before = xp.cumprod(1.0 - done, 0)  # 1 while no step so far has ended the episode
    return xp.concatenate([xp.ones_like(before[:1]), before[:-1]], 0)


def as_states(x, dtype):
    """Initial states as JAX arrays: flat NumPy arrays cast to ``dtype``; pytrees (Brax) keep their leaves."""
    if isinstance(x, np.ndarray):
        return jnp.asarray(x, dtype)
    return jax.tree.map(jnp.asarray, x)


class BPTT:
    """The state of a JAX BPTT run (parameters, optimizer state, applied-update count) and its steps."""

    framework = FRAMEWORK

    def __init__(self, config, sim, policy=None, model=None):
        self.config, self.sim = config, sim
        self.train_sim = sim if model is None else model  # the actor learns through the model, is scored on sim
        # until_done: the costs stop at each episode's first done (trainers/episodes.py); the initial states gain its flag
        self.episodes = UntilDone(self.train_sim) if config.until_done else None
        self.train_sim = self.episodes or self.train_sim
        # a Gaussian policy reads its noise from the state (trainers/noise.py); evaluation uses its mean
        self.noisy = Noisy(self.train_sim, config.horizon) if config.policy == "gaussian" else None
        self.mixing = parse_flow(config.flow).mixing  # zeroth-/α-order flows: their action noise is an input too
        policy = make_policy(config, sim) if policy is None else policy
        self.params, self.static = eqx.partition(policy, eqx.is_inexact_array)
        self.dtype = jax.tree.leaves(self.params)[0].dtype
        self.tx = optim.optimizer(config)
        self.opt_state = self.tx.init(self.params)
        self.applied = jnp.zeros((), jnp.int32)  # updates applied so far (skipped ones excluded): the schedule's clock
        self._epoch = jax.jit(self._make_epoch())
        self._evaluate = jax.jit(self._make_evaluate())

    @property
    def policy(self):
        return eqx.combine(self.params, self.static)

    # -- the pure pieces a population vmaps (trainers/jax/population.py) ---------------------------
    @property
    def carry(self):
        """The whole training state as one pytree."""
        return (self.params, self.opt_state, self.applied)

    @carry.setter
    def carry(self, tree):
        self.params, self.opt_state, self.applied = tree

    def epoch_fn(self):
        """Pure ``f(carry, inputs) -> (carry, metrics)`` of one epoch (``inputs`` as from :meth:`inputs`)."""
        epoch = self._make_epoch()

        def f(carry, inputs):
            *carry, metrics = epoch(*carry, inputs)
            return tuple(carry), metrics

        return f

    def evaluate_fn(self):
        return self._make_evaluate()

    @staticmethod
    def actor_of(carry):
        return carry[0]

    def _make_epoch(self):
        config, static = self.config, self.static
        direction = update_direction(config, self.train_sim if self.noisy is None else self.noisy)
        lr_of, skip = optim.schedule(config), config.on_nonfinite == "skip"

        def one_update(carry, inputs):
            params, opt_state, applied = carry
            x0, noise = self._start(inputs)
            loss, grads, cos, stats = direction(params, static, x0, noise)
            norm = optim.global_norm(grads)
            clipped = optim.clip(config, grads)
            updates, new_opt = self.tx.update(clipped, opt_state, params)
            finite = jnp.isfinite(loss) & jnp.isfinite(norm)
            new = (optax.apply_updates(params, updates), new_opt, applied + 1)
            if skip:  # keep the old state where the update is non-finite; the schedule's clock does not advance
                new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, (params, opt_state, applied))
            metrics = dict(loss=loss, grad_norm=norm, grad_norm_clipped=optim.global_norm(clipped), cos_input_none=cos,
                           lr=lr_of(applied), finite=finite, critic_loss=jnp.asarray(jnp.nan, loss.dtype), **stats)
            return new, metrics

        def epoch(params, opt_state, applied, inputs):
            (params, opt_state, applied), metrics = jax.lax.scan(one_update, (params, opt_state, applied), inputs)
            return params, opt_state, applied, metrics

        return epoch

    def _make_evaluate(self):
        return make_evaluate(self.config, self.sim, self.static)

    # -- the steps the run loop calls -------------------------------------------------------------
    @property
    def env_steps_per_update(self) -> int:
        return self.config.batch * self.config.horizon

    def inputs(self, data, epoch: int):
        """The epoch's per-update inputs: initial states, and the policy noise for a Gaussian policy or the action
        noise of a zeroth-/α-order flow."""
        x0s = as_states(data.epoch(epoch), self.dtype)
        actions = (jnp.asarray(data.mixing_noise(epoch, self.config.horizon, self.mixing.samples), self.dtype)
                   if self.mixing is not None else None)
        if self.noisy is not None:
            policy = jnp.asarray(data.noise(epoch, self.config.horizon), self.dtype)
            return (x0s, policy) if actions is None else (x0s, policy, actions)
        return x0s if actions is None else (x0s, actions)

    def compile(self, data, epoch: int) -> float:
        """Compile the epoch and the evaluation ahead of time for these shapes; returns the seconds it took."""
        tick = time.perf_counter()
        self._epoch = self._epoch.lower(self.params, self.opt_state, self.applied, self.inputs(data, epoch)).compile()
        self._evaluate = self._evaluate.lower(self.params, as_states(data.test, self.dtype)).compile()
        return time.perf_counter() - tick

    def run_epoch(self, data, epoch: int) -> dict[str, np.ndarray]:
        """Apply one update per minibatch of the epoch's initial states; per-update metrics."""
        self._epoch_start = self.carry  # immutable arrays: kept for locate_nonfinite at no cost
        self.params, self.opt_state, self.applied, metrics = self._epoch(self.params, self.opt_state, self.applied,
                                                                         self.inputs(data, epoch))
        return {k: np.asarray(v) for k, v in metrics.items()}  # np.asarray blocks until the epoch is done

    def locate_nonfinite(self, data, epoch: int, index: int) -> str:
        """Where update ``index`` of ``epoch`` first went non-finite: the epoch is replayed from its start up
        to that update, whose rollout ``gradstop.diagnose`` then traces (one line, ``gradstop.diagnose.explain``)."""
        inputs = self.inputs(data, epoch)
        params, opt_state, applied = self._epoch_start
        if index:
            head = jax.tree.map(lambda v: v[:index], inputs)
            params, *_ = jax.jit(self._make_epoch())(params, opt_state, applied, head)
        x0 = jax.tree.map(lambda v: v[index], inputs)
        sim = self.train_sim if self.noisy is None else self.noisy
        x0, _ = self._start(x0)
        flow = parse_flow(self.config.flow).first_order  # a zeroth-/α-order flow: where its rollout goes non-finite
        found = diagnose(eqx.combine(params, self.static), sim, flows=[flow], horizon=self.config.horizon,
                         x0=x0, memory=self.config.memory, contributions=False)
        return explain(found, flow.name)

    def _start(self, inputs):
        """One update's inputs (as :meth:`inputs` gives them) as the training rollout takes them: (initial states —
        with until_done each with its episode's flag, with a Gaussian policy its noise riding in the state —, a
        zeroth-/α-order flow's action noise or None)."""
        if self.noisy is not None:  # a mixing flow's noise comes after the policy's
            x0, policy = inputs[0], inputs[1]
            noise = inputs[2] if self.mixing is not None else None
        else:
            (x0, noise), policy = (inputs if self.mixing is not None else (inputs, None)), None
        x0 = x0 if self.episodes is None else self.episodes.wrap(x0)
        return (x0 if policy is None else self.noisy.wrap(x0, policy)), noise

    def evaluate(self, x0: np.ndarray) -> dict[str, float]:
        """Test loss (flow-independent forward) and the task's success measure (NaN if none)."""
        loss, success, reward = self._evaluate(self.params, as_states(x0, self.dtype))
        return {"test_loss": float(loss), "test_success": float(success), "test_reward": float(reward)}

    def weights(self) -> list[np.ndarray]:
        return get_weights(self.policy)

    def load_weights(self, weights) -> None:
        self.params, _ = eqx.partition(set_weights(self.policy, weights), eqx.is_inexact_array)

    # -- checkpoints ------------------------------------------------------------------------------
    def state_bytes(self, meta: dict) -> bytes:
        """The whole training state and ``meta`` as the bytes of an ``.npz`` file."""
        return checkpoint.pack((self.params, self.opt_state, self.applied), meta)

    read_meta = staticmethod(checkpoint.read_meta)

    def load_state(self, data: bytes) -> None:
        self.params, self.opt_state, self.applied = checkpoint.unpack((self.params, self.opt_state, self.applied), data)
