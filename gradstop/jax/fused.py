"""The fused reverse sweep in JAX: several flows from one forward and one reverse ``lax.scan``.

Forward: one ``lax.scan`` over the horizon that keeps, per step, either the VJP residuals of the
policy and the physics (``memory="residuals"``) or only (x_t, a_t) (``memory="recompute"``: each
step is re-linearised in the sweep; memory O(H·(|x|+|a|)) plus one step's activations). The
local cost gradients ∂c_t/∂x_{t+1} and ∂c_t/∂a_t are the same for every flow and are taken here.
Residuals that depend only on loop constants (weight matrices, their transposes) are found by a
dependency pass over the VJP's jaxpr and kept once, not H times (:class:`_SplitVJP`).

Reverse: one ``lax.scan`` carrying the adjoint λ of every flow (DESIGN §2)::

    μ_t = ∂c_t/∂a_t + (∂g/∂a)ᵀ λ_{t+1}
    λ_t = ∂c_{t-1}/∂x_t + k_phys·(∂g/∂x)ᵀ λ_{t+1} + k_in·(∂π∘obs/∂x)ᵀ μ_t   (local term at a cut)
    ∇θ += (∂π/∂θ)ᵀ μ_t

The flows share the forward, the residuals and the local cost gradients; per step each pays one
VJP through the physics and, if its k_in ≠ 0, one through the policy. They are unrolled over the
(static, few) flows rather than vmapped: with the weights static, k = 0 and k = 1 cost nothing,
and on CPU F vector products are cheaper than one (F, n) matrix product (measured:
docs/design.md). No Jacobian is ever formed: every product is a VJP.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from gradstop._checks import SMALL_BATCH, check_memory
from gradstop.flows import Flow
from gradstop.rollout import Rollout

__all__ = ["sweep"]

class _SplitVJP:
    """``jax.vjp`` of ``fn`` whose residuals are split into loop-invariant and per-step parts.

    A ``jax.vjp`` closure is a pytree whose leaves are its residuals. Some of them depend only on
    what is constant over the horizon (the policy's weights, the simulator's constants); stacking
    those H times in a scan costs memory and copies. A dependency pass over the traced jaxpr marks
    the residuals that depend on the per-step arguments; only those are kept per step, the others
    once. ``varying`` says which of ``fn``'s arguments change from step to step; with
    ``has_aux``, ``fn`` returns ``(value, aux)`` and only ``value`` is differentiated.
    """

    def __init__(self, fn, varying: tuple[bool, ...], *example, has_aux: bool = False):
        self.fn, self.has_aux = fn, has_aux
        treedefs = []

        def residuals(*args):
            pullback = jax.vjp(fn, *args, has_aux=has_aux)[1]
            leaves, treedef = jax.tree.flatten(pullback)
            treedefs.append(treedef)
            return leaves

        closed = jax.make_jaxpr(residuals)(*example)
        self.treedef = treedefs[0]
        n_args = [len(jax.tree.leaves(a)) for a in example]
        starts = np.cumsum([0] + n_args)
        flags = [flag for i, flag in enumerate(varying) for _ in range(starts[i], starts[i + 1])]
        self.mask = tuple(_depends(closed.jaxpr, flags))
        self.constant = [leaf for leaf, m in zip(residuals(*example), self.mask) if not m]

    def __call__(self, *args):
        """``(value, per-step residuals)``; with ``has_aux`` ``((value, aux), per-step residuals)``."""
        out, pullback, *aux = jax.vjp(self.fn, *args, has_aux=self.has_aux)
        leaves = jax.tree.leaves(pullback)
        if len(leaves) != len(self.mask):
            raise AssertionError("the VJP's residual structure changed between traces")
        return (out, *aux) if self.has_aux else out, [leaf for leaf, m in zip(leaves, self.mask) if m]

    def pullback(self, per_step):
        """The VJP closure rebuilt from one step's residuals and the invariant ones."""
        per_step, constant = iter(per_step), iter(self.constant)
        return jax.tree.unflatten(self.treedef, [next(per_step) if m else next(constant) for m in self.mask])


class _Packer:
    """Packs a list of arrays into one flat buffer per dtype, and back.

    The forward scan emits every per-step residual as a scan output; on CPU each output costs a
    dynamic-update-slice per step (and each input of the reverse scan a dynamic-slice), a fixed
    cost that dominates at batch 1. Packed, a step writes one buffer per dtype.
    """

    def __init__(self, like, enabled: bool = True):
        self.enabled = enabled
        self.shapes = [(v.shape, jnp.dtype(v.dtype)) for v in like]
        self.dtypes = sorted({d for _, d in self.shapes}, key=str)

    def pack(self, leaves):
        if not self.enabled:
            return list(leaves)
        return {str(d): jnp.concatenate([v.ravel() for v, (_, dv) in zip(leaves, self.shapes) if dv == d])
                for d in self.dtypes}

    def unpack(self, packed):
        if not self.enabled:
            return list(packed)
        offsets = {str(d): 0 for d in self.dtypes}
        out = []
        for shape, d in self.shapes:
            size, start = int(np.prod(shape)), offsets[str(d)]
            out.append(packed[str(d)][start:start + size].reshape(shape))
            offsets[str(d)] = start + size
        return out


def _is_var(v):
    return not isinstance(v, jax.extend.core.Literal)


def _depends(jaxpr, flags: list[bool]) -> list[bool]:
    """Which outputs of ``jaxpr`` depend on the inputs flagged True (conservative).

    Recurses into call-like equations (``jit``, ``closed_call``, custom derivatives) whose inner
    jaxpr maps inputs to outputs one to one, so that, e.g., the transpose of a weight matrix taken
    inside an equinox module's call counts as loop-invariant; any other equation with a flagged
    input has all its outputs flagged.
    """
    depends = {v for v, flag in zip(jaxpr.invars, flags) if flag}
    for eqn in jaxpr.eqns:
        inputs = [_is_var(v) and v in depends for v in eqn.invars]
        if not any(inputs):
            continue
        inner = next((eqn.params[k] for k in ("jaxpr", "call_jaxpr") if k in eqn.params), None)
        inner = getattr(inner, "jaxpr", inner)
        if inner is not None and len(inner.invars) == len(inputs) and len(inner.outvars) == len(eqn.outvars):
            outputs = _depends(inner, inputs)
        else:
            outputs = [True] * len(eqn.outvars)
        depends.update(v for v, flag in zip(eqn.outvars, outputs) if flag)
    return [_is_var(v) and v in depends for v in jaxpr.outvars]


def _scale(k: float, tree):
    """k·tree for a static k (no work when k is 1)."""
    return tree if k == 1.0 else jax.tree.map(lambda v: k * v, tree)


def nonfinite_code(tree, batch: int):
    """Per batch element: 0 if every value of ``tree``'s inexact leaves is finite, 1 if one is ±inf
    (and none NaN), 2 if one is NaN; int8 of shape (batch,). Leaves are (batch, ...) arrays."""
    codes = [jnp.max(jnp.where(jnp.isnan(v), 2, jnp.where(jnp.isinf(v), 1, 0)).astype(jnp.int8).reshape(batch, -1), axis=1)
             for v in jax.tree.leaves(tree) if eqx.is_inexact_array(v)]
    return jnp.max(jnp.stack(codes), axis=0) if codes else jnp.zeros((batch,), jnp.int8)


def row_norm(tree, batch: int):
    """Per batch element: the L2 norm over every inexact leaf of ``tree``, shape (batch,)."""
    sq = [jnp.sum(jnp.reshape(v, (batch, -1)) ** 2, axis=1) for v in jax.tree.leaves(tree) if eqx.is_inexact_array(v)]
    return jnp.sqrt(sum(sq))


def _adjoint_record(pieces, mus, lams, ca, loc, batch):
    """Step t's adjoint record for ``gradstop.diagnose``: ‖λ_t‖ and ‖μ_t‖ per flow and batch element, and
    the non-finite code of the reverse stages (``gradstop.diagnose.REVERSE_STAGES``; ∇θ is filled in by
    :func:`_contribution_record`)."""
    zero = jnp.zeros((batch,), jnp.int8)
    cost = nonfinite_code((ca, loc), batch)
    codes = jnp.stack([jnp.stack([nonfinite_code(lam_x, batch), nonfinite_code(lam_a, batch), cost,
                                  nonfinite_code(pi_in, batch) if pi_in is not None else zero, zero])
                       for lam_x, lam_a, pi_in in pieces])
    return dict(lam_norm=jnp.stack([row_norm(l, batch) for l in lams]),
                mu_norm=jnp.stack([row_norm(m, batch) for m in mus]), reverse_codes=codes)


def _contribution_record(contribs):
    """Step t's contributions (∂π/∂θ)ᵀμ_t of the F flows (pytrees like θ) compared: their Gram matrix
    (F, F), the fraction of components whose signs agree for each pair i < j (F(F−1)/2,), and each
    one's non-finite code (F,)."""
    flat = jnp.stack([jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(c)]) for c in contribs])  # (F, P)
    signs = jnp.sign(flat)
    n = len(contribs)
    agree = [jnp.mean((signs[i] == signs[j]).astype(flat.dtype)) for i in range(n) for j in range(i + 1, n)]
    code = jnp.max(jnp.where(jnp.isnan(flat), 2, jnp.where(jnp.isinf(flat), 1, 0)), axis=1).astype(jnp.int8)
    return dict(gram=flat @ flat.T, agree=jnp.stack(agree) if agree else jnp.zeros((0,), flat.dtype), theta_codes=code)


def sweep(params, static, sim, flows: tuple[Flow, ...], horizon: int, x0, memory: str = "residuals",
          trace: bool = False, contributions: bool = True):
    """One forward and one reverse sweep for the single-pass ``flows``.

    Args:
      params, static: the policy split by ``eqx.partition(policy, eqx.is_inexact_array)``.
      sim: the simulator.
      flows: F non-combining flows.
      horizon: H.
      x0: initial states (pytree of (B, ...) arrays).
      memory: 'residuals' or 'recompute'.
      trace: also record, per step, what ``gradstop.diagnose`` reports: adjoint norms and the
        non-finite code of every stage, and with ``contributions`` each step's contribution to ∇θ
        compared across flows (∇θ is then accumulated step by step at every batch size, and each step
        touches its F·P contribution values: the trace's main cost at small batch).

    Returns:
      ``(rollout, grads, lam0)``: the forward :class:`Rollout` (values only), the parameter
      gradients with a leading axis F, and the adjoints λ_0 (leading axis F) of the inexact
      leaves of x0 (``None`` in place of integer and boolean leaves). With ``trace``, a fourth
      item: a dict of per-step arrays (time-major), read by ``gradstop.diagnose``.
    """
    check_memory(memory)
    batch = jax.tree.leaves(x0)[0].shape[0]

    # A state may hold integer or boolean leaves (Brax's mjx pipeline does): only its inexact part
    # xf is differentiated and carries an adjoint; the rest xr rides along as a constant of each step.
    def split(x):
        return eqx.partition(x, eqx.is_inexact_array)

    def act(p, x):
        return eqx.combine(p, static)(sim.obs(x))

    def act_f(p, xf, xr):
        return act(p, eqx.combine(xf, xr))

    def step_f(xf, a, xr):  # (xf_{t+1}, aux xr_{t+1})
        return split(sim.step(eqx.combine(xf, xr), a))

    def step_cost(xf_next, a, xr_next):
        # mean over the batch: the loss is a batch mean, so its local gradients carry 1/B
        return jnp.sum(sim.cost(eqx.combine(xf_next, xr_next), a)) / batch

    # -- forward ----------------------------------------------------------------------------------
    keep = memory == "residuals"
    small = batch <= SMALL_BATCH
    theta_after = keep and small and not (trace and contributions)  # ∇θ from one VJP after the sweep, not step by step
    if keep:  # per-step residuals: the policy's w.r.t. its input only (θ is handled after the sweep)
        a0, (xf0, xr0) = act(params, x0), split(x0)
        if theta_after:
            policy_vjp = _SplitVJP(lambda xf, xr: act_f(params, xf, xr), (True, True), xf0, xr0)
        else:
            policy_vjp = _SplitVJP(act_f, (False, True, True), params, xf0, xr0)
        physics_vjp = _SplitVJP(step_f, (True, True, True), xf0, a0, xr0, has_aux=True)

    layout = {}  # the per-step record's structure, set when the forward scan traces its body

    def forward(carry, _):
        x, cx_prev = carry
        xf, xr = split(x)
        if keep:
            a, pi_res = policy_vjp(xf, xr) if theta_after else policy_vjp(params, xf, xr)
            (xf_next, xr_next), g_res = physics_vjp(xf, a, xr)
            x_next = eqx.combine(xf_next, xr_next)
            saved = (pi_res, g_res)
        else:
            a = act(params, x)
            x_next = sim.step(x, a)
            xf_next, xr_next = split(x_next)
            saved = (x, a)
        cost = sim.cost(x_next, a)
        cx, ca = jax.grad(step_cost, argnums=(0, 1))(xf_next, a, xr_next)
        # the local term of λ_t is ∂c_{t-1}/∂x_t: the previous step's cx (zero at t = 0)
        leaves, layout["treedef"] = jax.tree.flatten((ca, cx_prev, saved))
        layout.setdefault("packer", _Packer(leaves, enabled=small))
        # forward stages in order: the policy's action, the simulator's step, the step's cost
        codes = (jnp.stack([nonfinite_code(a, batch), nonfinite_code(xf_next, batch), nonfinite_code(cost, batch)])
                 if trace else None)
        return (x_next, cx), (x_next, a, cost, layout["packer"].pack(leaves), codes)

    zero_cx = jax.tree.map(jnp.zeros_like, split(x0)[0])
    (x_final, cx_last), (xs, actions, costs, record, forward_codes) = jax.lax.scan(
        forward, (x0, zero_cx), None, length=horizon)
    terminal = sim.terminal_cost(x_final)
    xf_final, xr_final = split(x_final)
    tx = jax.grad(lambda xf: jnp.sum(sim.terminal_cost(eqx.combine(xf, xr_final))) / batch)(xf_final)
    states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x0, xs)
    out = Rollout(states, actions, costs, terminal, jnp.mean(costs.sum(0) + terminal))

    # -- reverse ----------------------------------------------------------------------------------
    # One adjoint per flow, carried as a tuple: the flows' edge weights and cuts are static, so a
    # flow with k_in = 0 never pays the policy's input VJP, k = 1 costs no multiply, and at batch 1
    # F separate vector products are cheaper on CPU than one (F, n) matrix product.
    lam_H = tuple(jax.tree.map(jnp.add, cx_last, tx) for _ in flows)

    def unpack(packed):
        return jax.tree.unflatten(layout["treedef"], layout["packer"].unpack(packed))

    def adjoint_step(t, lams, ca, loc, g_vjp, pi_vjp):
        """(μ_t, λ_t, pieces) of every flow from λ_{t+1}: per flow, one VJP through the physics and, if
        its k_in ≠ 0, one through the policy's input (``pi_vjp(μ) -> ∂π∘obs/∂x ᵀ μ``). ``pieces`` holds
        each flow's (λ_x, λ_a, policy input term or None), the products a trace inspects."""
        mus, new, pieces = [], [], []
        for flow, lam in zip(flows, lams):
            lam_x, lam_a, _ = g_vjp(lam)
            mu = jax.tree.map(jnp.add, ca, lam_a)
            lam = jax.tree.map(jnp.add, loc, _scale(flow.k_phys, lam_x))
            pi_in = pi_vjp(mu) if flow.k_in else None
            if flow.k_in:
                lam = jax.tree.map(jnp.add, lam, _scale(flow.k_in, pi_in))
            if flow.truncate is not None:
                cut = (t > 0) & (t % flow.truncate == 0)
                lam = jax.tree.map(lambda lo, la: jnp.where(cut, lo, la), loc, lam)
            mus.append(mu)
            new.append(lam)
            pieces.append((lam_x, lam_a, pi_in))
        return tuple(mus), tuple(new), pieces

    inputs = (jnp.arange(horizon), record)

    def step_theta(t, lams, grads, ca, loc, g_vjp, pi_vjp):
        """The per-step body of the branches that accumulate ∇θ in the carry (and may trace)."""
        mus, lams, pieces = adjoint_step(t, lams, ca, loc, g_vjp, lambda mu: pi_vjp(mu)[1])
        contribs = [pi_vjp(mu)[0] for mu in mus]
        grads = tuple(jax.tree.map(jnp.add, g, c) for g, c in zip(grads, contribs))
        if not trace:
            return (lams, grads), None
        record = _adjoint_record(pieces, mus, lams, ca, loc, batch)
        return (lams, grads), ({**record, **_contribution_record(contribs)} if contributions else record)

    if theta_after:
        # The sweep carries λ only and emits μ_t; ∇θ = Σ_t (∂π/∂θ)ᵀ μ_t is then ONE F-batched VJP of
        # the policy over all H·B states (large matrix products instead of H small outer products).
        def backward(lams, inputs):
            t, packed = inputs
            ca, loc, (pi_res, g_res) = unpack(packed)
            pi_x = policy_vjp.pullback(pi_res)
            mus, lams, pieces = adjoint_step(t, lams, ca, loc, physics_vjp.pullback(g_res), lambda mu: pi_x(mu)[0])
            return lams, (jnp.stack(mus), _adjoint_record(pieces, mus, lams, ca, loc, batch) if trace else None)

        lams, (mus, steps) = jax.lax.scan(backward, lam_H, inputs, reverse=True)
        visited = jax.tree.map(lambda v: v[:-1], states)
        _, theta_vjp = jax.vjp(lambda p: jax.vmap(act, in_axes=(None, 0))(p, visited), params)
        (grads,) = jax.vmap(theta_vjp)(jnp.swapaxes(mus, 0, 1))
    else:
        def backward(carry, inputs):
            lams, grads = carry
            t, packed = inputs
            if keep:
                ca, loc, (pi_res, g_res) = unpack(packed)
                pi_vjp, g_vjp = policy_vjp.pullback(pi_res), physics_vjp.pullback(g_res)
            else:  # recompute: re-linearise the step, so that nothing but (x_t, a_t) is kept per step
                ca, loc, (x, a) = unpack(packed)
                xf, xr = split(x)
                _, pi_vjp = jax.vjp(act_f, params, xf, xr)
                _, g_vjp, _ = jax.vjp(step_f, xf, a, xr, has_aux=True)
            return step_theta(t, lams, grads, ca, loc, g_vjp, pi_vjp)

        grads0 = tuple(jax.tree.map(jnp.zeros_like, params) for _ in flows)
        (lams, grads), steps = jax.lax.scan(backward, (lam_H, grads0), inputs, reverse=True)
        grads = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    lam0 = jax.tree.map(lambda *l: jnp.stack(l), *lams)
    if not trace:
        return jax.lax.stop_gradient(out), grads, lam0
    steps = dict(steps)
    if contributions:  # ∇θ's code (H, F) is the last reverse stage, for every batch element
        steps["reverse_codes"] = steps["reverse_codes"].at[:, :, -1, :].set(steps.pop("theta_codes")[:, :, None])
    record = dict(steps, forward_codes=forward_codes, x0_code=nonfinite_code(x0, batch),
                  terminal_code=jnp.stack([nonfinite_code(terminal, batch), nonfinite_code((cx_last, tx), batch)]),
                  lam_H_norm=row_norm(lam_H[0], batch))
    return jax.lax.stop_gradient(out), grads, lam0, record
