"""Populations: S runs of one config (BPTT or SHAC) that differ only in their seed, trained together.

In JAX the S runs are one ``jax.vmap``-ed, jitted program (``trainers/jax/population.py``): each
epoch is a single call whose arrays carry a leading population axis. In PyTorch they run one after
another (``trainers/torch/population.py``): ``torch.func`` could stack the parameters, but the
rollout's eager loop and the fused sweep's ``autograd.Function`` do not vmap.

Every member is the run ``train(replace(config, seed=s))`` would make: same initial weights, same
data, same steps (a test holds the JAX population to sequential runs).

    results = train_population(TrainConfig(sim="cartpole", flow="combined", epochs=20), seeds=range(8))
"""

from __future__ import annotations

import dataclasses
import importlib

from gradstop.trainers.config import TrainConfig

__all__ = ["train_population"]


def train_population(config: TrainConfig, seeds, *, progress: bool = False) -> list:
    """Train one run per seed in ``seeds`` (in memory); returns a ``RunResult`` per seed, in order."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds=range(8)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeats a seed: {seeds}")
    if config.max_seconds is not None:
        raise ValueError(f"a population trains its members in one program, so a wall-clock budget (max_seconds="
                         f"{config.max_seconds}) cannot stop one alone: train each seed with gradstop.trainers.train, or "
                         "drop max_seconds and give epochs")
    configs = [dataclasses.replace(config, seed=s) for s in seeds]  # validates each seed
    module = importlib.import_module(f"gradstop.trainers.{config.backend}.population")
    return module.train_population(configs, progress=progress)
