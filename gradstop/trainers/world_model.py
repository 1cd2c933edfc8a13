"""A learned world model in the chain: fit the ``neural`` architecture to a simulator's transitions.

``fit(config, sim)`` collects transitions of the true simulator in NumPy (random initial states
from its distribution, then ``model_rollout`` steps of uniform random actions in [−1, 1]: the same
data for both frameworks), fits an MLP [x, a] -> (x' − x)/dt by Adam on the mean squared error
(``trainers/<framework>/world_model.py``), and returns :class:`sims.learned.Learned`, a simulator
whose step is the model and whose costs are the true ones. With ``world_model=True`` a trainer
trains the actor through it — BPTT: actor → model; SHAC: actor → model → critic — with the flows
choosing which of the model's edges carry gradient, and evaluates on the true simulator.
"""

from __future__ import annotations

import importlib

import numpy as np

from sims.learned import Learned, layers_from_weights

__all__ = ["fit", "transitions", "one_step_error", "batches_of", "MODEL_ROLLOUT"]

MODEL_ROLLOUT = 20  # steps of random actions after each sampled initial state


def _numpy_twin(config):
    from sims import make

    return make(config.sim, backend="numpy", preset=config.preset, **config.sim_params)


def transitions(sim, n: int, seed: int, rollout: int = MODEL_ROLLOUT):
    """``n`` transitions (x, a, x') of ``sim`` (a NumPy-backend twin) under uniform random actions."""
    from gradstop.trainers.data import initial_states

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD1A]))
    starts = -(-n // rollout)
    x = initial_states(sim, starts, rng)
    xs, actions, nexts = [], [], []
    for _ in range(rollout):
        a = rng.uniform(-1.0, 1.0, (starts, sim.action_dim))
        x_next = sim.step(x, a)
        xs.append(x), actions.append(a), nexts.append(x_next)
        x = x_next
    cat = lambda parts: np.concatenate(parts)[:n]  # noqa: E731
    return cat(xs), cat(actions), cat(nexts)


def fit(config, sim) -> Learned:
    """Fit a world model of ``sim`` with the config's ``model_*`` settings; a :class:`Learned` in ``sim``'s backend."""
    true = _numpy_twin(config)
    x, a, x_next = transitions(true, config.model_transitions, config.seed)
    target = (x_next - x) / true.dt
    module = importlib.import_module(f"gradstop.trainers.{sim.backend}.world_model")
    weights = module.fit_mlp(np.concatenate([x, a], -1), target, config)
    clip = float(2.0 * np.abs(target).max())  # the architecture's output clip, well outside the data
    return Learned(true=sim, layers=layers_from_weights(weights), clip=clip)


def one_step_error(model: Learned, config, n: int = 2000, seed: int = 12345) -> float:
    """RMS one-step error of ``model`` on fresh transitions, relative to the RMS size of a true step ‖x' − x‖."""
    true = _numpy_twin(config)
    x, a, x_next = transitions(true, n, seed)
    twin = Learned(true=true, layers=model.layers, clip=model.clip)
    predicted = twin.step(x, a)
    return float(np.sqrt(np.mean(np.sum((predicted - x_next) ** 2, -1)) / np.mean(np.sum((x_next - x) ** 2, -1))))


def batches_of(n: int, batch: int, seed: int, epoch: int) -> np.ndarray:
    """The model fit's minibatch indices in ``epoch`` (both frameworks use the same), (n // batch, batch)."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0xF17, epoch])).permutation(n)
    return order[: (n // batch) * batch].reshape(-1, batch)
