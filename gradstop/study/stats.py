"""The study's statistics: interquartile means, medians and their intervals, probabilities of improvement,
seed-paired loss ratios and performance profiles, with rliable (Agarwal et al., "Deep Reinforcement Learning at
the Edge of the Statistical Precipice", NeurIPS 2021).

Every interval is a percentile bootstrap at ``confidence`` (95%) with ``reps`` resamples, through
``rliable.library``: a cell's seeds are resampled with replacement (rliable's stratified bootstrap; a table of
several pole counts is resampled within each pole count). rliable draws its resamples from NumPy's global
generator, so every estimate here seeds it from ``seed`` and the estimate's own label (the same numbers whatever
order the estimates are asked in) and restores the generator's state afterwards.

Losses are lower-is-better; rliable's metrics are higher-is-better. Where the direction matters (the probability
of improvement, the performance profiles) the losses are negated before rliable sees them, so "P(flow < none)"
is rliable's ``probability_of_improvement`` of ``−loss_flow`` over ``−loss_none``.

- :func:`summarize`: IQM and median of one cell's values (a final test loss or success per seed) with intervals.
- :func:`probability_below`: P(a run of one flow ends below a run of another), the Mann–Whitney probability of
  rliable (runs compared across seeds, each sample resampled on its own), with its interval.
- :func:`paired_log_ratio`: mean over seeds of log(loss_flow / loss_base) on the same seed (the same initial
  weights and data), its interval from resampling seeds; exp of it is the geometric-mean loss ratio.
- :func:`paired_difference`: the mean over seeds of loss_flow − loss_base on the same seed, with its interval: the
  comparison for losses that can be ≤ 0 (a negated reward), where a ratio means nothing.
- :func:`performance_profile`: the fraction of runs (seeds × pole counts) whose final loss is below τ, for each τ,
  with pointwise intervals.
- :func:`verdict` and :func:`describe_pair`: the wording of a comparison; an interval that includes zero is
  "no measurable difference".

Bad input is a ValueError that names the cell: fewer than 2 seeds (no interval can be had: run more seeds),
seeds that do not pair, a loss that is not positive and finite.

This module is framework-neutral: it imports neither JAX nor PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Estimate", "summarize", "probability_below", "paired_log_ratio", "paired_difference", "performance_profile", "verdict",
           "describe_pair", "iqm", "median", "iqm_curve", "CONFIDENCE", "REPS", "MIN_SEEDS", "NO_DIFFERENCE"]

CONFIDENCE = 0.95  # coverage of every interval
REPS = 2000  # bootstrap resamples per estimate (rliable's own default, 50 000, takes minutes per figure)
MIN_SEEDS = 2  # a bootstrap over fewer seeds has no spread to show
NO_DIFFERENCE = "no measurable difference"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate, its interval [low, high] at ``confidence``, and the number of seeds behind it."""

    value: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    def text(self, fmt: str = "{:.3g}") -> str:
        """``value [low, high]``."""
        return f"{fmt.format(self.value)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


# -- the statistics (rliable's, and vectorised twins the bootstrap calls thousands of times) ---------------------
def iqm(values) -> float:
    """The interquartile mean: the mean of the middle half of the values (rliable's ``aggregate_iqm``, a 25%
    trimmed mean: int(n/4) values cut from each end)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(values, dtype=float)))


def median(values) -> float:
    """The median of all values (rliable's ``aggregate_median`` is the median of per-task means, which for one
    cell would be the mean)."""
    return float(np.median(np.asarray(values, dtype=float)))


def _iqm_and_median(scores: np.ndarray) -> np.ndarray:
    """[IQM, median] of every value of ``scores``; the IQM exactly as scipy's ``trim_mean(…, 0.25)``."""
    flat = np.sort(scores, axis=None)
    cut = int(0.25 * flat.size)
    return np.array([flat[cut:flat.size - cut].mean(), np.median(flat)])


def _mean(scores: np.ndarray) -> np.ndarray:
    return np.array([scores.mean()])


def _score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's run-score distribution (the fraction of all runs scoring above each τ), for every τ at once."""
    return (scores[..., None] > np.asarray(taus)).reshape(-1, len(taus)).mean(0)


def _probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's ``probability_of_improvement`` (P(X > Y) per task, ties counted half, averaged over tasks),
    by broadcasting instead of a Mann–Whitney test per call."""
    x, y = scores_x[:, None, :], scores_y[None, :, :]
    per_task = ((x > y).sum((0, 1)) + 0.5 * (x == y).sum((0, 1))) / (scores_x.shape[0] * scores_y.shape[0])
    return float(per_task.mean())


# -- seeding and checks ----------------------------------------------------------------------------------------
def _stream(seed: int, label: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(label.encode())) % 2**32


@contextlib.contextmanager
def _seeded(seed: int, label: str):
    """NumPy's global generator seeded for one estimate (rliable resamples with ``np.random.choice``), then
    restored; arch's notice about its own generator is silenced (it does not draw the resamples)."""
    state = np.random.get_state()
    np.random.seed(_stream(seed, label))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        np.random.set_state(state)


def _values(values, cell: str, what: str = "value") -> np.ndarray:
    """``values`` (a sequence, or a mapping seed -> value) as a float array, refusing too few or non-finite ones."""
    if isinstance(values, Mapping):
        values = list(values.values())
    array = np.asarray(list(values), dtype=float).reshape(-1)
    if array.size < MIN_SEEDS:
        raise ValueError(f"{cell}: {array.size} finished seed(s); an interval needs at least {MIN_SEEDS}: run more "
                         "seeds (raise --seeds, or wait for the sweep to finish them)")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{cell}: a {what} is not finite ({array.tolist()}); leave non-finite runs out and say so")
    return array


def _check(reps: int, confidence: float) -> None:
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"bootstrap reps must be an integer ≥ 1, got {reps!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _interval(label: str, data, func, *, reps: int, seed: int, confidence: float):
    """rliable's percentile bootstrap of ``func`` over ``data`` (an array, or a tuple of arrays resampled each on
    its own): (point estimates, lows, highs) as arrays."""
    from rliable import library

    _check(reps, confidence)
    with _seeded(seed, label):
        points, intervals = library.get_interval_estimates({label: data}, func, reps=reps,
                                                           confidence_interval_size=confidence)
    ci = np.asarray(intervals[label], dtype=float).reshape(2, -1)
    return np.atleast_1d(np.asarray(points[label], dtype=float)), ci[0], ci[1]


# -- the estimates ---------------------------------------------------------------------------------------------
def summarize(values, *, cell: str, reps: int = REPS, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """IQM and median of one cell's values (one per seed) with percentile-bootstrap intervals over seeds.

    Returns ``{"iqm": Estimate, "median": Estimate}``. Raises ValueError (naming ``cell``) for fewer than 2 seeds
    or a non-finite value."""
    array = _values(values, cell)
    points, low, high = _interval(f"summary|{cell}", array[:, None], _iqm_and_median, reps=reps, seed=seed,
                                  confidence=confidence)
    points = np.array([iqm(array), median(array)])  # rliable's own metrics for the point estimates
    return {name: Estimate(float(points[i]), float(low[i]), float(high[i]), int(array.size), confidence)
            for i, name in enumerate(("iqm", "median"))}


def iqm_curve(values, *, cell: str, reps: int = REPS, seed: int = 0, confidence: float = CONFIDENCE):
    """Per column of ``values`` (seeds, points), e.g. a training curve's evaluations: the IQM over seeds and its
    interval, as :func:`summarize` gives them for that column alone (labelled ``"{cell} evaluation {i}"``).
    Returns three (points,) arrays: value, low, high."""
    values = np.asarray(values, dtype=float)
    est = [summarize(values[:, i], cell=f"{cell} evaluation {i}", reps=reps, seed=seed, confidence=confidence)["iqm"]
           for i in range(values.shape[1])]
    return tuple(np.array([getattr(e, k) for e in est]) for k in ("value", "low", "high"))


def probability_below(losses, base_losses, *, cell: str, reps: int = REPS, seed: int = 0,
                      confidence: float = CONFIDENCE) -> Estimate:
    """P(a run with ``losses`` ends below a run with ``base_losses``): rliable's probability of improvement of
    −loss over −base_loss (ties count half), with the interval from resampling each set of seeds on its own.
    ``n`` is the smaller number of seeds."""
    x, y = _values(losses, cell, "loss"), _values(base_losses, cell, "loss")
    points, low, high = _interval(f"improvement|{cell}", (-x[:, None], -y[:, None]), _probability_of_improvement,
                                  reps=reps, seed=seed, confidence=confidence)
    from rliable import metrics

    value = float(metrics.probability_of_improvement(-x[:, None], -y[:, None]))
    return Estimate(value, float(low[0]), float(high[0]), int(min(x.size, y.size)), confidence)


def _pairs(losses: Mapping, base_losses: Mapping, cell: str, what: str):
    """(seeds, losses, base losses) as arrays in seed order; a ValueError naming the cell where they do not pair."""
    if not isinstance(losses, Mapping) or not isinstance(base_losses, Mapping):
        raise ValueError(f"{cell}: a paired {what} needs seed -> loss mappings for both flows, got "
                         f"{type(losses).__name__} and {type(base_losses).__name__}")
    only, base_only = sorted(set(losses) - set(base_losses)), sorted(set(base_losses) - set(losses))
    if only or base_only:
        raise ValueError(f"{cell}: the seeds do not pair: seed(s) {only} have no base run and seed(s) {base_only} "
                         "have no run of this flow; compare the seeds both have finished (or finish the missing runs)")
    seeds = sorted(losses)
    return (seeds, _values([losses[s] for s in seeds], cell, "loss"),
            _values([base_losses[s] for s in seeds], cell, "loss"))


def paired_difference(losses: Mapping, base_losses: Mapping, *, cell: str, reps: int = REPS, seed: int = 0,
                      confidence: float = CONFIDENCE) -> Estimate:
    """The mean over seeds of loss − base_loss on the same seed, with the interval from resampling seeds (the pairs
    stay together). Negative: lower losses than the base. For losses of any sign (a negated reward), where
    :func:`paired_log_ratio` cannot be had.

    Raises:
      ValueError: the seeds do not match (the message names the missing ones), fewer than 2 pairs, or a loss
        that is not finite.
    """
    _, a, b = _pairs(losses, base_losses, cell, "difference")
    difference = a - b
    points, low, high = _interval(f"difference|{cell}", difference[:, None], _mean, reps=reps, seed=seed,
                                  confidence=confidence)
    return Estimate(float(points[0]), float(low[0]), float(high[0]), int(difference.size), confidence)


def paired_log_ratio(losses: Mapping, base_losses: Mapping, *, cell: str, reps: int = REPS, seed: int = 0,
                     confidence: float = CONFIDENCE, floor: float | None = None) -> Estimate:
    """The mean over seeds of log(loss / base_loss) on the same seed, with the interval from resampling seeds
    (the pairs stay together). Negative: lower losses than the base. exp(value) is the geometric-mean ratio.

    Args:
      losses, base_losses: seed -> final loss; both must hold the same seeds.
      floor: losses below it are raised to it first: the resolution of a loss that can round to 0 (a float32
        1 − cos θ cannot resolve less than 2⁻²⁴); None: a loss ≤ 0 is an error.

    Raises:
      ValueError: the seeds do not match (the message names the missing ones), fewer than 2 pairs, or a loss
        that is not positive and finite (its logarithm is undefined).
    """
    seeds, a, b = _pairs(losses, base_losses, cell, "ratio")
    if floor is not None:
        if not floor > 0:
            raise ValueError(f"{cell}: the loss floor must be positive, got {floor!r}")
        a, b = np.maximum(a, floor), np.maximum(b, floor)
    bad = [s for s, u, v in zip(seeds, a, b) if not (u > 0 and v > 0)]
    if bad:
        raise ValueError(f"{cell}: seed(s) {bad} have a loss ≤ 0, whose logarithm is undefined; pass the loss's "
                         "resolution as floor, or compare differences (paired_difference) instead of ratios")
    ratio = np.log(a / b)
    points, low, high = _interval(f"ratio|{cell}", ratio[:, None], _mean, reps=reps, seed=seed, confidence=confidence)
    return Estimate(float(points[0]), float(low[0]), float(high[0]), int(ratio.size), confidence)


def performance_profile(table: Mapping, taus: Sequence[float], *, cell: str, reps: int = REPS, seed: int = 0,
                        confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fraction of runs whose loss is below each τ, over every seed and pole count, with pointwise intervals
    (rliable's ``create_performance_profile`` of −loss at −τ, resampling seeds within each pole count).

    Args:
      table: pole count (or any task) -> sequence of final losses, one per seed; every task needs the same
        number of seeds (≥ 2).
      taus: the thresholds.

    Returns (fraction, low, high), each of len(taus).
    """
    from rliable import library

    _check(reps, confidence)
    if not table:
        raise ValueError(f"{cell}: a performance profile needs at least one pole count of losses")
    columns = {k: _values(v, f"{cell}, {k}", "loss") for k, v in table.items()}
    counts = {k: c.size for k, c in columns.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{cell}: a performance profile needs the same number of seeds in every pole count, got "
                         f"{counts}; use the seeds all of them have finished")
    scores = -np.stack([columns[k] for k in columns], axis=1)
    taus = np.asarray(taus, dtype=float)
    with _seeded(seed, f"profile|{cell}"):
        profiles, cis = library.create_performance_profile({cell: scores}, -taus, custom_profile_func=_score_distribution,
                                                           reps=reps, confidence_interval_size=confidence)
    ci = np.asarray(cis[cell], dtype=float)
    return np.asarray(profiles[cell], dtype=float), ci[0], ci[1]


# -- words -----------------------------------------------------------------------------------------------------
def verdict(estimate: Estimate, below: str = "lower", above: str = "higher") -> str:
    """``below`` if the whole interval is under zero, ``above`` if it is over, else "no measurable difference"."""
    if estimate.high < 0:
        return below
    if estimate.low > 0:
        return above
    return NO_DIFFERENCE


def describe_pair(flow: str, base: str, ratio: Estimate, improvement: Estimate | None = None, *,
                  where: str = "") -> str:
    """One sentence comparing the final losses of ``flow`` and ``base`` from their paired log-ratio (and, if
    given, the probability of improvement), stating each interval and the number of seeds. A log-ratio whose
    interval includes zero is written "no measurable difference"."""
    level = f"{round(100 * ratio.confidence)}%"
    factor = (f"×{math.exp(ratio.value):.3g} [{math.exp(ratio.low):.3g}, {math.exp(ratio.high):.3g}]")
    numbers = (f"log(loss {flow} / loss {base}) = {ratio.text()} ({level} interval), a geometric-mean loss ratio of "
               f"{factor}, over {ratio.n} paired seeds")
    if improvement is not None:
        numbers += f"; P({flow} ends below {base}) = {improvement.text('{:.2f}')} over {improvement.n} seeds"
    head = f"{where}: " if where else ""
    word = verdict(ratio)
    if word == NO_DIFFERENCE:
        return f"{head}{NO_DIFFERENCE} between {flow} and {base} ({numbers})."
    return f"{head}{flow} ends {'lower' if word == 'lower' else 'higher'} than {base} ({numbers})."
