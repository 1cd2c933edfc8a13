"""SHAC in PyTorch: eager updates, mirroring ``gradstop.trainers.jax.shac`` step for step."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from gradstop.health.diagnose import diagnose, explain
from gradstop.gradients import gradients
from gradstop.rollout import rollout
from gradstop.torch.policy import mlp, set_weights
from gradstop.trainers.schedule import lr_at
from gradstop.trainers.noise import Noisy
from gradstop.trainers.shac import (Window, alive, check_guards, critic_weights, episodes_inside, make_task, rms_init,
                                    rms_update, sane, td_lambda, window_part)
from gradstop.trainers.torch import checkpoint, optim
from gradstop.trainers.torch.bptt import BPTT, evaluate

__all__ = ["SHAC", "make_critic"]


def make_critic(config, sim):
    """The critic MLP obs -> cost-to-go (LayerNorms with ``critic_layer_norm``), initialised from the config's
    seed (its own stream) by ``critic_init`` (``gradstop.trainers.shac.critic_weights``)."""
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    critic = mlp(sim.obs_dim, 1, hidden=config.critic_hidden, activation=config.critic_activation, dtype=dtype, seed=config.seed,
                 layer_norm=config.critic_layer_norm)
    return set_weights(critic, critic_weights(config, sim))


def critic_optimizer(config, params) -> torch.optim.Optimizer:
    """The critic's optimizer (its learning rate set each update from the schedule): ``critic_optimizer="actor"``,
    the actor's (optimizer, betas, adam_eps, weight_decay, momentum); ``"adam"``, Adam with the actor's betas and ε 1e-8."""
    if config.critic_optimizer == "adam":
        return torch.optim.Adam(params, lr=config.critic_lr, betas=(config.beta1, config.beta2))
    return optim.optimizer(dataclasses.replace(config, lr=config.critic_lr), params)


class SHAC(BPTT):
    """The state of a PyTorch SHAC run: BPTT's actor, optimizer and schedule, plus the critic, the target
    critic, the critic's optimizer and the environments; its own epoch and checkpoint."""

    def __init__(self, config, sim, policy=None, model=None):
        from gradstop.trainers.data import Data

        super().__init__(config, sim, policy, model=model)  # actor -> model -> critic; scored on the true sim
        self.critic = make_critic(config, sim)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_opt = critic_optimizer(config, self.critic.parameters())
        self.envs = torch.as_tensor(Data.from_config(sim, config).start(), dtype=self.dtype)
        self.steps = torch.zeros(self.envs.shape[0], dtype=torch.int64)
        self.noisy = None  # a Gaussian actor's noise rides in each window's state (see _window), not over the horizon
        # the running (mean, var, count) of the observations, as published (utils/running_mean_std.py)
        self.rms = rms_init(sim.obs_dim, lambda shape: torch.zeros(shape, dtype=self.dtype)) if config.obs_norm else None

    @property
    def env_steps_per_update(self) -> int:
        return self.config.batch * self.config.window

    def _value(self, obs):
        return self.target(obs)[..., 0]

    def _window(self, noise, restart=None):
        """The update's actor window: (the sim its rollout runs, its initial states, the task, the episode-end mask,
        the :class:`Window`). ``restart``: the states environments whose episode ends inside the window restart from."""
        config = self.config
        stats = (self.rms[0].clone(), self.rms[1].clone()) if self.rms is not None else None  # frozen over the window
        task = make_task(self.train_sim, config, stats)
        window = Window(task, self._value, config.gamma, config.window, config.time_limit,
                        episode=episodes_inside(config, self.train_sim), terminations=config.td_dones == "step")
        ends = (self.steps + config.window >= config.horizon).to(self.dtype)
        if window.episode is None:
            X0 = window.wrap(self.envs, ends)
        else:
            X0 = window.wrap(self.envs, ends, self.steps.to(self.dtype), self.envs if restart is None else restart)
        if config.policy == "gaussian":  # a = μ + σ·ε with the run's own ε (Data.noise) riding in the state
            noisy = Noisy(window, config.window)
            return noisy, noisy.wrap(X0, noise), task, ends, window
        return window, X0, task, ends, window

    def _window_states(self, out, window):
        """(the states the steps led to, the states the environments were in, the episodes' step counts, the step-ended
        flags) of the window's detached rollout, (h+1, B, ...) each; the last two None where episodes end at window
        ends only."""
        states = out.states.detach()
        if window is None or window.episode is None:
            xs = states[..., : self.train_sim.state_dim]
            return xs, xs, None, None
        W = window_part(states, window, self.config.policy == "gaussian")
        x, _, _, t, _, f, _ = window.parts(W)
        return x, window.current(W), t, f

    def _actor_step(self, window, X0, noise=None):
        """Fill ``.grad`` with the flow's direction over the window; (loss, cos, the window's detached rollout).
        ``noise``: a zeroth-/α-order flow's action noise over the window (its rollout is then the noise-free one)."""
        config, flow, h = self.config, self.flow, self.config.window
        self.opt.zero_grad(set_to_none=True)
        if flow.combining:
            c_none, c_input = flow.components()
            g = gradients(self.policy, window, flows=[c_none, c_input, flow], horizon=h, x0=X0, impl=config.impl,
                          memory=config.memory)
            named = dict(self.policy.named_parameters())
            for name, grad in g.grads[flow.name].items():
                named[name].grad = grad.detach().clone()
            return float(g.loss), float(g.cosine[(c_none.name, c_input.name)]), g.rollout  # its forward: no second one
        out = rollout(self.policy, window, stop=flow, horizon=h, x0=X0, impl=config.impl, memory=config.memory, noise=noise)
        out.loss.backward()
        return float(out.loss.detach()), float("nan"), out

    @torch.no_grad()
    def _targets(self, out, ends, task=None, window=None):
        """The critic's data from the window's rollout: (observations, TD(λ) targets, the guard's max |V|). ``task``:
        the window's (bounded actions, frozen normalisation); None: the config's without normalisation. ``window``:
        the :class:`Window` it ran (one with ``episode`` marks the episodes that ended inside it)."""
        config = self.config
        sim = make_task(self.train_sim, config) if task is None else task
        xs, current, t, f = self._window_states(out, window)
        costs = sim.cost(xs[1:], out.actions.detach())
        v_next = self._value(sim.obs(xs[1:]))
        at_limit = (torch.where(sane(sim, xs[-1]), v_next[-1], torch.zeros_like(v_next[-1])) if config.time_limit == "bootstrap"
                    else sim.terminal_cost(xs[-1]))
        dones = None
        if f is not None:  # an episode that ended inside the window: V_end there, the recursion restarts
            dones = f[1:]
            v_next = torch.where(dones > 0, window._end_value(xs[1:], v_next, t[1:] >= config.horizon), v_next)
            ends = (t[-1] >= config.horizon).to(v_next.dtype)
        elif config.td_dones == "step":  # a termination inside the window ends its episode there: V = 0, recursion restarts
            dones = 1 - alive(sim, xs[1:]) * torch.ones_like(v_next)
            v_next = (1 - dones) * v_next
        v_next[-1] = torch.where(ends > 0, at_limit, alive(sim, xs[-1]) * v_next[-1])
        v_next = torch.where(torch.isfinite(xs[1:]).all(-1), v_next, torch.zeros_like(v_next))
        value_max = float(torch.where(torch.isnan(v_next), torch.zeros_like(v_next), v_next.abs()).max())
        targets = torch.stack(td_lambda(costs, v_next, config.gamma, config.td_lambda, dones)).reshape(-1)
        return sim.obs(current[:-1]).reshape(-1, sim.obs_dim), targets, value_max

    def _critic_fit(self, obs, targets, orders) -> float:
        config = self.config
        rate = config.critic_lr * lr_at(config.schedule, 1.0, config.lr_final, config.total_updates, self.applied)
        for group in self.critic_opt.param_groups:
            group["lr"] = rate
        params = list(self.critic.parameters())
        for order in torch.as_tensor(orders):
            losses = []
            for idx in order.reshape(config.critic_minibatches, -1):
                self.critic_opt.zero_grad(set_to_none=True)
                loss = ((self.critic(obs[idx])[..., 0] - targets[idx]) ** 2).mean()
                loss.backward()
                optim.clip(config, params)
                self.critic_opt.step()
                losses.append(float(loss.detach()))
            last = float(np.mean(losses))
        with torch.no_grad():
            a = config.target_alpha
            for t, c in zip(self.target.parameters(), self.critic.parameters()):
                t.mul_(a).add_((1 - a) * c)
        return last

    # -- the steps the run loop calls -------------------------------------------------------------
    def run_epoch(self, data, epoch: int) -> dict[str, np.ndarray]:
        """One window per update; with ``on_nonfinite='stop'`` the epoch ends at the first non-finite update."""
        config, sim, rows = self.config, self.train_sim, []
        resets = torch.as_tensor(data.epoch(epoch), dtype=self.dtype)
        orders = data.critic_order(epoch, config.critic_iterations, config.window * config.batch)
        noises = torch.as_tensor(data.noise(epoch, config.window), dtype=self.dtype) if config.policy == "gaussian" else None
        mixing = self.flow.mixing  # a zeroth-/α-order flow (deterministic actor): its action noise over each window
        actions = (torch.as_tensor(data.mixing_noise(epoch, config.window, mixing.samples), dtype=self.dtype)
                   if mixing is not None else None)
        for u in range(resets.shape[0]):
            actor_sim, X0, task, ends, window = self._window(None if noises is None else noises[u], resets[u])
            self._last_window = (actor_sim, X0)  # for locate_nonfinite
            loss, cos, out = self._actor_step(actor_sim, X0, None if actions is None else actions[u])
            norm = float(optim.global_norm(self.params))
            finite = bool(np.isfinite(loss) and np.isfinite(norm))
            obs, targets, value_max = self._targets(out, ends, task, window)
            optim.clip(config, self.params)
            row = dict(loss=loss, grad_norm=norm, grad_norm_clipped=float(optim.global_norm(self.params)), cos_input_none=cos,
                       lr=self.sched.get_last_lr()[0], finite=finite, critic_loss=float("nan"), value_max=value_max,
                       **({k: float(v) for k, v in out.mixing.items()} if mixing is not None else {}))
            rows.append(row)
            check_guards(config, {k: [r[k] for r in rows] for k in rows[0]}, epoch)
            if finite:
                self.opt.step()
                row["critic_loss"] = self._critic_fit(obs, targets, orders[u])
                self.sched.step()
                self.applied += 1
            elif config.on_nonfinite == "stop":
                break
            with torch.no_grad():  # the environments go on (or restart) whether or not the update was applied
                xs, current, t, _ = self._window_states(out, window)
                x_h = xs[-1]
                self.steps = self.steps + config.window if t is None else t[-1].to(self.steps.dtype)
                done = (self.steps >= config.horizon) | ~torch.isfinite(x_h).all(-1) | (alive(sim, x_h) == 0)
                self.envs = torch.where(done[:, None], resets[u], x_h)
                self.steps = torch.where(done, torch.zeros_like(self.steps), self.steps)
                if self.rms is not None and finite:  # the published RunningMeanStd's samples: x_0 … x_{h−1}, next envs
                    seen = sim.obs(current[:-1]).reshape(-1, sim.obs_dim)
                    self.rms = rms_update(self.rms, torch.cat([seen, sim.obs(self.envs)]))
        return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}

    def locate_nonfinite(self, data, epoch: int, index: int) -> str:
        """Where the last epoch's failing update first went non-finite: the epoch stopped there without applying
        it, so the actor and critics are that update's; ``gradstop.diagnose`` traces its window."""
        window, X0 = self._last_window
        found = diagnose(self.policy, window, flows=[self.flow], horizon=self.config.window, x0=X0,
                         memory=self.config.memory, contributions=False)
        return "in the actor's window, " + explain(found, self.flow.name)

    def evaluate(self, x0: np.ndarray) -> dict[str, float]:
        """The policy at its mean (a Gaussian's) on the true sim, its actions bounded and (``obs_norm``) its observations
        normalised by the current statistics."""
        stats = self.rms[:2] if self.rms is not None else None
        return evaluate(self.config, make_task(self.sim, self.config, stats), self.policy, x0)

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict:
        extra = {"obs_rms": list(self.rms)} if self.rms is not None else {}
        return {**super().state(), "critic": self.critic.state_dict(), "target": self.target.state_dict(),
                "critic_optimizer": self.critic_opt.state_dict(), "envs": self.envs, "steps": self.steps, **extra}

    def load_state(self, data: bytes) -> dict:
        state = super().load_state(data)
        checkpoint.load_modules(state, critic=self.critic, target=self.target)
        self.critic_opt.load_state_dict(state["critic_optimizer"])
        self.envs, self.steps = state["envs"], state["steps"]
        if self.rms is not None:
            self.rms = tuple(state["obs_rms"])
        return state
