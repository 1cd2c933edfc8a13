"""Where a gradient goes wrong: ``gradstop.diagnose(policy, sim, flows=[...], horizon=H)``.

One fused forward and reverse sweep (``gradstop.jax.fused`` / ``gradstop.torch.diagnose``) that
returns the flows' gradients and, per flow and per step t of the horizon:

- the batch-mean and batch-max norm of the adjoints λ_t (t = 0 … H) and μ_t (t = 0 … H−1),
- the norm of step t's contribution (∂π/∂θ)ᵀμ_t to ∇θ,
- across flows, the cosine of the step-t contributions and the fraction of parameter components
  whose signs agree (the quantity the ``combined`` rule keys on), and the same for the whole gradients,
- the first non-finite value, if any: its step, batch element and stage (:class:`NonFinite`).

This module is framework-neutral: the backends return NumPy arrays of a fixed layout
(:data:`RECORD`) and everything here reads them.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from gradstop._checks import check_framework, check_horizon, check_memory, check_protocol
from gradstop.flows import Flow, combine_gradients, parse_flow
from gradstop.gradients import components_of, shared_surrogate

__all__ = ["diagnose", "Diagnosis", "NonFinite", "locate", "explain", "FORWARD_STAGES", "REVERSE_STAGES", "parse_flows"]

# The layout of a backend's record (time-major; F component flows, B batch elements, H steps).
RECORD = {
    "lam_norm": "(H, F, B) ‖λ_t‖ per batch element, t = 0 … H−1",
    "lam_H_norm": "(B,) ‖λ_H‖ (the same for every flow)",
    "mu_norm": "(H, F, B) ‖μ_t‖",
    "gram": "(H, F, F) inner products of the flows' step-t contributions to ∇θ (with contributions=True)",
    "agree": "(H, F(F−1)/2) per pair i < j, the fraction of parameter components where they agree in sign (idem)",
    "forward_codes": "(H, 3, B) non-finite codes of FORWARD_STAGES at step t (0 finite, 1 inf, 2 NaN)",
    "reverse_codes": "(H, F, 5, B) non-finite codes of REVERSE_STAGES at step t",
    "x0_code": "(B,) the initial states' code",
    "terminal_code": "(2, B) the terminal cost's code, and that of λ_H's local terms",
}

# (quantity, stage) of each forward code, in the order a step computes them.
FORWARD_STAGES = (("action", "observation/policy"), ("state", "simulator step"), ("cost", "cost"))
# (quantity, stage) of each reverse code at step t, in the order the sweep computes them from λ_{t+1}.
REVERSE_STAGES = (("λ", "VJP through the simulator"), ("μ", "VJP through the simulator"),
                  ("cost gradient", "cost gradient"), ("λ", "VJP through the policy"),
                  ("∇θ", "VJP through the policy's parameters"))
_KIND = {1: "inf", 2: "NaN"}


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """The first non-finite value of one sweep.

    Attributes:
      sweep: 'forward' or 'reverse'.
      quantity: what became non-finite ('state', 'action', 'cost', 'λ', 'μ', 'cost gradient', '∇θ', ...).
      kind: 'NaN' or 'inf'.
      step: the step t (the forward runs t = 0 … H−1, the reverse sweep t = H−1 … 0; H: the terminal cost).
      horizon: H.
      stage: where it was computed: 'simulator step', 'observation/policy', 'cost', 'VJP through the
        simulator', 'VJP through the policy', ...
      batch_index: the first batch element affected (None where the value sums over the batch, as ∇θ does).
      flow: the flow whose reverse sweep it is (None for the forward).
    """

    sweep: str
    quantity: str
    kind: str
    step: int
    horizon: int
    stage: str
    batch_index: int | None
    flow: str | None = None

    def describe(self, with_flow: bool = True) -> str:
        where = f", batch element {self.batch_index}" if self.batch_index is not None else ", summed over the batch"
        flow = f"flow {self.flow}: " if self.flow and with_flow else ""
        return f"{flow}{self.quantity} first {self.kind} at step {self.step} of {self.horizon} ({self.stage}){where}"

    def __str__(self) -> str:
        return self.describe()


def _first(codes: np.ndarray, order) -> tuple[int, int, int] | None:
    """The first (t, stage, b) with a nonzero code; ``codes`` is (H, S, B), t visited in ``order``."""
    for t in order:
        hit = np.argwhere(codes[t] != 0)
        if hit.size:
            stage, b = hit[0]  # argwhere is row-major: the earliest stage, then the first batch element
            return t, int(stage), int(b)
    return None


def locate(record: dict, flows: list[str], horizon: int) -> list[NonFinite]:
    """The first non-finite value of the forward sweep, then of each flow's reverse sweep (empty if all finite).

    The forward's finding comes first: it is the cause of any reverse finding at or before it.
    """
    found = []
    x0 = np.asarray(record["x0_code"])
    if x0.any():
        b = int(np.argmax(x0 != 0))
        found.append(NonFinite("forward", "initial state", _KIND[int(x0[b])], 0, horizon, "initial state", b))
    else:
        hit = _first(np.asarray(record["forward_codes"]), range(horizon))
        terminal = np.asarray(record["terminal_code"])
        if hit is not None:
            t, s, b = hit
            quantity, stage = FORWARD_STAGES[s]
            found.append(NonFinite("forward", quantity, _KIND[int(record["forward_codes"][t, s, b])], t, horizon, stage, b))
        elif terminal[0].any():
            b = int(np.argmax(terminal[0] != 0))
            found.append(NonFinite("forward", "terminal cost", _KIND[int(terminal[0, b])], horizon, horizon, "terminal cost", b))
    reverse = np.asarray(record["reverse_codes"])
    terminal = np.asarray(record["terminal_code"])[1]
    for f, name in enumerate(flows):
        if terminal.any():
            b = int(np.argmax(terminal != 0))
            found.append(NonFinite("reverse", "λ", _KIND[int(terminal[b])], horizon, horizon,
                                   "terminal and last cost gradient", b, name))
            continue
        hit = _first(reverse[:, f], range(horizon - 1, -1, -1))
        if hit is not None:
            t, s, b = hit
            quantity, stage = REVERSE_STAGES[s]
            found.append(NonFinite("reverse", quantity, _KIND[int(reverse[t, f, s, b])], t, horizon, stage,
                                   None if quantity == "∇θ" else b, name))
    return found


@dataclasses.dataclass
class Diagnosis:
    """What :func:`diagnose` returns. Arrays are NumPy; dicts are keyed by flow name (or a pair of names).

    Attributes:
      flows: the requested flows' names; ``components``: the single-pass flows traced (a combining
        flow is traced through its ``none`` and ``input`` components).
      horizon, batch: H and B.
      loss: the rollout's loss.
      grads: flow -> gradient, in the backend's structure (as ``gradstop.gradients``).
      norms: flow -> global norm of its gradient.
      cosine, agreement: (a, b) -> cosine / sign-agreement fraction of the two whole gradients, every
        requested pair a < b in request order.
      lam_mean, lam_max: component -> (H+1,) batch-mean and batch-max ‖λ_t‖, t = 0 … H.
      mu_mean, mu_max: component -> (H,) the same for ‖μ_t‖.
      contribution: component -> (H,) ‖(∂π/∂θ)ᵀμ_t‖, step t's share of ∇θ (empty with ``contributions=False``).
      step_cosine, step_agreement: (a, b) -> (H,) across components, for their step-t contributions (idem).
      nonfinite: the first non-finite value of the forward and of each component's reverse sweep.
      rollout: the forward rollout (cut from the graph).
      dtype: the gradients' floating dtype ('float32', 'float64'), in which ``norms`` are computed.
      bias: flow -> :class:`gradstop.health.bias.BiasTest`, the empirical-bias test per horizon of each
        requested first-order flow (with ``bias_test=``; empty otherwise).
    """

    flows: list[str]
    components: list[str]
    horizon: int
    batch: int
    loss: float
    grads: dict
    norms: dict
    cosine: dict
    agreement: dict
    lam_mean: dict
    lam_max: dict
    mu_mean: dict
    mu_max: dict
    contribution: dict
    step_cosine: dict
    step_agreement: dict
    nonfinite: list
    rollout: Any = None
    dtype: str = "float64"
    bias: dict = dataclasses.field(default_factory=dict)

    @property
    def first_nonfinite(self) -> NonFinite | None:
        """The root cause: the forward's first non-finite value, else the first reverse one."""
        return self.nonfinite[0] if self.nonfinite else None

    def rows(self) -> list[dict]:
        """One row per (component, t): the per-step trace as a table (t = H has λ only)."""
        out = []
        for name in self.components:
            for t in range(self.horizon + 1):
                last = t == self.horizon
                contribution = self.contribution.get(name)
                out.append(dict(flow=name, t=t, lam_mean=self.lam_mean[name][t], lam_max=self.lam_max[name][t],
                                mu_mean=np.nan if last else self.mu_mean[name][t],
                                mu_max=np.nan if last else self.mu_max[name][t],
                                contribution=np.nan if last or contribution is None else contribution[t]))
        return out

    def pair_rows(self) -> list[dict]:
        """One row per (pair of components, t): cosine and sign agreement of the step-t contributions."""
        return [dict(flow_a=a, flow_b=b, t=t, cosine=self.step_cosine[(a, b)][t], sign_agreement=self.step_agreement[(a, b)][t])
                for (a, b) in self.step_cosine for t in range(self.horizon)]

    def summary(self) -> str:
        """A few lines for a terminal: loss, gradient norms, cosines, the largest adjoint, any non-finite value."""
        lines = [f"loss {self.loss:.6g} (H = {self.horizon}, batch {self.batch})"]
        for name in self.flows:
            lines.append(f"  {name:<24} |∇θ| {self.norms[name]:.4g}")
        for (a, b), c in self.cosine.items():
            lines.append(f"  cos({a}, {b}) = {c:.4f}, signs agree on {self.agreement[(a, b)]:.1%} of components")
        for name in self.components:
            lam = self.lam_max[name]
            t = int(np.nanargmax(np.where(np.isfinite(lam), lam, -np.inf))) if np.isfinite(lam).any() else 0
            lines.append(f"  {name:<24} max |λ_t| {lam[t]:.4g} at t = {t}; |λ_0| / |λ_H| = "
                         f"{_ratio(self.lam_mean[name][0], self.lam_mean[name][-1])}")
        overflows = [name for name in self.flows if not np.isfinite(self.norms[name])]
        finite = [f"  all values finite, but |∇θ| of {', '.join(overflows)} is not: {_norm_overflows(self.dtype)}"] \
            if overflows else ["  all values finite"]
        lines += [f"  non-finite: {n}" for n in self.nonfinite] or finite
        lines += [test.summary() for test in self.bias.values()]
        return "\n".join(lines)


def explain(diagnosis: Diagnosis, flow: str) -> str:
    """One line for a trainer's non-finite stop: where ``flow``'s update first went non-finite."""
    found = diagnosis.first_nonfinite
    if found is None:
        norm = diagnosis.norms.get(flow)
        if norm is not None and not np.isfinite(norm):
            return f"every value of this update is finite; {_norm_overflows(diagnosis.dtype)}"
        return "the locator found every value of this update finite when it replayed it"
    if found.flow is None or found.flow == flow:
        return found.describe(with_flow=False)
    return f"in its {found.flow} component, {found.describe(with_flow=False)}"


def _norm_overflows(dtype: str) -> str:
    return (f"the norm itself overflows {dtype} (the sum of the squared gradient components exceeds its largest value, "
            f"{float(np.finfo(dtype).max):.3g}): run in float64 (dtype='float64', --dtype float64) or clip the gradient "
            "by value (clip_value=…, --clip-value)")


def _ratio(a, b) -> str:
    return f"{a / b:.3g}" if b else "n/a (λ_H = 0)"


def parse_flows(flows) -> list[Flow]:
    """A flow string, Flow, comma-separated string or list of them, parsed; a clear error if empty or repeated."""
    if isinstance(flows, str):
        flows = [f for f in flows.split(",") if f.strip()]
    elif isinstance(flows, Flow):
        flows = [flows]
    parsed = [parse_flow(f) for f in flows]
    if not parsed:
        raise ValueError("flows is empty: name at least one flow, e.g. flows=['none', 'input']")
    if len({f.name for f in parsed}) != len(parsed):
        raise ValueError(f"flows names a flow twice: {[f.name for f in parsed]}")
    return parsed


def diagnose(policy, sim, *, flows=("none", "input"), horizon: int, x0=None, key=None, batch: int | None = None,
             memory: str = "residuals", contributions: bool = True, bias_test: dict | None = None) -> Diagnosis:
    """Per-step adjoint traces, gradient comparisons and the origin of any non-finite value, from one fused sweep.

    Args:
      policy, sim, horizon, x0, key, batch, memory: as :func:`gradstop.rollout`.
      flows: the flows to trace (strings or ``gradstop.Flow``; a comma-separated string works too).
      contributions: also compare each step's contribution to ∇θ across flows (norm, cosine, sign
        agreement). These touch all F·P parameter values at each of the H steps, which at batch 1 costs
        several fused gradients (docs/diagnose.md); ``False`` keeps the adjoint trace, the whole-gradient
        comparisons and the non-finite locator, at about the cost of one fused gradient.
      bias_test: also run the empirical-bias test (:func:`gradstop.bias_test`: ‖ĝ1 − ĝ0‖ against ĝ0's confidence
        bound ε) of each requested first-order flow on the same initial states, with these arguments, e.g.
        ``dict(horizons=[10, 50, 150], samples=64, sigma=0.1)``; ``key`` defaults to 0.

    Returns:
      A :class:`Diagnosis`. A non-finite value does not raise: it is reported in ``nonfinite``.

    Example::

        d = gs.diagnose(policy, sim, flows=["none", "input", "combined"], horizon=150, key=0, batch=8)
        d.lam_max["none"]           # (151,) the largest |λ_t| in the batch, t = 0 … 150
        d.step_agreement[("none", "input")]
        print(d.summary())
    """
    parsed = parse_flows(flows)
    check_horizon(horizon)
    check_memory(memory)
    check_protocol(sim, needs_reset=x0 is None)
    check_framework(policy, sim)
    sim = shared_surrogate(sim, parsed, "gs.diagnose")
    components = components_of(parsed)
    backend = importlib.import_module(f"gradstop.{sim.backend}.diagnose")
    loss, grads, flat, record, rollout = backend.trace(policy, sim, flows=parsed, components=components, horizon=horizon,
                                                       x0=x0, key=key, batch=batch, memory=memory,
                                                       contributions=contributions)
    flat_all = {f.name: _flat_of(f, flat) for f in parsed}
    names = [f.name for f in parsed]
    with np.errstate(over="ignore"):  # in the gradients' dtype, as a trainer computes it: it may overflow
        norms = {n: float(np.sqrt(np.sum(np.square(flat_all[n])))) for n in names}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    cosine = {(a, b): _cos(flat_all[a], flat_all[b]) for a, b in pairs}
    agreement = {(a, b): float(np.mean(np.sign(flat_all[a]) == np.sign(flat_all[b]))) for a, b in pairs}

    comp = [c.name for c in components]
    lam = np.concatenate([np.asarray(record["lam_norm"]), np.broadcast_to(record["lam_H_norm"], (1, len(comp)) +
                                                                          np.shape(record["lam_H_norm"]))])  # (H+1, F, B)
    mu = np.asarray(record["mu_norm"])
    step_pairs = [(i, j) for i in range(len(comp)) for j in range(i + 1, len(comp))]
    contribution, step_cos, step_agree = {}, {}, {}
    if contributions:
        gram, agree = np.asarray(record["gram"]), np.asarray(record["agree"])
        diag = np.sqrt(np.maximum(np.einsum("tff->tf", gram), 0.0))
        contribution = {c: diag[:, i] for i, c in enumerate(comp)}
        with np.errstate(invalid="ignore", divide="ignore"):
            step_cos = {(comp[i], comp[j]): gram[:, i, j] / (diag[:, i] * diag[:, j]) for i, j in step_pairs}
        step_agree = {(comp[i], comp[j]): agree[:, k] for k, (i, j) in enumerate(step_pairs)}
    bias = {}
    if bias_test is not None:
        from gradstop.health.bias import bias_test as run_bias_test

        options = dict(bias_test)
        if "horizons" not in options:
            raise ValueError("bias_test needs horizons, e.g. bias_test=dict(horizons=[10, 50, 150], samples=64)")
        options.setdefault("key", 0 if key is None else key)
        start = rollout.states[0] if not isinstance(rollout.states, (tuple, list)) else None
        bias = {f.name: run_bias_test(policy, sim, flow=f, x0=start if start is not None else x0, **options)
                for f in parsed if not f.combining}
    return Diagnosis(
        flows=names, components=comp, horizon=horizon, batch=int(lam.shape[-1]), loss=float(loss), grads=grads,
        norms=norms, cosine=cosine, agreement=agreement,
        lam_mean={c: lam[:, i].mean(-1) for i, c in enumerate(comp)}, lam_max={c: lam[:, i].max(-1) for i, c in enumerate(comp)},
        mu_mean={c: mu[:, i].mean(-1) for i, c in enumerate(comp)}, mu_max={c: mu[:, i].max(-1) for i, c in enumerate(comp)},
        contribution=contribution, step_cosine=step_cos, step_agreement=step_agree,
        nonfinite=locate(record, comp, horizon), rollout=rollout, dtype=str(flat[comp[0]].dtype), bias=bias)


def _flat_of(flow: Flow, flat: dict) -> np.ndarray:
    """A flow's whole gradient as one vector, from its components' vectors (combining flows combined here)."""
    if not flow.combining:
        return flat[flow.name]
    g_none, g_input = (flat[c.name] for c in flow.components())
    return combine_gradients(flow.base, g_none, g_input, np)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na and nb else float("nan")
