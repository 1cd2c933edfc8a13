"""Populations: S runs of one config (BPTT or SHAC) that differ only in their seed, trained together.

In JAX the S runs are one ``jax.vmap``-ed, jitted program (``trainers/jax/population.py``): each
epoch is a single call whose arrays carry a leading population axis. In PyTorch they run one after
another (``trainers/torch/population.py``): ``torch.func`` could stack the parameters, but the
rollout's eager loop and the fused sweep's ``autograd.Function`` do not vmap.

Every member is the run ``train(replace(config, seed=s))`` would make: same initial weights, same
data, same steps (a test holds the JAX population to sequential runs).

    results = train_population(TrainConfig(sim="cartpole", flow="combined", epochs=20), seeds=range(8))

With ``out`` (a folder per seed) each member is written as ``train(config, out=folder)`` leaves a finished run,
its ``summary.json`` naming the population (``population_seeds``): the JAX members equal their runs trained
alone to float32 rounding per update, which a long run amplifies, so ``train_population(config,
seeds=population_seeds)`` is what reproduces them. A population trains in memory: there are no checkpoints,
and an interrupted one starts over (its folders hold only ``config.json`` until it finishes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from pathlib import Path

from gradstop.trainers.config import TrainConfig

__all__ = ["train_population"]


def train_population(config: TrainConfig, seeds, *, progress: bool = False, out=None) -> list:
    """Train one run per seed in ``seeds`` (in memory; with ``out``, a results folder per seed, in order, written when
    the population has finished); returns a ``RunResult`` per seed, in order.

    Raises:
      ValueError: no or repeated seeds, a wall-clock budget, ``out`` of another length, or a folder that holds another
        run, a finished one, or a partly trained one (resume that with ``gradstop.trainers.train``).
    """
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
    if out is None:
        return module.train_population(configs, progress=progress)
    from gradstop._io import hold_lock
    from gradstop.trainers import run

    folders = [Path(f) for f in out]
    if len(folders) != len(seeds):
        raise ValueError(f"out names {len(folders)} folders for {len(seeds)} seeds: give one results folder per seed")
    with contextlib.ExitStack() as stack:
        for folder, c in zip(folders, configs):
            if run._prepare(folder, c):
                raise ValueError(f"{folder} holds the finished run of seed {c.seed}: leave it out of the population")
            stack.enter_context(hold_lock(folder / run.LOCK_FILE, "another gradstop run"))
            started = [n for n in (run.CHECKPOINT_FILES[c.backend], "updates.csv", "eval.csv") if (folder / n).exists()]
            if started:
                raise ValueError(f"{folder} holds a partly trained run of seed {c.seed} ({', '.join(started)}): resume it on "
                                 "its own with gradstop.trainers.train(config, out=folder), which continues from its "
                                 "checkpoint; a population starts its members from scratch")
        results = module.train_population(configs, progress=progress)
        return [run.write_finished(folder, c, r, {"population_seeds": seeds})
                for folder, c, r in zip(folders, configs, results)]
