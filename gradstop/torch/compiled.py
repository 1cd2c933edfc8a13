"""The fast PyTorch path (``compile=True``): the fused sweep as two loops that ``torch.compile`` keeps as loops.

Eager PyTorch pays a fixed cost per operation (about 5–10 µs on these CPUs), so at batch 1 a
rollout is bound by the number of operations, not by arithmetic. ``torch.compile`` of the eager
loop removes that cost but unrolls the Python loop: its compile time grows with H (minutes at
H = 150). This module writes the sweep with torch's ``scan`` higher-order op instead, so the
compiler sees one step and a loop around it:

* **forward**: ``scan`` over t of  a_t = π(obs(x_t)),  x_{t+1} = g(x_t, a_t),  c_t = c(x_{t+1}, a_t);
  it keeps only (x_t, a_t) (memory O(H·(|x|+|a|)), like ``memory="recompute"``);
* **reverse**: ``scan`` backwards over t carrying every component flow's λ̃_{t+1} (F, B, n). Each
  step re-linearises g, c and π∘obs once with ``torch.func.vjp`` and applies the F flows'
  cotangents to those VJPs::

      μ_t = ∂c_t/∂a_t + (∂g/∂a)ᵀ λ_{t+1},   λ̃_t = k_phys·(∂g/∂x)ᵀ λ_{t+1} + k_in·(∂π∘obs/∂x)ᵀ μ_t

  (λ_{t+1} = λ̃_{t+1} + ∂c_t/∂x_{t+1}); λ̃_t is zeroed where the flow truncates (``cut_after(t)``);
* **parameters**: ∇θ = Σ_t (∂π/∂θ)ᵀ μ_t for each flow from one batched VJP of π over all H·B
  visited states after the sweep.

The horizon is the length of the scanned tensor and is marked dynamic, so one compile serves
every H ≥ 2 at batch ≤ ``SMALL_BATCH`` (H = 1 is specialised by the compiler and compiles once
more; at larger batches inductor also splits at H·B = 4096, one compile on either side). Inductor options,
applied to these compiles only: ``cpp_wrapper`` (the loop runs in generated C++, not Python),
the decomposition of batch-1 matrix products into fused loops (one kernel per step instead of
a library call per layer), and one thread at batch ≤ ``SMALL_BATCH`` (an OpenMP barrier costs
more than a 128-wide layer). Once dynamo has run a program for an H without recompiling, later
calls with that H call its compiled graph directly, without dynamo's per-call guard evaluation
(:class:`_Direct`). Why this design won over the alternatives is recorded, with numbers, in
docs/design.md ("The compiled PyTorch path").

Requirements on the simulator and policy: their torch code must trace under
``torch.compile(fullgraph=True)`` (every built-in simulator and ``gs.torch.mlp`` do); a
:class:`torch.nn.Module` policy whose parameters are read through ``torch.func.functional_call``.
"""

from __future__ import annotations

import collections
import functools
import types

import torch
from torch._higher_order_ops.scan import scan
from torch.func import functional_call, vjp

from gradstop._checks import SMALL_BATCH
from gradstop.flows import Flow
from gradstop.rollout import Rollout

__all__ = ["forward", "backward", "sweep", "compile_count"]

_COMPILES = {"count": 0, "programs": 0}


def compile_count() -> int:
    """How many graphs this module has compiled so far in this process (for tests: a new H must not add one)."""
    return _COMPILES["count"]


def _counting_backend(options, graphs: list, keep_inputs: bool):
    """Inductor with ``options``, counting each graph it is handed and keeping (example inputs if
    ``keep_inputs`` else None, compiled function) of each in ``graphs``."""
    from torch._inductor.compile_fx import compile_fx

    def backend(gm, example_inputs):
        _COMPILES["count"] += 1
        with torch._inductor.config.patch(options):
            fn = compile_fx(gm, example_inputs)
        graphs.append((list(example_inputs) if keep_inputs else None, fn))
        return fn
    return backend


def _options(batch: int, device: torch.device) -> dict:
    options = {"cpp_wrapper": True}
    if device.type == "cpu":
        options["post_grad_fusion_options"] = {"decompose_mm_pass": {}}
        if batch <= SMALL_BATCH:
            options["cpp.threads"] = 1
    return options


def _policy_fn(policy, names):
    def apply(params, obs):
        return functional_call(policy, dict(zip(names, params)), (obs,))
    return apply


class _Direct:
    """A program's one compiled graph, called without dynamo: its guards are evaluated once per H instead of at
    every call (about 0.1 ms of a batch-1 gradient at H = 10; docs/design.md).

    Built from the call that compiled the graph: each of the graph's inputs is found among that call's
    arguments (flattened) by identity, or is a loop length (a symbolic size, whose value was that call's H),
    or is a constant the graph read (a simulator's tensor, a buffer), kept as the object it was: updated in
    place, it is read at every call, but one replaced by a new tensor object is not seen (dynamo's guards
    would recompile; give the policy and simulator new objects instead, or set ``DIRECT = False``). It is
    built only if calling the graph so reproduces dynamo's result exactly; :meth:`accepts` then checks each
    later call's arguments against the first call's (dtype, device, shape — but a loop argument's length — and
    no grad).
    """

    def __init__(self, inputs, fn, args, result, h: int, loop_args: tuple[int, ...]):
        leaves, self.in_spec = torch.utils._pytree.tree_flatten(args)
        self.fn, self.plan = fn, []
        # which leaves are a loop argument (checked but for their first dimension, the loop's length)
        sizes = [len(torch.utils._pytree.tree_leaves(a)) for a in args]
        starts = [sum(sizes[:i]) for i in range(len(args))]
        loops = {starts[i] for i in loop_args}
        for value in inputs:
            if isinstance(value, torch.SymInt):
                if value.node.hint != h:
                    raise _NotDirect(f"a symbolic size {value} is not the loop's length")
                self.plan.append(("h", None))
                continue
            where = [i for i, leaf in enumerate(leaves) if leaf is value]
            self.plan.append(("arg", where[0]) if where else ("const", value))
        self.meta = [(x.dtype, x.device, x.dim(), i in loops, x.shape[1:] if i in loops else x.shape, x.requires_grad)
                     for i, x in enumerate(leaves)]
        out, self.out_spec = torch.utils._pytree.tree_flatten(result)
        mine = self.fn(*self._inputs(leaves, h))
        if len(mine) != len(out) or not all(isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                                            and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(mine, out)):
            raise _NotDirect("the graph's outputs are not dynamo's")

    def _inputs(self, leaves, h: int) -> list:
        return [h if kind == "h" else leaves[ref] if kind == "arg" else ref for kind, ref in self.plan]

    def accepts(self, args) -> list | None:
        """The flattened arguments if they match the first call's in everything but the loop's length, else None."""
        leaves, spec = torch.utils._pytree.tree_flatten(args)
        if spec != self.in_spec or torch.is_autocast_enabled() or torch.is_grad_enabled():
            return None
        for x, (dtype, device, dim, loop, shape, grad) in zip(leaves, self.meta):
            if (x.dtype != dtype or x.device != device or x.dim() != dim or (x.shape[1:] if loop else x.shape) != shape
                    or x.requires_grad != grad):
                return None
        return leaves

    def __call__(self, leaves, h: int):
        return torch.utils._pytree.tree_unflatten(list(self.fn(*self._inputs(leaves, h))), self.out_spec)


class _NotDirect(Exception):
    pass


DIRECT = True  # call a program's one compiled graph without dynamo once dynamo has accepted the H (tests turn it off)
_DIRECT_CALLS = {"count": 0}


class _Program:
    """One compiled loop for one exact key (policy, sim, flows, batch, dtype, device).

    Two compiled functions: one for H ≥ 2, whose loop length is dynamic (one compile for every
    such H at batch ≤ ``SMALL_BATCH``; above it inductor guards its float32 summation scheme on
    H·B ≤ 4096, so H ≤ 16 and H ≥ 17 compile once each at batch 256), and one for H = 1, which
    the compiler specialises anyway (and which inductor's C++ wrapper miscompiles in torch 2.13,
    so it keeps the Python wrapper).
    Each gets a code object of its own: dynamo caches graphs per code object, at most 8, and every
    closure of the same function would otherwise share one cache.

    While the H ≥ 2 function has compiled exactly one graph, a call with an H that dynamo has already
    accepted (its guards held and nothing recompiled) calls that graph directly (:class:`_Direct`);
    a second graph switches this off for the program.
    """

    def __init__(self, fn, batch: int, device: torch.device, loop_args: tuple[int, ...]):
        self.loop_args = loop_args  # positions of the arguments whose first dimension is the loop's length
        self.compiled, self.graphs = {}, {1: [], 2: []}
        self.direct, self.accepted, self.no_direct = None, set(), False
        for kind in (1, 2):
            options = _options(batch, device) if kind == 2 else {**_options(batch, device), "cpp_wrapper": False}
            _COMPILES["programs"] += 1
            code = fn.__code__.replace(co_name=f"{fn.__name__}_{_COMPILES['programs']}")
            fresh = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
            backend = _counting_backend(options, self.graphs[kind], keep_inputs=kind == 2)  # only H ≥ 2 is called directly
            self.compiled[kind] = torch.compile(fresh, backend=backend, fullgraph=True, dynamic=False)

    def __call__(self, *args):
        h = args[self.loop_args[0]].shape[0]
        kind = min(h, 2)
        if kind == 2 and self.direct is not None and h in self.accepted and DIRECT:
            leaves = self.direct.accepts(args)
            if leaves is not None:
                _DIRECT_CALLS["count"] += 1
                return self.direct(leaves, h)
        if kind == 2:  # the loop length is dynamic in every graph compiled for H ≥ 2
            for i in self.loop_args:
                torch._dynamo.mark_dynamic(args[i], 0)
        before = len(self.graphs[kind])
        # A simulator's NumPy constants are constants here, not arrays to trace (see _warm).
        try:
            with torch._dynamo.config.patch(trace_numpy=False):
                result = self.compiled[kind](*args)
        except torch._dynamo.exc.TorchDynamoException as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeError(
                f"compile=True could not compile this simulator and policy ({first}). Their torch code must trace "
                "under torch.compile(fullgraph=True): no NumPy conversions of tensors, no Python branches on tensor "
                "values, no side effects. Run without compile=True (eager gives the same gradients)") from err
        if kind == 2 and not self.no_direct:
            self._learn(args, result, h, compiled_now=len(self.graphs[2]) > before)
        return result

    def _learn(self, args, result, h: int, compiled_now: bool) -> None:
        """After a call through dynamo: accept ``h`` for the direct call, or switch it off for good."""
        if len(self.graphs[2]) != 1:
            self.direct, self.no_direct = None, True
            return
        if compiled_now:
            inputs, fn = self.graphs[2][0]
            self.graphs[2][0] = (None, fn)  # the first call's tensors are not kept alive
            try:
                self.direct = _Direct(inputs, fn, args, result, h, self.loop_args)
            except _NotDirect:
                self.no_direct = True
                return
        self.accepted.add(h)


def _forward_fn(pi, sim):
    """The forward loop as a function of (params, x0, steps): the rollout, and what the reverse loop needs."""
    def run_forward(params, x0, steps):
        batch = x0.shape[0]

        def body(x, _):
            a = pi(params, sim.obs(x))
            x_next = sim.step(x, a)
            return x_next, (x.clone(), a.clone(), sim.cost(x_next, a))

        x_h, (xs, actions, costs) = scan(body, x0, steps)
        terminal, terminal_vjp = vjp(lambda x: sim.terminal_cost(x), x_h)
        (tx,) = terminal_vjp(torch.full_like(terminal, 1.0 / batch))
        loss = (costs.sum(0) + terminal).mean()
        return torch.cat([xs, x_h[None]]), xs, actions, costs, terminal.clone(), tx, loss
    return run_forward


def _backward_fn(pi, sim, weights: tuple):
    """The reverse loop for flows of edge weights ``weights`` ((k_phys, k_in) each), then ∇θ: (λ̃_0, grads)."""
    def run_backward(params, xs, actions, tx, cuts):
        batch = xs.shape[1]
        lam_h = torch.stack([tx for _ in weights])

        def body(lam, inputs):
            x, a, cut = inputs
            x_next, step_vjp = vjp(sim.step, x, a)
            _, cost_vjp = vjp(lambda xn, u: sim.cost(xn, u).sum() / batch, x_next, a)
            c_x, c_a = cost_vjp(torch.ones((), dtype=x.dtype, device=x.device))
            if any(k_in for _, k_in in weights):
                _, input_vjp = vjp(lambda xx: pi(params, sim.obs(xx)), x)
            new, mus = [], []
            for i, (k_phys, k_in) in enumerate(weights):
                g_x, g_a = step_vjp(lam[i] + c_x)
                mu = g_a + c_a
                lam_t = k_phys * g_x
                if k_in:
                    lam_t = lam_t + k_in * input_vjp(mu)[0]
                new.append(torch.where(cut[i] > 0, torch.zeros_like(lam_t), lam_t))
                mus.append(mu)
            return torch.stack(new), torch.stack(mus)

        lam0, mus = scan(body, lam_h, (xs, actions, cuts), reverse=True)
        visited = xs.reshape(-1, xs.shape[-1])
        _, param_vjp = vjp(lambda p: pi(p, sim.obs(visited)), params)
        grads = [param_vjp(mus[:, i].reshape(-1, mus.shape[-1]))[0] for i in range(len(weights))]
        return lam0, tuple(torch.stack([g[j] for g in grads]) for j in range(len(params)))
    return run_backward


@functools.lru_cache(maxsize=64)
def _forward_program(policy, sim, names: tuple, batch: int, dtype: torch.dtype, device: torch.device) -> _Program:
    """The compiled forward loop for one (policy, sim, batch, dtype, device): ``rollout(compile=True)``'s forward."""
    return _Program(_forward_fn(_policy_fn(policy, names), sim), batch, device, loop_args=(2,))


@functools.lru_cache(maxsize=64)
def _backward_program(policy, sim, names: tuple, weights: tuple, batch: int, dtype: torch.dtype,
                      device: torch.device) -> _Program:
    """The compiled reverse sweep for one (policy, sim), the flows' (k_phys, k_in), batch, dtype and device."""
    return _Program(_backward_fn(_policy_fn(policy, names), sim, weights), batch, device, loop_args=(1, 2, 4))


@functools.lru_cache(maxsize=64)
def _sweep_program(policy, sim, names: tuple, weights: tuple, batch: int, dtype: torch.dtype,
                   device: torch.device) -> _Program:
    """Forward and reverse loop in one compiled call (``gs.gradients``): one pass through dynamo, not two."""
    pi = _policy_fn(policy, names)
    run_forward, run_backward = _forward_fn(pi, sim), _backward_fn(pi, sim, weights)

    def run_sweep(params, x0, steps, cuts):
        states, xs, actions, costs, terminal, tx, loss = run_forward(params, x0, steps)
        lam0, grads = run_backward(params, xs, actions, tx, cuts)
        return (states, actions, costs, terminal, loss), lam0, grads
    return _Program(run_sweep, batch, device, loop_args=(2, 3))


def _named(policy):
    if not isinstance(policy, torch.nn.Module):
        raise TypeError("compile=True reads the policy's parameters with torch.func: it must be an nn.Module")
    named = [(k, p) for k, p in policy.named_parameters() if p.requires_grad]
    return tuple(k for k, _ in named), tuple(p.detach() for _, p in named)


@functools.lru_cache(maxsize=256)
def _cuts(truncations: tuple, horizon: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(H, F): 1 where flow i resets λ̃_t to zero (t > 0 and t a multiple of its truncation K)."""
    rows = [[t > 0 and k is not None and t % k == 0 for k in truncations] for t in range(horizon)]
    return torch.tensor(rows, dtype=dtype, device=device)


class Tape:
    """What the compiled forward keeps: (x_t, a_t) for t < H and ∂c_H/∂x_H."""

    def __init__(self, rollout: Rollout, xs, actions, tx):
        self.rollout, self.xs, self.actions, self.tx = rollout, xs, actions, tx


_WARMED: collections.OrderedDict = collections.OrderedDict()
_WARMED_MAX = 64


def _warm(policy, sim, x0: torch.Tensor) -> None:
    """One eager step from x0's first row, so the simulator's constants exist as tensors of this dtype and
    device before tracing (once per policy, sim, dtype and device while that key is among the last
    ``_WARMED_MAX`` warmed: like the program caches, the record is bounded and keeps no policy alive for good).

    (``sims._ops.constant`` converts a NumPy constant on first use; the compiler cannot create a tensor
    from NumPy inside a loop body, but reads one that exists.)
    """
    key = (policy, sim, x0.dtype, x0.device)
    if key in _WARMED:
        _WARMED.move_to_end(key)
        return
    with torch.no_grad():
        x = x0[:1].detach()
        a = policy(sim.obs(x))
        sim.cost(sim.step(x, a), a)
        sim.terminal_cost(x)
    _WARMED[key] = None
    while len(_WARMED) > _WARMED_MAX:
        _WARMED.popitem(last=False)


def forward(policy, sim, horizon: int, x0: torch.Tensor, memory: str = "recompute", flows=None) -> Tape:
    """The compiled forward loop: the rollout and what the reverse sweep needs (``memory`` is always 'recompute';
    the same forward serves any ``flows``)."""
    names, params = _named(policy)
    _warm(policy, sim, x0)
    run_forward = _forward_program(policy, sim, names, x0.shape[0], x0.dtype, x0.device)
    steps = torch.empty((horizon, 0), dtype=x0.dtype, device=x0.device)  # the loop's length
    with torch.no_grad():
        states, xs, actions, costs, terminal, tx, loss = run_forward(params, x0.detach(), steps)
        out = Rollout(states, actions, costs, terminal, loss)
    return Tape(out, xs, actions, tx)


def backward(policy, sim, flows: tuple[Flow, ...], tape: Tape):
    """The compiled reverse sweep for F single-pass ``flows``: (grads {name: (F, ...)}, λ_0 (F, B, n))."""
    names, params = _named(policy)
    weights = tuple((f.k_phys, f.k_in) for f in flows)
    xs = tape.xs
    run_backward = _backward_program(policy, sim, names, weights, xs.shape[1], xs.dtype, xs.device)
    cuts = _cuts(tuple(f.truncate for f in flows), xs.shape[0], xs.dtype, xs.device)
    with torch.no_grad():
        lam0, grads = run_backward(params, tape.xs, tape.actions, tape.tx, cuts)
    return dict(zip(names, grads)), lam0


def sweep(policy, sim, flows: tuple[Flow, ...], horizon: int, x0):
    """Compiled forward and reverse sweep in one call: ``(rollout, grads {name: (F, ...)}, λ_0)``, as ``fused.sweep``."""
    names, params = _named(policy)
    _warm(policy, sim, x0)
    weights = tuple((f.k_phys, f.k_in) for f in flows)
    run_sweep = _sweep_program(policy, sim, names, weights, x0.shape[0], x0.dtype, x0.device)
    steps = torch.empty((horizon, 0), dtype=x0.dtype, device=x0.device)
    cuts = _cuts(tuple(f.truncate for f in flows), horizon, x0.dtype, x0.device)
    with torch.no_grad():
        out, lam0, grads = run_sweep(params, x0.detach(), steps, cuts)
    return Rollout(*out), dict(zip(names, grads)), lam0
