"""Initial states for training and testing, drawn in NumPy so both frameworks see the same numbers.

Every random draw is keyed by ``(seed, purpose, epoch)`` through ``numpy.random.SeedSequence``:
there is no generator state to carry, so an epoch's data is the same whether the run went
straight through or was resumed from a checkpoint, and the same in JAX and PyTorch.

- ``data="fixed"``: ``train_size`` training states drawn once; each epoch takes them in batches
  of ``batch`` (reshuffled per epoch if ``shuffle``, else in the order drawn; a remainder smaller
  than a batch is left out of that epoch), as in the BPTT-stabilisation literature (256 / 8).
- ``data="fresh"``: every update draws ``batch`` new states.
- The test set (``test_size`` states) is drawn once, from its own stream, in both modes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Data", "initial_states"]

_TRAIN, _TEST, _ORDER, _FRESH = 0, 1, 2, 3  # purposes: independent streams of one seed


def _rng(seed: int, purpose: int, epoch: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, epoch]))


def initial_states(sim, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` states uniform in ``sim.init_bounds()``, float64, shape (n, state_dim)."""
    if not hasattr(sim, "init_bounds") or getattr(sim, "pytree_state", False):
        raise ValueError(f"{getattr(sim, 'name', sim)!r} has no flat initial-state bounds (init_bounds); "
                         "the trainers draw initial states from them: use a flat-state simulator")
    low, high = (np.asarray(b, dtype=np.float64) for b in sim.init_bounds())
    return low + (high - low) * rng.random((n, low.shape[0]))


class Data:
    """The initial states of one run: ``epoch(e)`` -> (updates, batch, state_dim); ``test``."""

    def __init__(self, sim, *, mode: str, train_size: int, test_size: int, batch: int, shuffle: bool,
                 updates_per_epoch: int, seed: int):
        self.sim, self.mode, self.batch, self.shuffle, self.seed = sim, mode, batch, shuffle, seed
        self.test = initial_states(sim, test_size, _rng(seed, _TEST))
        self.train = initial_states(sim, train_size, _rng(seed, _TRAIN)) if mode == "fixed" else None
        self.updates = train_size // batch if mode == "fixed" else updates_per_epoch

    @classmethod
    def from_config(cls, sim, config) -> "Data":
        return cls(sim, mode=config.data, train_size=config.train_size, test_size=config.test_size, batch=config.batch,
                   shuffle=config.shuffle, updates_per_epoch=config.updates_per_epoch, seed=config.seed)

    def order(self, epoch: int) -> np.ndarray:
        """data=fixed: the indices of the training states used in ``epoch``, (updates, batch)."""
        n = self.train.shape[0]
        idx = _rng(self.seed, _ORDER, epoch).permutation(n) if self.shuffle else np.arange(n)
        return idx[: self.updates * self.batch].reshape(self.updates, self.batch)

    def epoch(self, epoch: int) -> np.ndarray:
        """The initial states of every update of ``epoch`` (0-based), float64 (updates, batch, state_dim)."""
        if self.mode == "fixed":
            return self.train[self.order(epoch)]
        flat = initial_states(self.sim, self.updates * self.batch, _rng(self.seed, _FRESH, epoch))
        return flat.reshape(self.updates, self.batch, -1)
