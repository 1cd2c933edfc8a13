"""A training run as one typed, immutable config: every setting that can change its numbers.

``TrainConfig`` is framework-neutral. It is saved beside a run's results (``config.json``) and
reloads to rerun it (``gradstop train --config run/config.json``); the CLI takes its fields as
flags (``--lr 3e-3``). A field's ``help`` metadata is its ``--help`` text.

Example::

    cfg = TrainConfig(sim="cartpole", sim_params={"poles": 2}, flow="combined", data="fixed", epochs=50)
    cfg = TrainConfig.from_dict(json.loads(Path("run/config.json").read_text()))
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import numbers
from typing import Any

import numpy as np

from gradstop._checks import IMPLS, MEMORY_POLICIES, check_horizon
from gradstop._policy import ACTIVATIONS, WEIGHT_INITS
from gradstop.flows import parse_flow
from sims import BUILTINS

__all__ = ["TrainConfig", "ALGOS", "ALGO_DEFAULTS", "OPTIMIZERS", "SCHEDULES", "DATA_MODES", "NONFINITE", "DTYPES", "POLICIES", "RUN_ONLY",
           "CRITIC_INITS", "CRITIC_OPTIMIZERS", "TD_DONES", "TIME_LIMITS", "ACTION_SQUASHES", "SHAC_EARLIER",
           "MODEL_USES"]

ALGOS = ("bptt", "shac")
MODEL_USES = ("chain", "surrogate")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "linear", "cosine")
DATA_MODES = ("fresh", "fixed")
NONFINITE = ("stop", "skip")
DTYPES = ("float32", "float64")
POLICIES = ("deterministic", "gaussian")
CRITIC_INITS = ("orthogonal", "uniform")
CRITIC_OPTIMIZERS = ("actor", "adam")
TD_DONES = ("step", "window")
TIME_LIMITS = ("bootstrap", "terminal")
ACTION_SQUASHES = ("tanh", "clip", "none")
# Published defaults that differ from the dataclass's (which are BPTT's). SHAC: Xu et al., "Accelerated Policy
# Learning with Parallel Differentiable Simulation", ICLR 2022, and its code's cartpole_swing_up config: actor
# lr 1e-2, critic lr 1e-3, linear decay to 1e-5, Adam betas (0.7, 0.95), global-norm clipping 1.0, 64 envs,
# window 32, MLPs 64×64 ELU, γ 0.99, λ 0.95, 16 critic passes of 4 minibatches, target α 0.2; and its code's
# algorithms/shac.py and models/critic.py: a critic with LayerNorm and orthogonal init, an Adam critic like the actor's,
# TD(λ) with per-step dones, a time-limit end bootstrapped with V, and its divergence checks; and its actor
# (models/actor.py ActorStochasticMLP, which the config selects): LayerNorms, Gaussian with log σ = −1 at the start,
# actions squashed by tanh before the step, observations normalised by a running mean and std (docs/guide.md, SHAC).
ALGO_DEFAULTS = {
    "bptt": {},
    "shac": dict(lr=1e-2, critic_lr=1e-3, schedule="linear", lr_final=1e-3, beta1=0.7, beta2=0.95, clip_norm=1.0,
                 batch=64, window=32, hidden=(64, 64), activation="elu", updates_per_epoch=8, horizon=256,
                 critic_layer_norm=True, critic_init="orthogonal", critic_optimizer="actor", td_dones="step",
                 time_limit="bootstrap", guards=True, actor_layer_norm=True, policy="gaussian", init_std=math.exp(-1.0),
                 action_squash="tanh", obs_norm=True),
}
# gradstop's SHAC before it followed the published code in each of these: ``TrainConfig(algo="shac", **SHAC_EARLIER)``
# is that variant (a deterministic, unbounded actor; no LayerNorm; a uniform-initialised critic with its own Adam;
# raw observations; the time limit as terminal; dones seen at window ends; no guards). Its init_std, which a
# deterministic actor never reads, is the dataclass default that configs of that variant hold: the same runs.
SHAC_EARLIER = dict(critic_layer_norm=False, critic_init="uniform", critic_optimizer="adam", td_dones="window",
                    time_limit="terminal", guards=False, actor_layer_norm=False, policy="deterministic",
                    action_squash="none", obs_norm=False, init_std=0.5)
# Fields that do not change a run's numbers (up to a non-finite update): a resumed run may differ in them.
RUN_ONLY = ("checkpoint_every", "on_nonfinite", "compile")
# Fields added after configs were first written: a config file without them gets these values, and a config
# holding one at this value hashes as it did before the field existed (``identity`` leaves it out).
ADDED_LATER = {"compile": False, "weight_init": "torch", "adam_eps": 1e-8, "validation": False,
               "critic_layer_norm": False, "critic_init": "uniform", "critic_optimizer": "adam", "td_dones": "window",
               "time_limit": "terminal", "guards": False, "actor_layer_norm": False, "action_squash": "none", "obs_norm": False,
               "model_use": "chain", "max_seconds": None, "until_done": False}


def _f(default, help: str, **kw):
    if isinstance(default, (dict, list, tuple)) and not isinstance(default, tuple):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (one flow, one seed). Fields not given take the algorithm's published
    defaults (``ALGO_DEFAULTS``: ``TrainConfig(algo="shac")`` is SHAC's published configuration, not BPTT's)."""

    algo: str = _f("bptt", f"training algorithm: {' | '.join(ALGOS)}")
    # -- the task ---------------------------------------------------------------------------------
    sim: str = _f("cartpole", f"simulator: a built-in ({', '.join(BUILTINS)}), brax:<env>, a name given to "
                  "sims.register, or your own as package.module:Class, importable from the current directory "
                  "(docs/simulators.md)")
    backend: str = _f("jax", "framework: jax or torch")
    preset: str | None = _f(None, "simulator preset (e.g. cartpole's 'literature')")
    sim_params: dict = _f({}, "simulator parameters, e.g. {'poles': 2} (CLI: --param poles=2, repeatable)")
    horizon: int = _f(100, "rollout length H")
    # -- the gradient -----------------------------------------------------------------------------
    flow: str = _f("none", "gradient flow (gradstop.flows), e.g. input, combined, input+decay:0.9")
    impl: str = _f("native", f"rollout implementation: {' | '.join(IMPLS)}")
    memory: str = _f("residuals", f"fused sweep's memory policy: {' | '.join(MEMORY_POLICIES)}")
    compile: bool = _f(False, "torch BPTT with a deterministic policy: the compiled fast path (gs.rollout(..., "
                       "compile=True); about 10–30 s of compile at the start, the same gradients)")
    # -- the data ---------------------------------------------------------------------------------
    data: str = _f("fresh", "initial states: 'fresh' (new ones every update) or 'fixed' (a training set iterated by epoch)")
    train_size: int = _f(256, "data=fixed: number of training initial states, drawn once")
    test_size: int = _f(256, "initial states of the test set, drawn once (both data modes)")
    validation: bool = _f(False, "also evaluate on a validation set (test_size states from a stream of its own) at every "
                                 "evaluation; summary.json then names the evaluation with the lowest validation loss")
    batch: int = _f(8, "initial states per update")
    shuffle: bool = _f(True, "data=fixed: reshuffle the training set every epoch (False: one fixed order)")
    updates_per_epoch: int = _f(32, "data=fresh: updates per epoch (data=fixed: train_size // batch)")
    epochs: int = _f(10, "number of epochs")
    eval_every: int = _f(1, "evaluate on the test set every this many epochs (and after the last)")
    until_done: bool = _f(False, "BPTT on a terminating task (the sim's terminated(x), e.g. Brax's done): each rollout's "
                                 "costs stop after its episode's first done, that step included, as Brax's evaluator "
                                 "counts episode reward (default: the rollout pays on past done)")
    max_seconds: float | None = _f(None, "a wall-clock budget: the run ends after the first epoch that brings its seconds "
                                   "(compile, training and evaluation) to this, evaluated there, or after --epochs; for "
                                   "comparisons at equal wall-clock (the numbers then depend on the machine)")
    # -- the policy -------------------------------------------------------------------------------
    hidden: tuple = _f((64, 64), "hidden layer widths of the MLP policy (CLI: 64,64)")
    activation: str = _f("tanh", f"hidden activation: {' | '.join(ACTIVATIONS)}")
    zero_last: bool = _f(False, "initialise the last layer to zero (the policy starts at a = 0)")
    weight_init: str = _f("torch", f"policy weight init: {' | '.join(WEIGHT_INITS)} (torch: W, b ~ U(±1/√fan_in); "
                          "glorot: Keras' default, W ~ U(±√(6/(fan_in+fan_out))), b = 0, as the published TensorFlow code)")
    policy: str = _f("deterministic", "policy: 'deterministic' or 'gaussian' (a = μ(o) + σ·ε, learned state-independent σ, "
                     "reparameterised noise; evaluated at its mean)")
    init_std: float = _f(0.5, "policy=gaussian: initial σ (shac: e^-1, the published log σ = −1)")
    actor_layer_norm: bool = _f(False, "a LayerNorm (learned scale and offset) after each hidden activation of the policy "
                                "(as the published SHAC actor)")
    # -- the optimizer ----------------------------------------------------------------------------
    optimizer: str = _f("adam", f"optimizer: {' | '.join(OPTIMIZERS)}")
    lr: float = _f(1e-3, "learning rate (peak of the schedule)")
    schedule: str = _f("constant", f"learning-rate schedule over all updates: {' | '.join(SCHEDULES)}")
    lr_final: float = _f(0.0, "linear/cosine: final learning rate as a fraction of lr")
    beta1: float = _f(0.9, "adam/adamw: first-moment decay")
    beta2: float = _f(0.999, "adam/adamw: second-moment decay")
    adam_eps: float = _f(1e-8, "adam/adamw: ε added to √v (optax's and torch's default 1e-8; Keras uses 1e-7)")
    weight_decay: float = _f(0.01, "adamw: decoupled weight decay (multiplied by the learning rate)")
    momentum: float = _f(0.0, "sgd: momentum (0: plain SGD)")
    clip_value: float | None = _f(None, "clip each gradient component to ±this (applied before clip_norm)")
    clip_norm: float | None = _f(None, "clip the gradient's global L2 norm to this")
    # -- SHAC (algo='shac'; Xu et al., ICLR 2022) ------------------------------------------------
    window: int = _f(32, "shac: the actor's short horizon h (batch = parallel environments; horizon = episode length)")
    gamma: float = _f(0.99, "shac: discount γ")
    td_lambda: float = _f(0.95, "shac: λ of the critic's TD(λ) targets")
    critic_lr: float = _f(1e-3, "shac: critic learning rate (same schedule, optimizer betas and clipping as the actor)")
    critic_hidden: tuple = _f((64, 64), "shac: hidden layer widths of the critic MLP (CLI: 64,64)")
    critic_activation: str = _f("elu", f"shac: critic activation: {' | '.join(ACTIVATIONS)}")
    critic_iterations: int = _f(16, "shac: passes over the window's data per critic fit")
    critic_minibatches: int = _f(4, "shac: minibatches per critic pass")
    target_alpha: float = _f(0.2, "shac: target critic <- α·target + (1−α)·critic after each fit")
    critic_layer_norm: bool = _f(False, "shac: a LayerNorm after each hidden activation of the critic (as published)")
    critic_init: str = _f("uniform", f"shac: critic weight init: {' | '.join(CRITIC_INITS)} (orthogonal: every layer's W "
                          "orthogonal times √2, b = 0, as published; uniform: W, b ~ U(±1/√fan_in))")
    critic_optimizer: str = _f("adam", f"shac: the critic's optimizer: {' | '.join(CRITIC_OPTIMIZERS)} (actor: the actor's "
                               "--optimizer with its betas, adam_eps, weight_decay, momentum, as published; adam: Adam "
                               "with the actor's betas and ε 1e-8 whatever --optimizer says)")
    td_dones: str = _f("window", f"shac: where an episode may end inside a window: {' | '.join(TD_DONES)} (step: at any "
                       "step, as published: its time limit or an early termination (sim.terminated) ends it there for the "
                       "actor's loss and the critic's TD(λ) targets, and the environment restarts within the window; "
                       "window: only at window ends, so the horizon must be a multiple of the window)")
    time_limit: str = _f("terminal", f"shac: an episode's end at the time limit (horizon): {' | '.join(TIME_LIMITS)} "
                         "(bootstrap: the actor's window and the critic's targets end in the target critic's V, as "
                         "published; terminal: in the task's terminal cost)")
    action_squash: str = _f("none", f"shac: how the actor's actions are bounded before the simulator's step and cost: "
                            f"{' | '.join(ACTION_SQUASHES)} (tanh: a → tanh(a), as published; clip: a → clip(a, −1, 1), "
                            "zero gradient outside; none: unbounded; evaluation bounds them the same way)")
    obs_norm: bool = _f(False, "shac: normalise observations by a running mean and std of those the actor's windows saw, "
                        "frozen inside each window (actor and critic), as published; evaluation uses the current ones")
    guards: bool = _f(False, "shac: stop the run when the target critic's |V| or the actor's gradient norm (before "
                      "clipping) exceeds 1e6, as published (a NaN still follows --on-nonfinite)")
    # -- a learned world model in the chain --------------------------------------------------------
    world_model: bool = _f(False, "train the actor through a world model fitted to the sim first (evaluate on the true sim)")
    model_hidden: int = _f(128, "world model: width of its two tanh hidden layers (the neural sim's architecture)")
    model_transitions: int = _f(20000, "world model: transitions of the true sim it is fitted to (random actions)")
    model_epochs: int = _f(30, "world model: passes of Adam over the transitions")
    model_lr: float = _f(1e-3, "world model: Adam learning rate")
    model_batch: int = _f(256, "world model: minibatch size")
    model_use: str = _f("chain", f"world model: how the actor uses it: {' | '.join(MODEL_USES)} (chain: its forward and "
                        "derivatives, the model in place of the sim; surrogate: the sim's own forward with the model's step "
                        "derivatives, sims.surrogate, as the flow part surrogate: does with a simulator)")
    # -- the run ----------------------------------------------------------------------------------
    seed: int = _f(0, "seed of the initial weights, the data sets and the data order")
    dtype: str = _f("float32", f"parameter and state dtype: {' | '.join(DTYPES)}")
    checkpoint_every: int = _f(1, "save the run's whole state every this many epochs (and after the last)")
    on_nonfinite: str = _f("stop", "a non-finite loss or gradient: 'stop' the run, or 'skip' the update and count it")

    def __post_init__(self):
        _check_types(self)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "critic_hidden", tuple(self.critic_hidden))
        object.__setattr__(self, "sim_params", dict(self.sim_params))
        if not isinstance(self.sim, str) or not self.sim:
            raise ValueError(f"sim must be a simulator's name, got {self.sim!r}: a built-in (sims.names()), brax:<env>, a "
                             "name given to sims.register, or 'package.module:Class'")
        _choice("algo", self.algo, ALGOS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("data", self.data, DATA_MODES)
        _choice("on_nonfinite", self.on_nonfinite, NONFINITE)
        _choice("dtype", self.dtype, DTYPES)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("critic_activation", self.critic_activation, ACTIVATIONS)
        _choice("policy", self.policy, POLICIES)
        _choice("impl", self.impl, IMPLS)
        _choice("memory", self.memory, MEMORY_POLICIES)
        _choice("weight_init", self.weight_init, WEIGHT_INITS)
        _choice("critic_init", self.critic_init, CRITIC_INITS)
        _choice("critic_optimizer", self.critic_optimizer, CRITIC_OPTIMIZERS)
        _choice("td_dones", self.td_dones, TD_DONES)
        _choice("time_limit", self.time_limit, TIME_LIMITS)
        _choice("action_squash", self.action_squash, ACTION_SQUASHES)
        if self.backend not in ("jax", "torch"):
            raise ValueError(f"unknown backend {self.backend!r}; choose one of ('jax', 'torch')")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, got {self.compile!r}")
        if self.compile and self.backend != "torch":
            raise ValueError("compile is the PyTorch fast path; JAX trainers are jitted already: drop --compile")
        if self.compile and (self.algo != "bptt" or self.policy != "deterministic" or self.world_model):
            raise ValueError("compile=True runs BPTT with a deterministic policy on the true simulator; SHAC, "
                             "policy=gaussian and world_model=True run eager: drop --compile")
        parse_flow(self.flow)
        check_horizon(self.horizon)
        for name in ("train_size", "test_size", "batch", "updates_per_epoch", "epochs", "eval_every", "checkpoint_every",
                     "window", "critic_iterations", "critic_minibatches", "model_hidden", "model_transitions",
                     "model_epochs", "model_batch"):
            _positive_int(name, getattr(self, name))
        for name in ("hidden", "critic_hidden"):
            for h in getattr(self, name):
                _positive_int(name, h)
        _positive_int("seed", self.seed, minimum=0)
        if self.data == "fixed" and self.train_size < self.batch:
            raise ValueError(f"train_size ({self.train_size}) is smaller than batch ({self.batch}): an epoch would have no update; "
                             "raise train_size or lower batch")
        _number("lr", self.lr, low=0.0, strict=True)
        _number("lr_final", self.lr_final, low=0.0, high=1.0)
        _number("beta1", self.beta1, low=0.0, high=1.0, strict_high=True)
        _number("beta2", self.beta2, low=0.0, high=1.0, strict_high=True)
        _number("adam_eps", self.adam_eps, low=0.0, strict=True)
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("momentum", self.momentum, low=0.0, high=1.0, strict_high=True)
        _number("gamma", self.gamma, low=0.0, high=1.0, strict=True)
        _number("td_lambda", self.td_lambda, low=0.0, high=1.0, strict_high=True)
        _number("critic_lr", self.critic_lr, low=0.0, strict=True)
        _number("target_alpha", self.target_alpha, low=0.0, high=1.0)
        _number("model_lr", self.model_lr, low=0.0, strict=True)
        _number("init_std", self.init_std, low=0.0, strict=True)
        if self.until_done and self.algo != "bptt":
            raise ValueError("until_done is BPTT's (algo='bptt'): SHAC's windows end each episode at its done themselves "
                             "(td_dones='step'); drop --until-done")
        if self.algo == "bptt" and (self.action_squash != "none" or self.obs_norm):
            given = "action_squash=" + repr(self.action_squash) if self.action_squash != "none" else "obs_norm=True"
            raise ValueError(f"{given} is SHAC's (algo='shac'); BPTT steps the simulator with the policy's own actions and "
                             "observations: use --algo shac, or --action-squash none --no-obs-norm")
        _choice("model_use", self.model_use, MODEL_USES)
        if self.model_use != "chain" and not self.world_model:
            raise ValueError(f"model_use={self.model_use!r} says how to use the fitted world model, but world_model is off: "
                             "add --world-model (world_model=True), or drop --model-use")
        if self.world_model and self.model_transitions < self.model_batch:
            raise ValueError(f"model_transitions ({self.model_transitions}) is smaller than model_batch ({self.model_batch}); raise it")
        if self.algo == "shac":
            if self.data != "fresh":
                raise ValueError("algo shac keeps its environments running and resets them with fresh initial states: use data='fresh' (--data fresh)")
            if self.window > self.horizon:
                raise ValueError(f"algo shac: the window ({self.window} steps) is longer than the episode (horizon={self.horizon}); "
                                 f"shorten it (--window {self.horizon}) or lengthen the episode (--horizon {self.window})")
            if self.horizon % self.window and self.td_dones == "window":
                raise ValueError(f"algo shac with td_dones='window' ends episodes at window ends only, so the episode length "
                                 f"horizon={self.horizon} must be a multiple of window={self.window} (e.g. --horizon "
                                 f"{self.window * max(1, round(self.horizon / self.window))}); td_dones='step' (the published "
                                 "code's) ends them at any step of a window")
            if (self.window * self.batch) % self.critic_minibatches:
                raise ValueError(f"algo shac: window·batch = {self.window * self.batch} samples do not split into "
                                 f"critic_minibatches={self.critic_minibatches} equal minibatches; change one of them")
        for name in ("clip_value", "clip_norm", "max_seconds"):
            if getattr(self, name) is not None:
                _number(name, getattr(self, name), low=0.0, strict=True)

    # -- derived ----------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        """Updates per epoch."""
        return self.train_size // self.batch if self.data == "fixed" else self.updates_per_epoch

    @property
    def total_updates(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def flow_slug(self) -> str:
        """The flow's name as a file-name part (``input+decay:0.9`` -> ``input+decay_0.9``)."""
        return parse_flow(self.flow).name.replace(":", "_")

    # -- files ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"], d["critic_hidden"] = list(self.hidden), list(self.critic_hidden)
        return d

    @classmethod
    def for_algo(cls, algo: str, **fields) -> "TrainConfig":
        """A config with ``algo``'s published defaults (``ALGO_DEFAULTS``) under ``fields``."""
        _choice("algo", algo, ALGOS)
        return cls(**{**ALGO_DEFAULTS[algo], "algo": algo, **fields})

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "the config") -> "TrainConfig":
        """Build a config from a dict (as ``to_dict`` wrote it); every field must be present and known."""
        if not isinstance(data, dict):
            raise ValueError(f"{source} must be a JSON object of TrainConfig fields, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        data = {**{k: v for k, v in ADDED_LATER.items() if k not in data}, **data}
        unknown = sorted(set(data) - set(names))
        missing = [n for n in names if n not in data]
        if unknown:
            hints = {u: _closest(u, names) for u in unknown}
            raise ValueError(f"{source} has unknown field(s) " + ", ".join(
                f"{u!r}" + (f" (did you mean {hints[u]!r}?)" if hints[u] else "") for u in unknown)
                + f"; the fields are: {', '.join(names)}")
        if missing:
            raise ValueError(f"{source} lacks field(s) {', '.join(map(repr, missing))}; write the whole config "
                             "(`gradstop train --print-config` prints one to start from)")
        return cls(**data)

    def identity(self) -> dict:
        """The fields that determine the run's numbers (all but ``RUN_ONLY``; a field added later is left out
        at its ``ADDED_LATER`` value, so configs written before it existed keep their hash)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in RUN_ONLY and not (k in ADDED_LATER and v == ADDED_LATER[k])}

    def differences(self, other: "TrainConfig") -> list[str]:
        """Human-readable ``field: other -> self`` for each identity field that differs."""
        a, b = other.identity(), self.identity()
        return [f"{k}: {a.get(k, ADDED_LATER.get(k))!r} -> {b.get(k, ADDED_LATER.get(k))!r}" for k in {**a, **b}
                if a.get(k, ADDED_LATER.get(k)) != b.get(k, ADDED_LATER.get(k))]

    def digest(self) -> str:
        """A short hash of the identity fields (names default results folders)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]


_EXAMPLES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
             "tuple": "a list of integers, e.g. [64, 64]", "dict": "an object of simulator parameters, e.g. {\"poles\": 2}"}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if kind == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if kind == "str":
        return isinstance(value, str)
    if kind == "tuple":
        return isinstance(value, (list, tuple)) and all(_type_ok("int", v) for v in value)
    if kind == "dict":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    raise AssertionError(f"TrainConfig field type {kind!r} has no check")


def _check_types(config) -> None:
    """Every field against its declared type, before anything reads it: a config file's ``"zero_last": "no"`` would
    otherwise be truthy, and ``"hidden": "64,64"`` a sequence of characters."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds:
            continue
        kind = kinds[0]
        if not _type_ok(kind, value):
            optional = " or null" if "None" in kinds else ""
            raise ValueError(f"{f.name} must be {_EXAMPLES[kind]}{optional}, got {value!r} ({type(value).__name__})")


_DATACLASS_INIT = TrainConfig.__init__


def _init(self, *args, **fields) -> None:
    """The dataclass's ``__init__`` with the algorithm's published defaults under the fields given: a field not
    given takes ``ALGO_DEFAULTS[algo]``'s value where it has one (SHAC's learning rates, betas, clipping, batch,
    window, network, horizon), else the dataclass default (BPTT's)."""
    if args:
        raise TypeError("TrainConfig takes its fields by name, e.g. TrainConfig(sim='cartpole', flow='input')")
    _DATACLASS_INIT(self, **{**ALGO_DEFAULTS.get(fields.get("algo", "bptt"), {}), **fields})


_init.__signature__ = inspect.signature(_DATACLASS_INIT)
TrainConfig.__init__ = _init


def _choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        hint = _closest(value, valid) if isinstance(value, str) else None
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(valid)}" + (f" (did you mean {hint!r}?)" if hint else ""))


def _closest(word: str, options) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return found[0] if found else None


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def _number(name, value, *, low=None, high=None, strict=False, strict_high=False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value < high if strict_high else value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if strict else f"≥ {low}")
        hi = "" if high is None else (f"< {high}" if strict_high else f"≤ {high}")
        raise ValueError(f"{name} must be a finite number {' and '.join(p for p in (lo, hi) if p)}, got {value!r}")
