"""Trained policies back out of their run folders, and rolled out without gradients.

A ``gradstop train`` run folder holds the run's ``config.json`` and, once finished, its final weights
``policy.npz``; a results folder holds one such run folder per flow (and ``sweep.json``)::

    from gradstop.trainers.load import initial_states, load_run, run_folders, trajectories

    config, sim, policy = load_run("results/train-cartpole-jax-1a2b3c4d/combined")
    states = trajectories(policy, sim, steps=config.horizon, x0=initial_states(sim, seed=0, episodes=4))
    states.shape      # (H + 1, 4, state_dim): x_0 ... x_H of each episode, as NumPy

The policy is the config's own (``hidden``, ``activation``, ``policy``, ``dtype``, built by the trainer
of its ``backend``) holding the saved weights; the simulator is the config's (``make_sim``), the true one
also for a run trained through a world model. ``gradstop play`` draws these states (``sims.draw``).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from gradstop._io import read_json
from gradstop.trainers.config import TrainConfig
from gradstop.trainers.run import make_sim

__all__ = ["read_config", "run_folders", "load_run", "initial_states", "trajectories"]

EXAMPLE = "e.g. results/train-cartpole-jax-1a2b3c4d (a results folder) or one of its flow folders"


def read_config(run_dir: Path | str) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run folder's ``config.json``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} holds no config.json, so it is not a gradstop train run folder ({EXAMPLE})")
    return TrainConfig.from_dict(read_json(path, "the run folder is damaged; retrain it"), source=str(path))


def _finished(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "policy.npz").is_file()


def run_folders(path: Path | str) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) run folders at ``path``: the folder itself if it is a run, else the runs it holds.

    A ``gradstop train`` results folder gives its flow folders in the order of its ``sweep.json``; any other
    folder its subfolders holding a ``config.json``, by name (e.g. a ``gradstop sweep`` folder's ``runs/``).
    A run is finished once its ``policy.npz`` is written.

    Raises:
      ValueError: ``path`` is no folder, or neither a run nor a folder holding runs.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: no such folder; give a gradstop train results or run folder ({EXAMPLE})")
    if (path / "config.json").is_file():
        return ([path], []) if _finished(path) else ([], [path])
    sweep = path / "sweep.json"
    if sweep.is_file():
        try:
            runs = json.loads(sweep.read_text())["runs"]
            folders = [path / TrainConfig.from_dict(r, source=str(sweep)).flow_slug for r in runs]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{sweep} is not a gradstop train sweep.json ({type(err).__name__}: {err})") from None
    else:
        folders = sorted(p for p in path.iterdir() if (p / "config.json").is_file())
    if not folders:
        raise ValueError(f"{path} is not a gradstop train run (no config.json) nor a folder holding runs ({EXAMPLE})")
    return [f for f in folders if _finished(f)], [f for f in folders if not _finished(f)]


def load_run(run_dir: Path | str):
    """(config, sim, policy) of a finished run folder: its config, its simulator, its final policy.

    The policy lives in the config's backend (a ``gs.jax.mlp``/``gs.torch.mlp``, or the Gaussian policy,
    which acts at its mean when given plain observations). A JAX run in float64 needs JAX's 64-bit mode on
    first (``jax.config.update("jax_enable_x64", True)``; ``gradstop play`` does that).

    Raises:
      ValueError: not a run folder, an unfinished run (no ``policy.npz`` yet), or weights that do not fit
        the config's policy.
    """
    folder = Path(run_dir)
    config = read_config(folder)
    path = folder / "policy.npz"
    if not path.is_file():
        raise ValueError(f"{folder} holds an unfinished run (no policy.npz yet): run its gradstop train command again "
                         "to finish it, then play it")
    sim = make_sim(config)
    policy = importlib.import_module(f"gradstop.trainers.{config.backend}.bptt").make_policy(config, sim)
    with np.load(path) as saved:  # np.savez's arr_0, arr_1, ...: in the order the weights were written
        weights = [saved[k] for k in sorted(saved.files, key=lambda k: int(k.rpartition("_")[2]))]
    try:
        policy = importlib.import_module(f"gradstop.{config.backend}").set_weights(policy, weights)
    except ValueError as err:
        raise ValueError(f"{path} does not fit the policy of {folder / 'config.json'} ({err})") from None
    return config, sim, policy


def initial_states(sim, seed: int = 0, episodes: int = 1):
    """``episodes`` initial states drawn by ``sim.reset`` from ``seed``: a NumPy array (episodes, state_dim), or the
    simulator's own pytree for a pytree-state simulator (Brax). Pass it to :func:`trajectories` of several policies
    (of either backend) to start them all from the same states."""
    x0 = sim.reset(seed, episodes)
    if getattr(sim, "pytree_state", False):
        return x0
    return x0.detach().cpu().numpy() if hasattr(x0, "detach") else np.asarray(x0)


def trajectories(policy, sim, *, steps: int, x0=None, seed: int = 0, episodes: int = 1):
    """The states x_0 … x_steps of ``policy`` acting in ``sim``, computed without gradients.

    Args:
      policy, sim: as from :func:`load_run`.
      steps: number of steps (a run's ``config.horizon`` replays its training episodes' length).
      x0: initial states, e.g. from :func:`initial_states`; None draws ``episodes`` of them from ``seed``.

    Returns:
      A NumPy array (steps + 1, episodes, state_dim), time first; a pytree of them for a pytree-state
      simulator (Brax).
    """
    from gradstop._policy import get_weights
    from gradstop.rollout import rollout

    x0 = initial_states(sim, seed, episodes) if x0 is None else x0
    dtype = get_weights(policy)[0].dtype
    if sim.backend == "torch":
        import torch

        with torch.no_grad():
            out = rollout(policy, sim, stop="none", horizon=steps, x0=torch.as_tensor(np.asarray(x0), dtype=getattr(torch, dtype.name)))
        return out.states.detach().cpu().numpy()
    import jax
    import jax.numpy as jnp

    if not getattr(sim, "pytree_state", False):
        x0 = jnp.asarray(np.asarray(x0), dtype)
    out = rollout(policy, sim, stop="none", horizon=steps, x0=x0)
    return jax.tree.map(np.asarray, out.states)
