"""Several flows' gradients at once in PyTorch (see ``gradstop.gradients``)."""

from __future__ import annotations

import torch

from gradstop import _checks as front
from gradstop.flows import Flow
from gradstop.gradients import FlowGradients, assemble, components_of
from gradstop.torch import compiled, fused
from gradstop.torch.rollout import _footprint, _initial_states, _single

__all__ = ["gradients"]


def _tree_map(fn, *dicts):
    return {k: fn(*(d[k] for d in dicts)) for k in dicts[0]}


def _unchanged(grads: dict):
    """A check that no tensor of ``grads`` has been modified in place since (norms and cosines are lazy)."""
    versions = [(t, t._version) for g in grads.values() for t in g.values()]

    def check():
        if any(t._version != v for t, v in versions):
            raise RuntimeError("gs.gradients computes norms and cosines when first read, and a gradient was modified "
                               "in place before that: read out.norms / out.cosine before changing out.grads in place, "
                               "or change a clone")
    return check


def gradients(policy, sim, *, flows, horizon: int, x0=None, key=None, batch: int | None = None, impl: str = "fused",
              memory: str = "residuals", compile: bool = False) -> FlowGradients:
    """Torch twin of :func:`gradstop.gradients` (same arguments); gradients are {parameter name: tensor}.

    With ``compile=True`` the sweeps are ``gradstop.torch.compiled``'s: ``impl="fused"`` computes
    every component flow in one forward and one reverse sweep, ``impl="native"`` runs one forward
    and one reverse sweep per component flow.
    """
    flows = list(flows)
    x0 = _initial_states(policy, sim, x0, key, batch)
    with front.explained(sim, horizon, lambda: _footprint(policy, sim, x0, batch), front.kept(impl, memory, compile)):
        return _gradients(policy, sim, flows, horizon, x0, impl, memory, compile)


def _gradients(policy, sim, flows, horizon: int, x0, impl: str, memory: str, compile: bool) -> FlowGradients:
    components = components_of(flows)
    if compile:
        sweeps = [components] if impl == "fused" else [(c,) for c in components]
        by_name = {}
        for part in sweeps:
            out, stacked, _ = compiled.sweep(policy, sim, part, horizon, x0)
            rows = {k: v.unbind(0) for k, v in stacked.items()}  # one op per parameter, not one per flow and parameter
            by_name.update({c.name: {k: r[i] for k, r in rows.items()} for i, c in enumerate(part)})
    elif impl == "fused":  # each flow's gradients as the sweep found them, never stacked
        tape = fused.forward(policy, sim, horizon, x0, memory, components)
        names, per_flow, _ = fused.reverse(policy, sim, components, tape, lam0=False)
        out, by_name = tape.rollout, {c.name: dict(zip(names, per_flow[i])) for i, c in enumerate(components)}
    else:
        by_name, named = {}, {k: p for k, p in policy.named_parameters() if p.requires_grad}
        for c in components:
            g = torch.autograd.grad(_single(policy, sim, c, horizon, x0).loss, list(named.values()), materialize_grads=True)
            by_name[c.name] = dict(zip(named, g))
        with torch.no_grad():
            out = _single(policy, sim, Flow(), horizon, x0)
    out = type(out)(*(v.detach() if isinstance(v, torch.Tensor) and v.requires_grad else v for v in out))
    flat = {}  # each gradient flattened once: norms and cosines then cost one product each (eager ops are dear)

    def leaves(d):
        if id(d) not in flat:
            flat[id(d)] = (d, torch.cat([v.reshape(-1) for v in d.values()]))
        return [flat[id(d)][1]]
    return assemble(out.loss, flows, by_name, _tree_map, leaves, torch, rollout=out, lazy=_unchanged)
