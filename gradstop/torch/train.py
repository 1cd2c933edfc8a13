"""BPTT in PyTorch: eager updates (sample x0, rollout gradient along the flow, torch.optim Adam)."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import trange

from gradstop.rollout import rollout
from gradstop.training import History, check_train_args

__all__ = ["bptt"]


def bptt(policy, sim, *, stop="none", horizon: int, iters: int, lr: float = 1e-3, batch: int = 16,
         clip_norm: float | None = None, key=0, impl: str = "native", progress: bool = False):
    """Torch twin of :func:`gradstop.bptt` (same arguments); updates ``policy`` in place, returns ``(policy, history)``."""
    check_train_args(stop, horizon, iters, lr, batch, clip_norm)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = key if isinstance(key, torch.Generator) else torch.Generator().manual_seed(int(key))
    losses, norms, seconds = np.empty(iters), np.empty(iters), np.empty(iters)
    start = time.perf_counter()
    bar = trange(iters, desc=f"bptt[{stop}]", disable=not progress, leave=False)
    for i in bar:
        optimizer.zero_grad(set_to_none=True)
        out = rollout(policy, sim, stop=stop, horizon=horizon, key=generator, batch=batch, impl=impl)
        out.loss.backward()
        # clip_grad_norm_ returns the norm before clipping; max_norm=inf only measures it.
        norm = torch.nn.utils.clip_grad_norm_(params, clip_norm if clip_norm is not None else float("inf"))
        optimizer.step()
        losses[i], norms[i] = float(out.loss.detach()), float(norm)
        seconds[i] = time.perf_counter() - start
        bar.set_postfix(loss=f"{losses[i]:.4g}", refresh=False)
    return policy, History(losses, norms, seconds)
