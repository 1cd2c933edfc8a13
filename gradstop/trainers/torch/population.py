"""A population of PyTorch BPTT runs (one per seed), trained one after another.

The eager rollout loop and the fused sweep's ``autograd.Function`` do not compose with
``torch.func.vmap``, so the members run sequentially; each is exactly ``train(config)`` for its seed.
"""

from __future__ import annotations

from gradstop.trainers.run import train

__all__ = ["train_population"]


def train_population(configs, *, progress: bool = False) -> list:
    return [train(c, progress=progress) for c in configs]
