"""BPTT in PyTorch: eager updates, one per minibatch, mirroring ``gradstop.trainers.jax.bptt``.

Each update rolls the policy out from a minibatch of initial states, takes the flow's gradient
(``gs.rollout(...).loss.backward()``; for ``combined``/``directional`` ``gs.gradients``, which
also gives the cosine between the ``input`` and ``none`` gradients), clips it, and steps the
torch.optim optimizer and its LambdaLR schedule.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from gradstop import _policy
from gradstop.health.diagnose import diagnose, explain
from gradstop.flows import parse_flow
from gradstop.gradients import gradients
from gradstop.rollout import rollout
from gradstop.torch.policy import gaussian, get_weights, mlp, set_weights
from gradstop.trainers.episodes import UntilDone
from gradstop.trainers.noise import Noisy
from gradstop.trainers.torch import checkpoint, optim

__all__ = ["BPTT", "make_policy", "evaluate"]

FRAMEWORK = "torch"


def make_policy(config, sim):
    """The config's MLP policy (``actor_layer_norm``: LayerNorms), initialised from its seed with
    ``_policy.initial_policy_weights`` (the same in both frameworks)."""
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    if config.policy == "gaussian":
        policy = gaussian(sim.obs_dim, sim.action_dim, hidden=config.hidden, activation=config.activation, dtype=dtype,
                          seed=config.seed, init_std=config.init_std, layer_norm=config.actor_layer_norm)
    else:
        policy = mlp(sim.obs_dim, sim.action_dim, hidden=config.hidden, activation=config.activation, dtype=dtype, seed=config.seed,
                     layer_norm=config.actor_layer_norm)
    return set_weights(policy, _policy.initial_policy_weights(config, sim))


@torch.no_grad()
def evaluate(config, sim, policy, x0) -> dict[str, float]:
    """The policy over ``horizon`` steps from ``x0`` (flow-independent): test loss and mean success (NaN if none)."""
    dtype = next(policy.parameters()).dtype
    out = rollout(policy, sim, stop="none", horizon=config.horizon, x0=torch.as_tensor(x0, dtype=dtype))
    success = sim.success(out.states[-1]) if hasattr(sim, "success") else None
    if hasattr(sim, "reward"):
        after = out.states[1:]
        rewards = sim.reward(after)
        if hasattr(sim, "terminated"):  # up to and including the first step that ends the episode (Brax's count)
            before = torch.cumprod(1.0 - sim.terminated(after).to(rewards.dtype), 0)
            rewards = rewards * torch.cat([torch.ones_like(before[:1]), before[:-1]], 0)
        reward = rewards.sum(0).mean()
    else:
        reward = float("nan")
    return {"test_loss": float(out.loss), "test_success": float(success.mean()) if success is not None else float("nan"),
            "test_reward": float(reward)}


class BPTT:
    """The state of a PyTorch BPTT run (the policy, optimizer, schedule, applied-update count) and its steps."""

    framework = FRAMEWORK

    def __init__(self, config, sim, policy=None, model=None):
        self.config, self.sim = config, sim
        self.train_sim = sim if model is None else model  # the actor learns through the model, is scored on sim
        # until_done: the costs stop at each episode's first done (trainers/episodes.py); the initial states gain its flag
        self.episodes = UntilDone(self.train_sim) if config.until_done else None
        self.train_sim = self.episodes or self.train_sim
        # a Gaussian policy reads its noise from the state (trainers/noise.py); evaluation uses its mean
        self.noisy = Noisy(self.train_sim, config.horizon) if config.policy == "gaussian" else None
        self.rollout_sim = self.train_sim if self.noisy is None else self.noisy
        self.policy = make_policy(config, sim) if policy is None else policy
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.dtype = self.params[0].dtype
        self.opt = optim.optimizer(config, self.params)
        self.sched = optim.schedule(config, self.opt)
        self.applied = 0  # updates applied so far (skipped ones excluded): the schedule's clock
        self.flow = parse_flow(config.flow)

    def _direction(self, x0, noise=None) -> tuple[float, float, dict]:
        """Fill ``.grad`` with the flow's direction; returns (loss, cos_input_none or NaN, the zeroth-/α-order
        flows' statistics or {})."""
        config, flow = self.config, self.flow
        self.opt.zero_grad(set_to_none=True)
        if flow.mixed:
            out = rollout(self.policy, self.rollout_sim, stop=flow, horizon=config.horizon, x0=x0, impl=config.impl,
                          memory=config.memory, compile=config.compile, noise=noise)
            out.loss.backward()
            return float(out.loss.detach()), float("nan"), {k: float(v) for k, v in out.mixing.items()}
        if flow.combining:
            c_none, c_input = flow.components()
            out = gradients(self.policy, self.rollout_sim, flows=[c_none, c_input, flow], horizon=config.horizon, x0=x0,
                            impl=config.impl, memory=config.memory, compile=config.compile)
            named = dict(self.policy.named_parameters())
            for name, g in out.grads[flow.name].items():
                named[name].grad = g.detach().clone()
            return float(out.loss), float(out.cosine[(c_none.name, c_input.name)]), {}
        loss = rollout(self.policy, self.rollout_sim, stop=flow, horizon=config.horizon, x0=x0, impl=config.impl,
                       memory=config.memory, compile=config.compile).loss
        loss.backward()
        return float(loss.detach()), float("nan"), {}

    # -- the steps the run loop calls -------------------------------------------------------------
    @property
    def env_steps_per_update(self) -> int:
        return self.config.batch * self.config.horizon

    def compile(self, data, epoch: int) -> float:
        """Seconds spent compiling before the first epoch: with ``compile=True`` one gradient on the
        epoch's first minibatch, thrown away (it compiles the rollout's loops); eager: 0."""
        if not self.config.compile:
            return 0.0
        start = time.perf_counter()
        x0 = self._episode_start(torch.as_tensor(data.epoch(epoch)[0], dtype=self.dtype))
        self._direction(x0, self._noise(data, epoch)[0] if self.flow.mixed else None)
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def run_epoch(self, data, epoch: int) -> dict[str, np.ndarray]:
        """Apply one update per minibatch of the epoch's initial states; per-update metrics.

        With ``on_nonfinite='stop'`` the epoch ends at the first non-finite update (not applied).
        """
        config, rows = self.config, []
        x0s = self._episode_start(torch.as_tensor(data.epoch(epoch), dtype=self.dtype))
        if self.noisy is not None:
            x0s = self.noisy.wrap(x0s.flatten(0, 1), torch.as_tensor(data.noise(epoch, config.horizon), dtype=self.dtype)
                                  .flatten(0, 1)).unflatten(0, x0s.shape[:2])
        self._epoch_inputs = x0s  # for locate_nonfinite
        noises = self._noise(data, epoch) if self.flow.mixed else [None] * len(x0s)
        for x0, noise in zip(x0s, noises):
            loss, cos, stats = self._direction(x0, noise)
            norm = float(optim.global_norm(self.params))
            finite = bool(np.isfinite(loss) and np.isfinite(norm))
            optim.clip(config, self.params)
            row = dict(loss=loss, grad_norm=norm, grad_norm_clipped=float(optim.global_norm(self.params)),
                       cos_input_none=cos, lr=self.sched.get_last_lr()[0], finite=finite, critic_loss=float("nan"), **stats)
            rows.append(row)
            if not finite:
                if config.on_nonfinite == "stop":
                    break
                continue  # skip: neither the optimizer nor the schedule's clock moves
            self.opt.step()
            self.sched.step()
            self.applied += 1
        return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}

    def _episode_start(self, x0):
        """Initial states as the training rollout takes them: with until_done, each with its episode's flag."""
        return x0 if self.episodes is None else self.episodes.wrap(x0)

    def _noise(self, data, epoch: int) -> torch.Tensor:
        """A zeroth-/α-order flow's action noise for every update of ``epoch``, (updates, 2, N, H, batch, action_dim)."""
        return torch.as_tensor(data.mixing_noise(epoch, self.config.horizon, self.flow.mixing.samples), dtype=self.dtype)

    def locate_nonfinite(self, data, epoch: int, index: int) -> str:
        """Where update ``index`` of the last epoch first went non-finite: the epoch stopped there without
        applying it, so the policy holds that update's weights; ``gradstop.diagnose`` traces its rollout (a
        zeroth-/α-order flow: the rollout of its first-order part)."""
        flow = self.flow.first_order
        found = diagnose(self.policy, self.rollout_sim, flows=[flow], horizon=self.config.horizon,
                         x0=self._epoch_inputs[index], memory=self.config.memory, contributions=False)
        return explain(found, flow.name)

    def evaluate(self, x0: np.ndarray) -> dict[str, float]:
        """Test loss (flow-independent forward) and the task's success measure (NaN if none)."""
        return evaluate(self.config, self.sim, self.policy, x0)

    def weights(self) -> list[np.ndarray]:
        return get_weights(self.policy)

    def load_weights(self, weights) -> None:
        set_weights(self.policy, weights)

    # -- checkpoints ------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resumed run needs, as state dicts and tensors."""
        return {"policy": self.policy.state_dict(), "optimizer": self.opt.state_dict(), "schedule": self.sched.state_dict(),
                "applied": self.applied}

    def state_bytes(self, meta: dict) -> bytes:
        """The whole training state and ``meta`` as the bytes of a ``torch.save`` file."""
        return checkpoint.pack(self.state(), meta)

    read_meta = staticmethod(checkpoint.read_meta)

    def load_state(self, data: bytes) -> dict:
        state = checkpoint.unpack(data)
        checkpoint.load_modules(state, policy=self.policy)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["schedule"])
        self.applied = state["applied"]
        return state
