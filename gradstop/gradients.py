"""Several flows' gradients at once: ``gradstop.gradients(policy, sim, flows=[...], horizon=...)``.

With ``impl="fused"`` (the default) every requested flow comes from ONE forward and ONE reverse
sweep: the distinct single-pass flows they need (``combined`` and ``directional`` read ``none``
and ``input``) are stacked on a leading axis of the adjoints. With ``impl="native"`` each is a
separate autodiff pass, for comparison.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from gradstop._checks import check_compile, check_framework, check_horizon, check_impl, with_surrogate
from gradstop.flows import Flow, combine_gradients, parse_flow

__all__ = ["FlowGradients", "gradients", "components_of", "assemble", "shared_surrogate"]


class FlowGradients(NamedTuple):
    """What :func:`gradients` returns.

    Attributes:
      loss: the rollout loss (the same for every flow).
      grads: flow name -> gradient (JAX: a pytree shaped like the policy; torch: {parameter name: tensor}).
      norms: flow name -> global L2 norm of its gradient.
      cosine: (name_a, name_b) -> cosine similarity of the two gradients, for every pair a < b in request order.
        In torch both are read-only mappings computed on first access (a caller that reads only ``grads``
        pays no norms), from the gradients as returned: modifying ``grads`` in place before the first read
        raises rather than giving the norms of the modified tensors. In JAX, dicts (under ``jax.jit``
        unread ones cost nothing either).
      rollout: the forward rollout the gradients were taken on (a :class:`gradstop.Rollout`, cut from the
        graph), so a caller needs no second forward for the states, actions and costs.
    """

    loss: Any
    grads: dict
    norms: dict
    cosine: dict
    rollout: Any = None


def gradients(policy, sim, *, flows, horizon: int, x0=None, key=None, batch: int | None = None, impl: str = "fused",
              memory: str = "residuals", compile: bool = False) -> FlowGradients:
    """The gradients of several flows, their norms and pairwise cosines.

    Args:
      flows: flow strings or ``gradstop.Flow`` objects, e.g. ``["none", "input", "combined"]``.
      Others: as :func:`gradstop.rollout`.

    Example::

        out = gs.gradients(policy, sim, flows=["none", "input", "combined"], horizon=100, x0=x0)
        out.cosine[("input", "none")]
    """
    parsed = [parse_flow(f) for f in flows] if not isinstance(flows, (str, Flow)) else [parse_flow(flows)]
    if not parsed:
        raise ValueError("flows is empty: name at least one flow, e.g. flows=['none', 'input']")
    if len({f.name for f in parsed}) != len(parsed):
        raise ValueError(f"flows names a flow twice: {[f.name for f in parsed]}")
    mixed = [f.name for f in parsed if f.mixed]
    if mixed:
        raise ValueError(f"gs.gradients sweeps first-order flows; {mixed} draw action noise and mix a zeroth-order estimate: "
                         "take the gradient of gs.rollout(..., stop=flow).loss for them (Rollout.mixing holds α and "
                         "its statistics), or gs.diagnose(..., bias_test=True) to compare ĝ1 with ĝ0")
    check_horizon(horizon)
    check_impl(impl, memory)
    check_framework(policy, sim)
    check_compile(compile, sim.backend)
    sim = shared_surrogate(sim, parsed, "gs.gradients")
    backend = importlib.import_module(f"gradstop.{sim.backend}")
    fast = {"compile": True} if compile else {}
    return backend.gradients(policy, sim, flows=parsed, horizon=horizon, x0=x0, key=key, batch=batch, impl=impl,
                             memory=memory, **fast)


def shared_surrogate(sim, flows: list[Flow], what: str):
    """``sim`` with the flows' one ``surrogate:NAME`` resolved (``sims.surrogate.Surrogate``), or ``sim`` if none has one.
    The flows keep their names; the sweeps read only their edge weights, so they run on the wrapped simulator."""
    names = {f.surrogate for f in flows}
    if names == {None}:
        return sim
    if len(names) > 1:
        raise ValueError(f"{what} sweeps every flow through one simulator, but the flows name different surrogates "
                         f"({sorted(str(n) for n in names)}): give all of them the same surrogate:NAME, or none")
    return with_surrogate(sim, flows[0])[0]


def components_of(flows: list[Flow]) -> tuple[Flow, ...]:
    """The distinct single-pass flows that ``flows`` need, in first-use order."""
    seen: dict[str, Flow] = {}
    for flow in flows:
        for c in flow.components():
            seen.setdefault(c.name, c)
    return tuple(seen.values())


def assemble(loss, flows: list[Flow], component_grads: dict, tree_map, leaves, xp, rollout=None,
             lazy=None) -> FlowGradients:
    """Build each flow's gradient from its components' gradients, then norms and cosines.

    ``tree_map``/``leaves`` walk one gradient structure; ``xp`` is the array namespace. With ``lazy`` (eager
    torch, where every operation costs) the norms and cosines are computed on first access to either;
    ``lazy(grads)`` returns a check run just before, which raises if the gradients changed since.
    """
    grads = {}
    for flow in flows:
        if flow.combining:
            g_none, g_input = (component_grads[c.name] for c in flow.components())
            grads[flow.name] = tree_map(lambda a, b, base=flow.base: combine_gradients(base, a, b, xp), g_none, g_input)
        else:
            grads[flow.name] = component_grads[flow.name]

    def dot(a, b):
        return sum((x * y).sum() for x, y in zip(leaves(a), leaves(b)))

    def statistics():
        norms = {name: xp.sqrt(dot(g, g)) for name, g in grads.items()}
        names = list(grads)
        cosine = {(a, b): dot(grads[a], grads[b]) / (norms[a] * norms[b])
                  for i, a in enumerate(names) for b in names[i + 1:]}
        return norms, cosine

    if lazy is None:
        return FlowGradients(loss, grads, *statistics(), rollout)
    check = lazy(grads)
    once = _Once(lambda: (check(), statistics())[1])
    return FlowGradients(loss, grads, _Lazy(once, 0), _Lazy(once, 1), rollout)


class _Once:
    def __init__(self, fn):
        self.fn, self.value = fn, None

    def __call__(self):
        if self.value is None:
            self.value, self.fn = self.fn(), None
        return self.value


class _Lazy(Mapping):
    """A read-only dict whose contents (item ``index`` of ``once()``) are computed on first access."""

    def __init__(self, once: _Once, index: int):
        self._once, self._index = once, index

    def _dict(self) -> dict:
        return self._once()[self._index]

    def __getitem__(self, key):
        return self._dict()[key]

    def __iter__(self):
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return repr(self._dict())
