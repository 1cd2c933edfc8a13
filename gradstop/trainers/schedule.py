"""Learning-rate schedules, framework-neutral: the formula both backends follow.

JAX uses optax's own schedules (``optax.linear_schedule``, ``optax.cosine_decay_schedule``);
PyTorch uses ``LambdaLR`` with :func:`lr_at`; a test holds the two to each other. Update t
(0-based, counting applied updates) of T = ``total`` uses::

    constant: lr
    linear:   lr · (1 − (1 − f)·min(t, T)/T)
    cosine:   lr · (f + (1 − f)·½(1 + cos(π·min(t, T)/T)))

with f = ``lr_final`` (the final rate as a fraction of lr).
"""

from __future__ import annotations

import math

__all__ = ["lr_at"]


def lr_at(schedule: str, lr: float, lr_final: float, total: int, t: int) -> float:
    """The learning rate of update ``t`` (0-based) under ``schedule`` over ``total`` updates."""
    if schedule == "constant":
        return lr
    frac = min(t, total) / total
    if schedule == "linear":
        return lr * (1.0 - (1.0 - lr_final) * frac)
    if schedule == "cosine":
        return lr * (lr_final + (1.0 - lr_final) * 0.5 * (1.0 + math.cos(math.pi * frac)))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of constant, linear, cosine")
