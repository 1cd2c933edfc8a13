"""``gradstop.precision`` in PyTorch: one native gradient per horizon and dtype."""

from __future__ import annotations

import numpy as np
import torch

from gradstop.torch.check import Ops
from gradstop.torch.gradients import gradients
from gradstop.torch.rollout import _initial_states

__all__ = ["gradients_by_horizon", "require_float64"]

require_float64 = Ops.require_float64


def gradients_by_horizon(policy, sim, flows, horizons, x0, key, batch: int | None, dtype: str) -> dict[str, np.ndarray]:
    """flow -> (len(horizons), P) flat gradients in ``dtype`` (from the float64 x0, cast once)."""
    policy64 = Ops.as_float64(policy)
    x0 = _initial_states(policy64, sim, None if x0 is None else x0.to(torch.float64), key, batch)
    target = getattr(torch, dtype)
    model, x0 = policy64.to(target), x0.to(target)
    rows = []
    for n in horizons:
        out = gradients(model, sim, flows=flows, horizon=n, x0=x0, impl="native").grads
        rows.append({k: torch.cat([v.detach().reshape(-1) for v in g.values()]).double().cpu().numpy() for k, g in out.items()})
    return {f.name: np.stack([r[f.name] for r in rows]) for f in flows}
