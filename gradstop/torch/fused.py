"""The fused reverse sweep in PyTorch: several flows from one forward and one reverse loop.

Forward: one loop over the horizon that keeps, per step, either the ``torch.func.vjp`` closures
of the policy (parameters through ``torch.func.functional_call``) and of the physics
(``memory="residuals"``), or only (x_t, a_t) (``memory="recompute"``: each step is re-linearised
in the sweep; memory O(H·(|x|+|a|)) plus one step's activations). The local cost gradients are
the same for every flow and are taken in the forward loop.

Reverse: one loop carrying the adjoints λ of F flows stacked on a leading axis; each step is one
F-batched VJP through the physics and one through the policy (``torch.func.vmap`` over the VJP
closures; a plain call when F = 1). The recurrence is that of ``gradstop.jax.fused``; no
Jacobian is ever formed.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.func import functional_call, grad, vjp, vmap

from gradstop.flows import Flow
from gradstop.rollout import Rollout

__all__ = ["sweep", "forward", "backward", "MEMORY_POLICIES"]

MEMORY_POLICIES = ("residuals", "recompute")


@dataclasses.dataclass
class Tape:
    """What the forward loop keeps for the reverse sweep."""

    rollout: Rollout
    saved: list            # per step: (pi_vjp, g_vjp) or (x_t, a_t)
    cx: list               # per step: ∂c_t/∂x_{t+1} (batch mean)
    ca: list               # per step: ∂c_t/∂a_t
    tx: torch.Tensor       # ∂c_H/∂x_H


def _act(policy, sim):
    return lambda p, x: functional_call(policy, p, (sim.obs(x),))


def forward(policy, sim, params: dict, horizon: int, x0: torch.Tensor, memory: str) -> Tape:
    """The forward loop; ``params`` maps parameter names to tensors (no autograd is recorded)."""
    if memory not in MEMORY_POLICIES:
        raise ValueError(f"unknown memory policy {memory!r}; choose one of {MEMORY_POLICIES}")
    act, batch = _act(policy, sim), x0.shape[0]
    local = grad(lambda xn, a: sim.cost(xn, a).sum() / batch, argnums=(0, 1))
    x, states, actions, costs, saved, cxs, cas = x0, [x0], [], [], [], [], []
    with torch.no_grad():
        for _ in range(horizon):
            if memory == "residuals":
                a, pi_vjp = vjp(act, params, x)
                x_next, g_vjp = vjp(sim.step, x, a)
                saved.append((pi_vjp, g_vjp))
            else:
                a = act(params, x)
                x_next = sim.step(x, a)
                saved.append((x, a))
            cx, ca = local(x_next, a)
            costs.append(sim.cost(x_next, a))
            cxs.append(cx)
            cas.append(ca)
            states.append(x_next)
            actions.append(a)
            x = x_next
        terminal = sim.terminal_cost(x)
        tx = grad(lambda xh: sim.terminal_cost(xh).sum() / batch)(x)
        costs_t = torch.stack(costs)
        out = Rollout(torch.stack(states), torch.stack(actions), costs_t, terminal, (costs_t.sum(0) + terminal).mean())
    return Tape(out, saved, cxs, cas, tx)


def backward(policy, sim, params: dict, flows: tuple[Flow, ...], tape: Tape):
    """The reverse sweep for F single-pass ``flows``: (grads {name: (F, ...)}, λ_0 (F, B, n))."""
    F, horizon = len(flows), len(tape.saved)
    act = _act(policy, sim)
    k_phys = torch.tensor([f.k_phys for f in flows], dtype=tape.tx.dtype).view(F, 1, 1)
    k_in = torch.tensor([f.k_in for f in flows], dtype=tape.tx.dtype).view(F, 1, 1)
    stacked = (lambda fn: (lambda ct: tuple(v.unsqueeze(0) if torch.is_tensor(v) else {k: w.unsqueeze(0) for k, w in v.items()}
                                             for v in fn(ct[0])))) if F == 1 else vmap
    lam = (tape.cx[-1] + tape.tx).expand(F, *tape.tx.shape)
    grads = {k: torch.zeros((F,) + p.shape, dtype=p.dtype) for k, p in params.items()}
    with torch.no_grad():
        for t in range(horizon - 1, -1, -1):
            if isinstance(tape.saved[t][0], torch.Tensor):  # recompute policy: re-linearise step t
                x, a = tape.saved[t]
                _, pi_vjp = vjp(act, params, x)
                _, g_vjp = vjp(sim.step, x, a)
            else:
                pi_vjp, g_vjp = tape.saved[t]
            lam_x, lam_a = stacked(g_vjp)(lam)
            mu = tape.ca[t] + lam_a
            g_theta, mu_x = stacked(pi_vjp)(mu)
            for k in grads:
                grads[k] += g_theta[k]
            local = tape.cx[t - 1] if t > 0 else torch.zeros_like(tape.tx)
            lam = local + k_phys * lam_x + k_in * mu_x
            cut = [t > 0 and f.cut_after(t) for f in flows]
            if any(cut):
                lam = torch.where(torch.tensor(cut).view(F, 1, 1), local, lam)
    return grads, lam


def sweep(policy, sim, params: dict, flows: tuple[Flow, ...], horizon: int, x0, memory: str = "residuals"):
    """Forward and reverse sweep: ``(rollout, grads {name: (F, ...)}, λ_0)``."""
    tape = forward(policy, sim, params, horizon, x0, memory)
    grads, lam0 = backward(policy, sim, params, flows, tape)
    return tape.rollout, grads, lam0
