"""Initial states for training and testing, drawn in NumPy so both frameworks see the same numbers.

Every random draw is keyed by ``(seed, purpose, epoch)`` through ``numpy.random.SeedSequence``
(pytree sims such as Brax draw with their own ``reset`` from a key taken from that stream):
there is no generator state to carry, so an epoch's data is the same whether the run went
straight through or was resumed from a checkpoint, and the same in JAX and PyTorch.

- ``data="fixed"``: ``train_size`` training states drawn once; each epoch takes them in batches
  of ``batch`` (reshuffled per epoch if ``shuffle``, else in the order drawn; a remainder smaller
  than a batch is left out of that epoch), as in the BPTT-stabilisation literature (256 / 8).
- ``data="fresh"``: every update draws ``batch`` new states.
- The test set (``test_size`` states) is drawn once, from its own stream, in both modes; so is the
  validation set (``validation=True``: as many states, from another stream), on which a run's
  settings or its best evaluation can be chosen without looking at the test set.
- SHAC's environments start from their own draw (:meth:`Data.start`); an environment whose episode
  ends takes its row of the update's fresh states (``epoch``) as its new state, and each critic
  pass visits the window's samples in an order from :meth:`Data.critic_order`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Data", "initial_states"]

_TRAIN, _TEST, _ORDER, _FRESH, _START, _CRITIC, _NOISE, _VALIDATION, _MIXING = range(9)  # purposes: independent streams of one seed


def _rng(seed: int, purpose: int, epoch: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, purpose, epoch]))


def initial_states(sim, n: int, rng: np.random.Generator):
    """``n`` initial states: uniform in ``sim.init_bounds()`` (float64, (n, state_dim)) for flat sims;
    for pytree sims (Brax) the sim's own ``reset`` with a key drawn from ``rng`` (a pytree, batch axis 0)."""
    if getattr(sim, "pytree_state", False):
        return sim.reset(int(rng.integers(2**31)), n)
    if not hasattr(sim, "init_bounds"):
        raise ValueError(f"{getattr(sim, 'name', sim)!r} has neither init_bounds() nor pytree states with reset(key, batch); "
                         "the trainers draw initial states from one of them")
    low, high = (np.asarray(b, dtype=np.float64) for b in sim.init_bounds())
    return low + (high - low) * rng.random((n, low.shape[0]))


def take(states, index):
    """``states[index]`` on every leaf (flat arrays and pytrees alike)."""
    if isinstance(states, np.ndarray):
        return states[index]
    import jax

    return jax.tree.map(lambda v: v[index], states)


def reshape(states, shape):
    """Reshape the leading batch axis of every leaf to ``shape``."""
    if isinstance(states, np.ndarray):
        return states.reshape(*shape, *states.shape[1:])
    import jax

    return jax.tree.map(lambda v: v.reshape(*shape, *v.shape[1:]), states)


class Data:
    """The initial states of one run: ``epoch(e)`` -> (updates, batch, state_dim); ``test``; ``validation`` (or None)."""

    def __init__(self, sim, *, mode: str, train_size: int, test_size: int, batch: int, shuffle: bool,
                 updates_per_epoch: int, seed: int, validation: bool = False):
        self.sim, self.mode, self.batch, self.shuffle, self.seed, self.train_size = sim, mode, batch, shuffle, seed, train_size
        self.test = initial_states(sim, test_size, _rng(seed, _TEST))
        self.validation = initial_states(sim, test_size, _rng(seed, _VALIDATION)) if validation else None
        self.train = initial_states(sim, train_size, _rng(seed, _TRAIN)) if mode == "fixed" else None
        self.updates = train_size // batch if mode == "fixed" else updates_per_epoch

    @classmethod
    def from_config(cls, sim, config) -> "Data":
        return cls(sim, mode=config.data, train_size=config.train_size, test_size=config.test_size, batch=config.batch,
                   shuffle=config.shuffle, updates_per_epoch=config.updates_per_epoch, seed=config.seed,
                   validation=config.validation)

    def order(self, epoch: int) -> np.ndarray:
        """data=fixed: the indices of the training states used in ``epoch``, (updates, batch)."""
        n = self.train_size
        idx = _rng(self.seed, _ORDER, epoch).permutation(n) if self.shuffle else np.arange(n)
        return idx[: self.updates * self.batch].reshape(self.updates, self.batch)

    def epoch(self, epoch: int) -> np.ndarray:
        """The initial states of every update of ``epoch`` (0-based): float64 (updates, batch, state_dim), or a pytree."""
        if self.mode == "fixed":
            return take(self.train, self.order(epoch))
        flat = initial_states(self.sim, self.updates * self.batch, _rng(self.seed, _FRESH, epoch))
        return reshape(flat, (self.updates, self.batch))

    def noise(self, epoch: int, horizon: int) -> np.ndarray:
        """Gaussian policies: standard normal ε for every update, environment and step, (updates, batch, horizon, action_dim)."""
        return _rng(self.seed, _NOISE, epoch).standard_normal((self.updates, self.batch, horizon, self.sim.action_dim))

    def mixing_noise(self, epoch: int, horizon: int, samples: int) -> np.ndarray:
        """Zeroth-/α-order flows: the standard-normal action noise of every update, (updates, 2, N, H, batch, action_dim)
        (the rollout's ``noise=``: ĝ0's draws, then ĝ1's)."""
        shape = (self.updates, 2, samples, horizon, self.batch, self.sim.action_dim)
        return _rng(self.seed, _MIXING, epoch).standard_normal(shape)

    # -- SHAC: environments that keep running ----------------------------------------------------
    def start(self) -> np.ndarray:
        """The environments' first states, (batch, state_dim)."""
        return initial_states(self.sim, self.batch, _rng(self.seed, _START))

    def critic_order(self, epoch: int, passes: int, samples: int) -> np.ndarray:
        """Sample orders of the critic's passes over a window's data: (updates, passes, samples)."""
        rng = _rng(self.seed, _CRITIC, epoch)
        return np.stack([np.stack([rng.permutation(samples) for _ in range(passes)]) for _ in range(self.updates)])
