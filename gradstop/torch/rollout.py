"""The rollout in PyTorch: a Python loop over the horizon, with two implementations of every flow.

``impl="native"``: torch autograd records the loop; a flow's edge weights k_phys and k_in are
applied with :func:`scale_gradient`, truncation with a ``detach`` of the carried state, and the
combining flows run two forward and two backward passes.

``impl="fused"``: a ``torch.autograd.Function`` whose backward is the fused sweep of
``gradstop.torch.fused`` (one forward loop and one reverse pass for every component flow).

``compile=True``: the same ``autograd.Function`` driven by ``gradstop.torch.compiled`` (the sweep
as two compiled loops; where a gradient can be asked for, both run in the forward, as one
compiled call, and the loss's backward only scales the gradients they found). With
``impl="fused"`` the component flows of ``combined`` / ``directional`` share one forward and one
reverse sweep; with ``impl="native"`` each component runs its own forward and reverse sweep,
which is the cost the native implementation pays. (torch 2.13's
autograd through its ``scan`` op fails on this loop, so a compiled native rollout chains the
per-step VJPs itself; the VJP of each step is still torch's autodiff.)
"""

from __future__ import annotations

import torch

from gradstop import _checks as front
from gradstop.flows import Flow, combine_gradients, parse_flow
from gradstop.rollout import Rollout
from gradstop.torch import compiled, fused, mixing

__all__ = ["rollout", "scale_gradient"]


def scale_gradient(x: torch.Tensor, k: float) -> torch.Tensor:
    """Identity on values; multiplies the gradient flowing back through ``x`` by ``k``."""
    if k == 1.0:
        return x
    if k == 0.0:
        return x.detach()
    return k * x + (1.0 - k) * x.detach()


def rollout(policy, sim, *, stop="none", horizon: int, x0=None, key=None, batch: int | None = None, impl: str = "native",
            memory: str = "residuals", compile: bool = False, noise=None) -> Rollout:
    """Torch twin of :func:`gradstop.rollout` (same arguments); ``out.loss.backward()`` fills ``.grad``."""
    flow = parse_flow(stop)
    front.check_horizon(horizon)
    front.check_impl(impl, memory)
    front.check_framework(policy, sim)
    front.check_compile(compile, "torch")
    front.check_noise_wanted(noise, flow)
    x0 = _initial_states(policy, sim, x0, key, batch)

    def first_order(policy, sim, flow, x0):
        sim, flow = front.with_surrogate(sim, flow)
        if compile:
            return _sweep_loss(policy, sim, flow, horizon, x0, "recompute", compiled, shared=impl == "fused")
        if impl == "fused":
            return _sweep_loss(policy, sim, flow, horizon, x0, memory, fused)
        if flow.combining:
            return _combining(policy, sim, flow, horizon, x0, _params(policy))
        return _single(policy, sim, flow, horizon, x0)

    with front.explained(sim, horizon, lambda: _footprint(policy, sim, x0, batch), front.kept(impl, memory, compile)):
        if flow.mixed:
            sim, flow = front.with_surrogate(sim, flow)  # the noise wraps the surrogate, not the other way
            return mixing.rollout(policy, sim, flow, horizon, x0, _mixing_noise(sim, flow, horizon, x0, key, noise),
                                  first_order, vectorise=impl == "native" and not compile)
        return first_order(policy, sim, flow, x0)


def _mixing_noise(sim, flow: Flow, horizon: int, x0: torch.Tensor, key, noise) -> torch.Tensor:
    """The standard-normal draws of a mixing flow: as given (checked) or drawn from ``key`` (None: global RNG)."""
    shape = (2, flow.mixing.samples, horizon, x0.shape[0], sim.action_dim)
    if noise is None:
        if key is not None and not isinstance(key, (int, torch.Generator)) or isinstance(key, bool):
            raise TypeError(f"key must be an int seed or a torch.Generator, got {type(key).__name__}")
        return mixing.draw_noise(flow, horizon, x0.shape[0], sim.action_dim, key, x0.dtype, x0.device)
    if not isinstance(noise, torch.Tensor):
        raise TypeError(f"noise must be a torch.Tensor for a torch sim, got {type(noise).__name__}; use torch.as_tensor(noise)")
    front.check_noise_shape(tuple(noise.shape), shape, flow)
    return noise


def _initial_states(policy, sim, x0, key, batch):
    """x0 as given (checked) or sampled with ``key`` in the policy's dtype and device."""
    first = next((p for p in policy.parameters() if p.requires_grad), None) if isinstance(policy, torch.nn.Module) else None
    dtype = None if first is None else first.dtype
    if x0 is None:
        x0 = sim.reset(key, front.check_batch(batch, None), dtype=dtype)
        return x0 if first is None else x0.to(first.device)
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor for a torch sim, got {type(x0).__name__}; use torch.as_tensor(x0)")
    front.check_x0_shape(x0.shape, sim)
    front.check_x0_dtype(x0.dtype, dtype, x0.is_floating_point())
    front.check_batch(batch, x0.shape[0])
    return x0


def _footprint(policy, sim, x0: torch.Tensor, batch=None) -> tuple[int, int, int, int]:
    """(batch, state values, action values, bytes per value) of a rollout, for the out-of-memory estimate."""
    return x0.shape[0], x0[0].numel(), sim.action_dim, x0.element_size()


def _single(policy, sim, flow: Flow, horizon: int, x0: torch.Tensor) -> Rollout:
    x, states, actions, costs = x0, [x0], [], []
    for t in range(horizon):
        a = policy(sim.obs(scale_gradient(x, flow.k_in)))
        if t == 0:
            front.check_action_shape(a.shape, sim)
        x_next = sim.step(scale_gradient(x, flow.k_phys), a)
        costs.append(sim.cost(x_next, a))
        actions.append(a)
        states.append(x_next)
        # reset λ_{t+1} to its local term: x_{t+1} forgets the future
        x = x_next.detach() if flow.cut_after(t + 1) else x_next
    terminal = sim.terminal_cost(states[-1])
    costs_t = torch.stack(costs)
    return Rollout(torch.stack(states), torch.stack(actions), costs_t, terminal, (costs_t.sum(0) + terminal).mean())


def _combining(policy, sim, flow: Flow, horizon: int, x0, params) -> Rollout:
    """Loss whose gradient is the combination of the ``none`` and ``input`` gradients.

    Two forward and two backward passes; the combination is attached with the surrogate
    L + ⟨g, θ − θ.detach()⟩, whose value is L and whose gradient is g.
    """
    if not params:
        raise TypeError(f"flow {flow.name!r} combines parameter gradients: the policy must be an nn.Module with parameters")
    outs = [_single(policy, sim, f, horizon, x0) for f in flow.components()]
    detached = Rollout(*(v.detach() for v in outs[0][:5]))
    if not torch.is_grad_enabled():
        return detached
    g_none, g_input = (
        torch.autograd.grad(out.loss, params, allow_unused=True, materialize_grads=True) for out in outs
    )
    attach = sum(
        (combine_gradients(flow.base, gn, gi, torch) * (p - p.detach())).sum()
        for gn, gi, p in zip(g_none, g_input, params)
    )
    return detached._replace(loss=detached.loss + attach)


class _SweepLoss(torch.autograd.Function):
    """Forward: the sweep's forward loop. Backward: its reverse sweep, combined if need be.

    The sweep is ``engine``: ``gradstop.torch.fused`` (eager) or ``gradstop.torch.compiled``. With
    ``shared=False`` each component flow gets its own forward and reverse sweep (compiled native).
    With ``ahead=True`` (``compile=True`` where a gradient can be asked for) the forward already
    runs the reverse sweep, in the same compiled call as the forward loop, and the backward only
    scales what it found: one call through the compiler per sweep rather than two.
    Only the loss is differentiable; parameters get the flow's direction and x0 gets λ_0 (zero
    for the combining flows, whose direction is defined for parameters only).
    """

    @staticmethod
    def forward(ctx, spec, x0, *tensors):
        policy, sim, flow, horizon, memory, names, engine, shared, ahead = spec
        components, x0 = flow.components(), x0.detach()
        ctx.spec, ctx.tape, ctx.swept = spec, None, None
        if ahead:
            sweeps = [components] if shared else [(c,) for c in components]
            parts = [engine.sweep(policy, sim, part, horizon, x0) for part in sweeps]
            out, ctx.swept = parts[0][0], _joined([(g, lam) for _, g, lam in parts])
        else:
            ctx.tape = engine.forward(policy, sim, horizon, x0, memory, components if shared else components[:1])
            out = ctx.tape.rollout
            # ctx must not hold the loss it returns: that is a reference cycle (loss → this node → ctx → loss), and
            # the graph would then be freed by the garbage collector, not when the loss goes
            ctx.tape.rollout = out._replace(loss=None)
        ctx.mark_non_differentiable(out.states, out.actions, out.costs, out.terminal)
        return tuple(out)[:5]  # Rollout field order: states, actions, costs, terminal, loss

    @staticmethod
    def backward(ctx, *cotangents):
        g_loss = cotangents[-1]
        policy, sim, flow, horizon, memory, names, engine, shared, ahead = ctx.spec
        want_x0 = ctx.needs_input_grad[1] and not flow.combining
        if ctx.swept is not None:  # compiled: the forward's sweep found the gradients of the loss
            grads, lam0 = ctx.swept
            per_flow = [tuple(grads[k][i] for k in names) for i in range(len(flow.components()))]
            scale = g_loss
        elif flow.combining:  # the combination is not linear in the loss: scale after combining
            _, per_flow, lam0 = engine.reverse(policy, sim, flow.components(), ctx.tape, lam0=False)
            scale = g_loss
        else:  # the engine's sweep is already of g_loss · loss
            _, per_flow, lam0 = engine.reverse(policy, sim, (flow,), ctx.tape, g_loss, want_x0)
            scale = None
        ctx.tape = ctx.swept = None  # release the residuals now rather than with the graph
        if flow.combining:
            g = [combine_gradients(flow.base, a, b, torch) for a, b in zip(*per_flow)]
        else:
            g = per_flow[0]
        g_x0 = (lam0[0] if scale is None else scale * lam0[0]) if want_x0 else None
        return (None, g_x0, *(g if scale is None else (scale * v for v in g)))


def _joined(parts):
    """One (grads {name: (F, ...)}, λ_0 (F, ...)) from several sweeps' (grads, λ_0), flows in order."""
    if len(parts) == 1:
        return parts[0]
    grads = {k: torch.cat([g[k] for g, _ in parts]) for k in parts[0][0]}
    return grads, torch.cat([lam for _, lam in parts])


def _sweep_loss(policy, sim, flow: Flow, horizon: int, x0, memory: str, engine, shared: bool = True) -> Rollout:
    if not isinstance(policy, torch.nn.Module):
        need = "compile=True" if engine is compiled else "impl='fused'"
        raise TypeError(f"{need} needs the policy's parameters: it must be an nn.Module")
    if engine is fused and not flow.combining and fused.autodiff((flow,), x0.shape[0], horizon, memory):
        return fused.rollout_graph(policy, sim, flow, horizon, x0)
    named = [(k, p) for k, p in policy.named_parameters() if p.requires_grad]
    ahead = engine is compiled and torch.is_grad_enabled() and bool(named or x0.requires_grad)
    spec = (policy, sim, flow, horizon, memory, tuple(k for k, _ in named), engine, shared, ahead)
    return Rollout(*_SweepLoss.apply(spec, x0, *(p for _, p in named)))


def _params(policy) -> list[torch.Tensor]:
    if isinstance(policy, torch.nn.Module):
        return [p for p in policy.parameters() if p.requires_grad]
    return []
