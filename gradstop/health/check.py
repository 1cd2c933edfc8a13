"""Is a simulator's gradient right? ``gradstop.check_gradients(sim)`` for any object that follows the protocol.

Two parts, both in float64:

1. **Blocks.** Each Jacobian a rollout's reverse sweep multiplies by — ∂g/∂x, ∂g/∂a (the step),
   ∂c/∂x, ∂c/∂a (the running cost), ∂c_H/∂x (the terminal cost), ∂o/∂x (the observation) and the
   policy's ∂π/∂o, ∂π/∂θ — is held to central finite differences by the dot-product test: for
   random directions v and cotangents u, ⟨VJP(u), v⟩ must equal ⟨u, (f(z + εv) − f(z − εv)) / 2ε⟩,
   at states the policy visits from the simulator's own initial states and at random actions. No
   Jacobian is ever formed, so the check costs a few evaluations per block at any state size.
2. **Flows.** On a short rollout, every flow's ``native`` gradient against its ``fused`` one, against
   a float64 reference (when the policy computes in float32), and the ``none`` flow's against finite
   differences of the loss itself.

A block whose error exceeds its tolerance is named with the size of the error
(:class:`GradientCheck`). The backends (``gradstop.jax.check``, ``gradstop.torch.check``) supply
only the array operations; the tests and the report live here.
"""

from __future__ import annotations

import dataclasses
import importlib
import numbers

import numpy as np

from gradstop._checks import check_framework, check_horizon, check_protocol, explained
from gradstop.health.diagnose import parse_flows

__all__ = ["check_gradients", "GradientCheck", "BLOCKS", "DEFAULT_FLOWS"]

# (name, what it differentiates): the blocks of part 1, in the order they are checked.
BLOCKS = (("∂g/∂x", "the step with respect to the state"), ("∂g/∂a", "the step with respect to the action"),
          ("∂c/∂x", "the running cost with respect to the next state"), ("∂c/∂a", "the running cost with respect to the action"),
          ("∂c_H/∂x", "the terminal cost with respect to the final state"), ("∂o/∂x", "the observation with respect to the state"),
          ("∂π/∂o", "the policy with respect to its input"), ("∂π/∂θ", "the policy with respect to its parameters"))
DEFAULT_FLOWS = ("none", "input", "state", "all", "decay:0.9", "truncate:4", "combined", "directional")
EPS64 = np.finfo(np.float64).eps
RTOL = {"float64": 1e-8, "float32": 1e-3}  # flows: native vs fused / vs the float64 reference, per dtype


@dataclasses.dataclass
class GradientCheck:
    """The outcome of :func:`check_gradients`: one row per block and per flow comparison.

    Each row: ``check`` (e.g. '∂g/∂x', 'flow input: native vs fused'), ``error`` (the largest relative
    error found), ``tolerance``, ``passed``, and ``detail`` (what was compared).
    """

    sim: str
    rows: list

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.rows)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if not r["passed"]]

    def __str__(self) -> str:
        lines = [f"gradient check of {self.sim}: {'passed' if self.passed else 'FAILED'}"]
        for r in self.rows:
            mark = "ok  " if r["passed"] else "FAIL"
            lines.append(f"  {mark} {r['check']:<40} error {r['error']:.2e} (tolerance {r['tolerance']:.0e})  {r['detail']}")
        return "\n".join(lines)


def _dot_test(ops, fn, arg, rng, eps: float, directions: int, rtol: float) -> tuple[float, bool]:
    """The largest relative error of ⟨VJP(u), v⟩ against the central difference of ⟨u, f⟩ along v, and
    whether every direction passed: |analytic − fd| ≤ rtol·max(|analytic|, |fd|) + the difference's
    rounding error (≈ 16·eps_machine·Σ|u·f| / ε), so an all-zero block passes on its rounding alone."""
    fn = ops.prepare(fn)
    out, pullback = ops.vjp(fn, arg)
    worst, ok = 0.0, True
    for _ in range(directions):
        u, v = ops.randn_like(out, rng), ops.randn_like(arg, rng)
        analytic = ops.inner(pullback(u), v)
        plus, minus = fn(ops.axpy(arg, eps, v)), fn(ops.axpy(arg, -eps, v))
        fd = (ops.inner(u, plus) - ops.inner(u, minus)) / (2 * eps)
        noise = 16 * EPS64 * (ops.inner_abs(u, plus) + ops.inner_abs(u, minus)) / (2 * eps)
        diff = abs(analytic - fd)
        scale = max(abs(analytic), abs(fd))
        worst = max(worst, diff / scale if scale > 0 else 0.0)
        ok &= bool(diff <= rtol * scale + noise) and np.isfinite(analytic) and np.isfinite(fd)
    return worst, ok


def check_gradients(sim, policy=None, *, flows=DEFAULT_FLOWS, horizon: int = 8, batch: int = 4, seed: int = 0,
                    warmup: int = 3, directions: int = 4, eps: float = 1e-6, rtol: float = 1e-5,
                    action_scale: float = 1.0) -> GradientCheck:
    """Check ``sim``'s derivatives against finite differences, and every flow's native gradient against fused.

    Args:
      sim: any object following the simulator protocol (``backend`` 'jax' or 'torch'); a Brax
        environment from ``sims.make("brax:<env>")`` too.
      policy: the policy to roll out (default: a fresh float64 MLP 32×32 from ``seed``). A float32
        policy has its flows also compared with a float64 copy.
      flows: the flows compared native against fused.
      horizon, batch: the short rollout of part 2, and the states of part 1 (``batch`` of them).
      seed: random directions, actions and initial states.
      warmup: the blocks are checked at the states the policy reaches after this many steps from
        ``sim.reset`` (0: at the initial states themselves).
      directions: random (u, v) pairs per block.
      eps: the finite-difference step (float64).
      rtol: the relative tolerance of a block.
      action_scale: random actions are uniform in [−action_scale, action_scale].

    Returns:
      A :class:`GradientCheck`; ``.passed`` says whether all agree, ``.failures`` names the blocks
      that do not, with their errors. It does not raise on a failed check.

    Raises:
      TypeError: ``sim`` lacks a protocol method (named).
      ValueError: JAX without 64-bit mode (the fix is named), or an invalid argument.
    """
    check_protocol(sim)
    check_horizon(horizon)
    for name, value in (("batch", batch), ("directions", directions)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer ≥ 0, got {warmup!r}")
    if not (eps > 0 and rtol > 0):
        raise ValueError(f"eps and rtol must be positive, got eps={eps!r}, rtol={rtol!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"seed must be an int ≥ 0 (it seeds the directions, actions and initial states), got "
                        f"{type(seed).__name__} {seed!r}")
    parsed = parse_flows(flows)
    with explained(sim, horizon):
        return _check(sim, policy, parsed, horizon, batch, int(seed), warmup, directions, eps, rtol, action_scale)


def _check(sim, policy, parsed, horizon, batch, seed, warmup, directions, eps, rtol, action_scale) -> GradientCheck:
    """Parts 1 and 2 of :func:`check_gradients`, on checked arguments."""
    ops = importlib.import_module(f"gradstop.{sim.backend}.check").Ops(seed)
    ops.require_float64()
    if policy is None:
        policy = ops.default_policy(sim, seed)
    check_framework(policy, sim)
    policy64 = ops.as_float64(policy)
    rng = np.random.default_rng(seed)

    # -- part 1: the blocks, at states the policy visits and at random actions ----------------------
    x = ops.visited_state(policy64, sim, batch, warmup)
    a = ops.uniform_action(sim, x, batch, action_scale, rng)
    x_next = sim.step(x, a)
    params, apply = ops.functional(policy64)
    o = sim.obs(x)
    blocks = {
        "∂g/∂x": (lambda z: sim.step(z, a), x), "∂g/∂a": (lambda z: sim.step(x, z), a),
        "∂c/∂x": (lambda z: sim.cost(z, a), x_next), "∂c/∂a": (lambda z: sim.cost(x_next, z), a),
        "∂c_H/∂x": (lambda z: sim.terminal_cost(z), x_next), "∂o/∂x": (lambda z: sim.obs(z), x),
        "∂π/∂o": (lambda z: apply(params, z), o), "∂π/∂θ": (lambda p: apply(p, o), params),
    }
    rows = []
    for name, what in BLOCKS:
        fn, arg = blocks[name]
        error, ok = _dot_test(ops, fn, arg, rng, eps, directions, rtol)
        rows.append(dict(check=name, error=error, tolerance=rtol, passed=ok,
                         detail=f"{what}: VJP vs central differences, {directions} random directions"))

    # -- part 2: every flow on a short rollout --------------------------------------------------------
    x0_64 = ops.reset(sim, batch, "float64")
    x0 = ops.cast(x0_64, ops.dtype_of(policy))  # the same states in the policy's dtype
    dtype = ops.dtype_name(policy)
    names = [f.name for f in parsed]
    native = ops.flow_gradients(policy, sim, names, horizon, x0, "native")
    fused = ops.flow_gradients(policy, sim, names, horizon, x0, "fused")
    reference = native if dtype == "float64" else ops.flow_gradients(policy64, sim, names, horizon, x0_64, "native")
    for name in names:
        rows.append(_compare(f"flow {name}: native vs fused", native[name], fused[name], RTOL[dtype],
                             f"{dtype}, H = {horizon}, batch {batch}"))
        if dtype != "float64":
            rows.append(_compare(f"flow {name}: native vs float64", native[name], reference[name], RTOL[dtype],
                                 f"{dtype} against the same rollout in float64"))
    loss_fd, loss_an = ops.loss_directional(policy64, sim, horizon, x0_64, rng, eps)
    diff, scale = abs(loss_fd - loss_an), max(abs(loss_fd), abs(loss_an))
    rows.append(dict(check="flow none: native vs finite differences", error=diff / scale if scale else 0.0,
                     tolerance=rtol, passed=bool(diff <= rtol * scale + 1e-12 * max(scale, 1.0)),
                     detail=f"d loss along a random θ direction, float64, H = {horizon}"))
    name = sim.describe().get("name") if hasattr(sim, "describe") else None
    return GradientCheck(name or getattr(sim, "name", type(sim).__name__), rows)


def _compare(check: str, actual: np.ndarray, expected: np.ndarray, tol: float, detail: str) -> dict:
    scale = np.linalg.norm(expected)
    error = float(np.linalg.norm(actual - expected) / scale) if scale > 0 else float(np.linalg.norm(actual))
    return dict(check=check, error=error, tolerance=tol, passed=bool(np.isfinite(error) and error <= tol), detail=detail)
