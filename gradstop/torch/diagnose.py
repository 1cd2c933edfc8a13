"""``gradstop.diagnose`` in PyTorch: the fused forward, then a reverse sweep that keeps every piece apart.

The forward is the fused sweep's (``gradstop.torch.fused.forward``: one small autograd graph per
step, with the state entering twice, as x_π for the policy and x_g for the physics). The reverse
sweep takes, per step t and flow, the products of DESIGN §2 one engine call at a time, so that
each can be inspected (norms, non-finite codes) before it is combined::

    cost gradient          ∂c_t/∂x_{t+1}, ∂c_t/∂a_t              (once per step, every flow)
    VJP through g          (∂g/∂x)ᵀλ_{t+1}, (∂g/∂a)ᵀλ_{t+1}       →  μ_t = ∂c_t/∂a_t + (∂g/∂a)ᵀλ_{t+1}
    VJP through π          (∂π∘obs/∂x)ᵀμ_t (if k_in ≠ 0), (∂π/∂θ)ᵀμ_t

It costs about three engine calls per flow and step where the gradient sweep makes one: a
diagnosis, not a training step. The record has the layout of ``gradstop.diagnose.RECORD``.
"""

from __future__ import annotations

import torch

from gradstop import _checks as front
from gradstop.gradients import assemble
from gradstop.torch import fused
from gradstop.torch.gradients import _tree_map
from gradstop.torch.rollout import _footprint, _initial_states

__all__ = ["trace", "nonfinite_code"]


def nonfinite_code(x: torch.Tensor) -> torch.Tensor:
    """Per batch element (axis 0): 0 if finite, 1 if some value is ±inf (none NaN), 2 if some is NaN; int8."""
    x = x.reshape(x.shape[0], -1)
    return torch.where(torch.isnan(x), 2, torch.where(torch.isinf(x), 1, 0)).amax(1).to(torch.int8)


def _grad(outputs, inputs, cotangents):
    return torch.autograd.grad(outputs, inputs, cotangents, retain_graph=True, allow_unused=True, materialize_grads=True)


def _cost_gradient(sim, step, batch: int):
    """The partial derivatives ∂c_t/∂x_{t+1} and ∂c_t/∂a_t of the step's batch-mean share (x_{t+1} held
    fixed for the latter: the cost is re-evaluated on a detached copy of x_{t+1})."""
    with torch.enable_grad():
        x_next = step.x_next.detach().requires_grad_()
        cost = sim.cost(x_next, step.action).sum() / batch
    if not cost.requires_grad:
        return torch.zeros_like(x_next), torch.zeros_like(step.action)
    return _grad([cost], [x_next, step.action], [torch.ones_like(cost)])


def trace(policy, sim, *, flows, components, horizon: int, x0=None, key=None, batch: int | None = None,
          memory: str = "residuals", contributions: bool = True):
    """``(loss, grads by requested flow, flat gradient vectors by component, record, rollout)``."""
    x0 = _initial_states(policy, sim, x0, key, batch)
    with front.explained(sim, horizon, lambda: _footprint(policy, sim, x0, batch), memory):
        return _trace(policy, sim, flows, components, horizon, x0, memory, contributions)


def _trace(policy, sim, flows, components, horizon: int, x0, memory: str, contributions: bool):
    named = [(k, p) for k, p in policy.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    tape = fused.forward(policy, sim, horizon, x0, memory)
    out = tape.rollout
    n_flows, batch = len(components), x0.shape[0]
    lam_norm = torch.zeros(horizon + 1, n_flows, batch, dtype=x0.dtype, device=x0.device)
    mu_norm = torch.zeros(horizon, n_flows, batch, dtype=x0.dtype, device=x0.device)
    codes = torch.zeros(horizon, n_flows, 5, batch, dtype=torch.int8, device=x0.device)
    gram = torch.zeros(horizon, n_flows, n_flows, dtype=x0.dtype, device=x0.device)
    pairs = [(i, j) for i in range(n_flows) for j in range(i + 1, n_flows)]
    agree = torch.zeros(horizon, len(pairs), dtype=x0.dtype, device=x0.device)
    lams = [tape.tx for _ in components]  # λ̃_{t+1}: λ_{t+1} less its local term ∂c_t/∂x_{t+1}
    grads = [[torch.zeros_like(p) for p in params] for _ in components]
    lam_h_terms = None
    for t in range(horizon - 1, -1, -1):
        step = fused._record(policy, sim, tape.steps[t], batch) if memory == "recompute" else tape.steps[t]
        cx, ca = _cost_gradient(sim, step, batch)
        if t == horizon - 1:
            lam_h_terms = nonfinite_code(cx + tape.tx)
        cost_code = torch.maximum(nonfinite_code(cx), nonfinite_code(ca))
        flat = []
        for i, flow in enumerate(components):
            lam_next = lams[i] + cx  # λ_{t+1}
            lam_norm[t + 1, i] = lam_next.reshape(batch, -1).norm(dim=1)
            lam_x, lam_a = _grad([step.x_next], [step.x_g, step.action], [lam_next])
            mu = ca + lam_a
            pulled = _grad([step.action], ([step.x_pi] if flow.k_in else []) + params, [mu])
            pi_in, contribution = (pulled[0], pulled[1:]) if flow.k_in else (None, pulled)
            new = lam_x if flow.k_phys == 1.0 else flow.k_phys * lam_x
            if flow.k_in:
                new = new + (pi_in if flow.k_in == 1.0 else flow.k_in * pi_in)
            if t > 0 and flow.cut_after(t):
                new = torch.zeros_like(new)
            lams[i] = new
            torch._foreach_add_(grads[i], list(contribution))
            mu_norm[t, i] = mu.reshape(batch, -1).norm(dim=1)
            vec = torch.cat([c.reshape(-1) for c in contribution])
            flat.append(vec)
            codes[t, i, 0], codes[t, i, 1], codes[t, i, 2] = nonfinite_code(lam_x), nonfinite_code(lam_a), cost_code
            if pi_in is not None:
                codes[t, i, 3] = nonfinite_code(pi_in)
            codes[t, i, 4] = nonfinite_code(vec[None]).expand(batch)
        if contributions:
            stacked = torch.stack(flat)
            gram[t] = stacked @ stacked.T
            signs = torch.sign(stacked)
            for k, (i, j) in enumerate(pairs):
                agree[t, k] = (signs[i] == signs[j]).to(x0.dtype).mean()
        tape.steps[t] = None  # release step t's graph once the sweep has passed it
    for i in range(n_flows):
        lam_norm[0, i] = lams[i].reshape(batch, -1).norm(dim=1)  # λ_0 has no local term
    with torch.no_grad():
        forward_codes = torch.stack([torch.stack([nonfinite_code(a), nonfinite_code(x), nonfinite_code(c[:, None])])
                                     for a, x, c in zip(out.actions, out.states[1:], out.costs)])
        record = dict(lam_norm=lam_norm[:horizon], lam_H_norm=lam_norm[horizon, 0], mu_norm=mu_norm,
                      reverse_codes=codes, forward_codes=forward_codes, x0_code=nonfinite_code(x0),
                      terminal_code=torch.stack([nonfinite_code(out.terminal[:, None]), lam_h_terms]))
        if contributions:
            record.update(gram=gram, agree=agree)
    by_name = {c.name: {k: g for (k, _), g in zip(named, grads[i])} for i, c in enumerate(components)}
    flat = {name: torch.cat([v.reshape(-1) for v in g.values()]).detach().cpu().numpy() for name, g in by_name.items()}
    grads_out = assemble(out.loss, list(flows), by_name, _tree_map, lambda d: list(d.values()), torch).grads
    return (float(out.loss), grads_out, flat, {k: v.detach().cpu().numpy() for k, v in record.items()}, out)
