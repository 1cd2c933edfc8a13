"""The fused reverse sweep in PyTorch: several flows from one forward and one reverse loop.

Forward: one loop over the horizon. With ``memory="residuals"`` each step is recorded as its own
small autograd graph, cut from its neighbours: the state enters it twice, as two leaves, one for
the policy's input (x_π) and one for the physics (x_g), so the two paths' VJPs come apart::

    x_π ──obs──π──> a_t ──┐
    x_g ─────────────────g──> x_{t+1},   c_t = cost(x_{t+1}, a_t) / B

With ``memory="recompute"`` only x_t is kept (memory O(H·(|x|+|a|)) plus one step's graph) and
each step is re-recorded in the sweep.

Reverse: one loop carrying, per flow, λ̃_{t+1} — the adjoint of x_{t+1} less its local term
∂c_t/∂x_{t+1}, which the step's cost adds back. One engine call per flow and step,
``autograd.grad((x_{t+1}, c_t), (x_g, x_π, a_t), (λ̃_{t+1}, 1))``, returns every product DESIGN §2
needs::

    ∂/∂x_g = (∂g/∂x)ᵀ λ_{t+1}        ∂/∂a_t = μ_t = ∂c_t/∂a_t + (∂g/∂a)ᵀ λ_{t+1}
    ∂/∂x_π = (∂π∘obs/∂x)ᵀ μ_t          λ̃_t = k_phys·∂/∂x_g + k_in·∂/∂x_π   (0 at a cut)

A flow with k_in = 0 does not ask for ∂/∂x_π, so the engine skips that branch. The parameter
gradient ∇θ = Σ_t (∂π/∂θ)ᵀ μ_t comes from the same call (θ among its inputs), except with the
residuals policy at batch ≤ ``SMALL_BATCH``, where one batched backward over all H·B visited
states after the sweep is cheaper than H small ones. No Jacobian is ever formed: every product is
a vector-Jacobian product of torch's autograd engine.
"""

from __future__ import annotations

import dataclasses

import torch

from gradstop._checks import SMALL_BATCH, check_memory
from gradstop.flows import Flow
from gradstop.rollout import Rollout

__all__ = ["sweep", "forward", "backward"]


@dataclasses.dataclass
class Step:
    """One step's autograd graph: leaves x_π and x_g, the action and the outputs."""

    x_pi: torch.Tensor
    x_g: torch.Tensor
    action: torch.Tensor
    x_next: torch.Tensor
    costs: torch.Tensor  # (B,): the step's running costs
    cost: torch.Tensor   # their batch mean's share, Σ costs / B (a scalar)


@dataclasses.dataclass
class Tape:
    """What the forward loop keeps for the reverse sweep."""

    rollout: Rollout
    memory: str
    steps: list            # residuals: one Step per step; recompute: x_t per step (no graph)
    tx: torch.Tensor       # ∂c_H/∂x_H (batch mean)


def _record(policy, sim, x: torch.Tensor, batch: int) -> Step:
    """Step t's graph, recorded from x_t."""
    with torch.enable_grad():
        x_pi = x.detach().requires_grad_()
        x_g = x.detach().requires_grad_()
        a = policy(sim.obs(x_pi))
        x_next = sim.step(x_g, a)
        costs = sim.cost(x_next, a)
        mean_share = costs.sum() / batch
    return Step(x_pi, x_g, a, x_next, costs, mean_share)


def forward(policy, sim, horizon: int, x0: torch.Tensor, memory: str) -> Tape:
    """The forward loop (policy parameters are read from ``policy``; none are updated)."""
    check_memory(memory)
    batch = x0.shape[0]
    x, states, actions, costs, steps = x0.detach(), [x0.detach()], [], [], []
    for _ in range(horizon):
        if memory == "residuals":
            step = _record(policy, sim, x, batch)
            steps.append(step)
            a, x_next, cost = step.action.detach(), step.x_next.detach(), step.costs.detach()
        else:
            with torch.no_grad():
                a = policy(sim.obs(x))
                x_next = sim.step(x, a)
                cost = sim.cost(x_next, a)
            steps.append(x)
        costs.append(cost)
        actions.append(a)
        states.append(x_next)
        x = x_next
    with torch.enable_grad():
        x_h = x.detach().requires_grad_()
        terminal = sim.terminal_cost(x_h)
        tx = (torch.autograd.grad(terminal.sum() / batch, x_h, allow_unused=True, materialize_grads=True)[0]
              if terminal.requires_grad else torch.zeros_like(x))
    with torch.no_grad():
        costs_t = torch.stack(costs)
        terminal = terminal.detach()
        out = Rollout(torch.stack(states), torch.stack(actions), costs_t, terminal, (costs_t.sum(0) + terminal).mean())
    return Tape(out, memory, steps, tx)


def _adjoint(step: Step, flow: Flow, lam: torch.Tensor, params: list):
    """(λ̃_t, μ_t, ∇θ contribution or None) of one flow at one step, from λ̃_{t+1}."""
    outputs, cotangents = [step.x_next], [lam]
    if step.cost.requires_grad:
        outputs.append(step.cost)
        cotangents.append(torch.ones_like(step.cost))
    inputs = [step.x_g, step.action] + ([step.x_pi] if flow.k_in else []) + params
    grads = torch.autograd.grad(outputs, inputs, cotangents, retain_graph=True, allow_unused=True, materialize_grads=True)
    lam_x, mu = grads[0], grads[1]
    new = lam_x if flow.k_phys == 1.0 else flow.k_phys * lam_x
    if flow.k_in:
        new = new + (grads[2] if flow.k_in == 1.0 else flow.k_in * grads[2])
    return new, mu, (grads[-len(params):] if params else None)


def backward(policy, sim, flows: tuple[Flow, ...], tape: Tape):
    """The reverse sweep for F single-pass ``flows``: (grads {name: (F, ...)}, λ_0 (F, B, n))."""
    named = [(k, p) for k, p in policy.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    horizon, batch = len(tape.steps), tape.tx.shape[0]
    recompute = tape.memory == "recompute"
    per_step = recompute or batch > SMALL_BATCH  # accumulate ∇θ per step rather than after the sweep
    lams = [tape.tx for _ in flows]
    mus = [[None] * horizon for _ in flows]
    acc = [[torch.zeros_like(p) for p in params] for _ in flows]
    for t in range(horizon - 1, -1, -1):
        step = _record(policy, sim, tape.steps[t], batch) if recompute else tape.steps[t]
        for i, flow in enumerate(flows):
            lam, mu, g = _adjoint(step, flow, lams[i], params if per_step else [])
            if t > 0 and flow.cut_after(t):
                lam = torch.zeros_like(lam)  # λ_t = its local term: λ̃_t = 0
            lams[i], mus[i][t] = lam, mu
            if g is not None:
                torch._foreach_add_(acc[i], list(g))
        tape.steps[t] = None  # release step t's graph as soon as the sweep has passed it
    if not per_step:
        acc = _policy_gradients(policy, sim, params, tape.rollout.states[:-1], mus)
    grads = {k: torch.stack([a[j] for a in acc]) for j, (k, _) in enumerate(named)}
    return grads, torch.stack(lams)


def _policy_gradients(policy, sim, params, visited, mus):
    """∇θ = Σ_t (∂π/∂θ)ᵀ μ_t for each flow: one backward over all H·B visited states at once."""
    horizon, batch = visited.shape[:2]
    with torch.enable_grad():
        actions = policy(sim.obs(visited.reshape(horizon * batch, -1)))
    out = []
    for i, mu in enumerate(mus):
        ct = torch.stack(mu).reshape(actions.shape)
        out.append(torch.autograd.grad(actions, params, ct, retain_graph=i < len(mus) - 1,
                                       allow_unused=True, materialize_grads=True))
    return out


def sweep(policy, sim, flows: tuple[Flow, ...], horizon: int, x0, memory: str = "residuals"):
    """Forward and reverse sweep: ``(rollout, grads {name: (F, ...)}, λ_0)``."""
    tape = forward(policy, sim, horizon, x0, memory)
    grads, lam0 = backward(policy, sim, flows, tape)
    return tape.rollout, grads, lam0
