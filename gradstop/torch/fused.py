"""The fused sweep in PyTorch: several flows from one forward and one reverse pass.

Two ways of recording the forward, chosen by :func:`forward` from the flows, the batch and the
memory policy (docs/design.md, "The fused sweep", has the measurements behind the choice):

**One graph of F·B rows** (``memory="residuals"`` with one flow, or at batch ≤ ``SMALL_BATCH``).
The F flows' copies of the batch are stacked on the batch axis and rolled out once; where x_t
enters the policy and the physics, an edge weight (identity on values: a ``where`` against the
detached state where every row's weight is 0 or 1, else :class:`_EdgeWeight`) multiplies the
gradient passing back through it, row by row, by that row's flow's k_in and k_phys (0 on both
where the flow truncates)::

    x_t ──k_in──obs──π──> a_t ──┐
    x_t ──k_phys───────────────g──> x_{t+1},   c_t = cost(x_{t+1}, a_t) / B

One engine call then returns every flow's λ_0 (the rows of x_0) and μ_t = ∂L/∂a_t (the rows of
a_t). At batch 1 an eager operation on F rows costs about what it costs on one, so the F flows'
reverse sweeps cost about one; where a step has at most ``ONE_THREAD_ROWS`` rows it runs on one
intra-op thread, since torch's CPU matmul would hand 2–8 rows to a threaded gemm that costs more
than it saves. ∇θ = Σ_t (∂π/∂θ)ᵀ μ_t comes from one batched backward over the H·B visited states
after the sweep at batch ≤ ``SMALL_BATCH`` (for one flow, from ``AFTER_SWEEP_HORIZON`` steps on),
and otherwise from the same engine call (above ``SMALL_BATCH`` only one flow is stacked: F copies of
a large batch would cost F times the arithmetic). Where ∇θ comes after the sweep the graph is
recorded with the policy's parameters' ``requires_grad`` off (restored when the forward ends,
however it ends), so it holds no ∂/∂θ branch for the engine to record or to prune. (A plain
``backward()`` that left λ_0 and μ_t in ``.grad`` would spare the pruning, 4.5 µs per step, but would
also write ``.grad`` into any other tensor requiring grad that the simulator reads.) A *rollout* of
one flow whose ∇θ comes from the engine call goes no further (:func:`autodiff`): that graph is
native's with the edge weights, so its loss is returned as the graph's own node and
``loss.backward()`` is autograd's, with no ``autograd.Function`` around it.

**One small graph per step** (several flows above ``SMALL_BATCH``, ``memory="recompute"``, and
``gradstop.diagnose``, which inspects each step's products). The state enters each step's graph
twice, as two leaves, one for the policy's input (x_π) and one for the physics (x_g), so the two
paths' VJPs come apart::

    x_π ──obs──π──> a_t ──┐
    x_g ─────────────────g──> x_{t+1},   c_t = cost(x_{t+1}, a_t) / B

With ``memory="recompute"`` only x_t is kept (memory O(H·(|x|+|a|)) plus one step's graph) and
each step is re-recorded in the sweep.

The reverse loop carries, per flow, λ̃_{t+1} — the adjoint of x_{t+1} less its local term
∂c_t/∂x_{t+1}, which the step's cost adds back. One engine call per flow and step,
``autograd.grad((x_{t+1}, c_t), (x_g, x_π, a_t), (λ̃_{t+1}, 1))``, returns every product DESIGN §2
needs::

    ∂/∂x_g = (∂g/∂x)ᵀ λ_{t+1}        ∂/∂a_t = μ_t = ∂c_t/∂a_t + (∂g/∂a)ᵀ λ_{t+1}
    ∂/∂x_π = (∂π∘obs/∂x)ᵀ μ_t          λ̃_t = k_phys·∂/∂x_g + k_in·∂/∂x_π   (0 at a cut)

A flow with k_in = 0 does not ask for ∂/∂x_π, so the engine skips that branch. ∇θ comes from the
same call (θ among its inputs), except with the residuals policy at batch ≤ ``SMALL_BATCH``,
where one batched backward over all H·B visited states after the sweep is cheaper than H small
ones.

No Jacobian is ever formed: every product is a vector-Jacobian product of torch's autograd engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch

from gradstop._checks import SMALL_BATCH, check_memory
from gradstop.flows import Flow
from gradstop.rollout import Rollout

__all__ = ["sweep", "forward", "backward", "reverse", "stacks", "autodiff", "rollout_graph"]


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
    named: list            # (name, parameter) of the policy's parameters that require grad, as recorded
    memory: str
    steps: list            # residuals: one Step per step; recompute: x_t per step (no graph)
    tx: torch.Tensor       # ∂c_H/∂x_H (batch mean)


class _EdgeWeight(torch.autograd.Function):
    """Identity on values; the gradient passing back is multiplied by ``k`` (a number, or a column
    (F·B, 1, …) of one weight per row), and set to exactly 0 where ``k`` is 0, as a detach would."""

    @staticmethod
    def forward(ctx, x, k, zero):
        ctx.k, ctx.zero = k, zero
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g * ctx.k
        return (g if ctx.zero is None else g.masked_fill(ctx.zero, 0.0)), None, None


_BINARY = object()  # the weight of a column whose rows are each 0 or 1 (the mask of its zeros goes with it)


class _Weights:
    """The edge weights of F flows stacked on the batch axis, one column per pattern of cuts (cached)."""

    def __init__(self, flows, batch: int, like: torch.Tensor):
        self.flows, self.batch, self.like, self._cache = flows, batch, like, {}
        self.uncut = None if any(f.truncate is not None for f in flows) else (False,) * len(flows)

    def at(self, t: int):
        """(weight of x_t → policy input, weight of x_t → physics), each an argument for :func:`_weighted`."""
        cuts = self.uncut or tuple(t > 0 and f.cut_after(t) for f in self.flows)
        if cuts not in self._cache:
            k_in = [0.0 if c else f.k_in for f, c in zip(self.flows, cuts)]
            k_phys = [0.0 if c else f.k_phys for f, c in zip(self.flows, cuts)]
            like = (self.batch, self.like.dim(), self.like.dtype, self.like.device)
            self._cache[cuts] = (_column(tuple(k_in), *like), _column(tuple(k_phys), *like))
        return self._cache[cuts]


@functools.lru_cache(maxsize=256)
def _column(ks: tuple, batch: int, dim: int, dtype: torch.dtype, device: torch.device):
    """One weight per flow, as an argument for :func:`_weighted`: a number where all flows agree, else a column
    (F·B, 1, …) of the rows' weights and the mask of its zeros. Cached across forwards: building it is about ten
    small operations (20–30 µs at batch 1), and nothing writes to it."""
    if len(set(ks)) == 1:
        return ks[0], None
    shape = (len(ks) * batch,) + (1,) * (dim - 1)
    with torch.inference_mode(False):  # a normal tensor even if first built under inference mode: where saves it
        k = torch.tensor(ks, dtype=dtype, device=device).repeat_interleave(batch).reshape(shape)
        zero = k == 0
    if set(ks) <= {0.0, 1.0}:
        return _BINARY, zero
    return k, zero if 0.0 in ks else None


def _weighted(x: torch.Tensor, weight) -> torch.Tensor:
    k, zero = weight
    if zero is None and not isinstance(k, torch.Tensor):
        if k == 1.0:
            return x
        if k == 0.0:
            return x.detach()
    if k is _BINARY:  # every row's weight is 0 or 1: a where, whose backward is the engine's own (no Python call)
        return torch.where(zero, x.detach(), x)
    return _EdgeWeight.apply(x, k, zero)


@dataclasses.dataclass
class Graph:
    """The forward of the one-graph sweep: F flows' copies of the batch rolled out as F·B rows."""

    rollout: Rollout       # the rollout (the first flow's rows; every flow's rows hold the same values)
    flows: tuple
    named: list            # (name, parameter) of the policy's parameters that require grad, as recorded
    x0: torch.Tensor       # the (F·B, …) leaf
    actions: list          # a_t, (F·B, …) each, graph nodes
    loss: torch.Tensor     # Σ over flows of each flow's loss (a scalar graph node)
    after: bool            # recorded without θ (∇θ after the sweep, from μ_t), else with it


def _named(policy) -> list:
    return [(k, p) for k, p in policy.named_parameters() if p.requires_grad]


# One flow's ∇θ after the sweep pays from this horizon on. It replaces the H per-step ∂/∂θ products of the
# sweep (about 18 µs a step at batch 1 on the neural benchmark) by one VJP over the H·B visited states, whose
# policy forward and engine call cost about 190 µs whatever H: one flow at H = 10 was 0.93× native that way
# and 0.98× through autograd's own per-step ∇θ, at H = 20 1.03× and 1.01× (docs/design.md, "The fused sweep",
# point 8). Several flows take ∇θ after the sweep at every horizon: their stacked rows would sum it.
AFTER_SWEEP_HORIZON = 16


def _theta_after_sweep(n_flows: int, batch: int, horizon: int, memory: str) -> bool:
    """Whether ∇θ comes from one batched backward over the visited states after the sweep (else from the
    sweep's own engine calls): with the residuals policy at batch ≤ ``SMALL_BATCH``, in both recordings, for
    several flows, or for one flow from ``AFTER_SWEEP_HORIZON`` steps on."""
    return memory == "residuals" and batch <= SMALL_BATCH and (n_flows > 1 or horizon >= AFTER_SWEEP_HORIZON)


def stacks(flows, batch: int, memory: str) -> bool:
    """Whether :func:`forward` records ``flows`` as one graph of F·B rows (else one small graph per step)."""
    return memory == "residuals" and (len(flows) == 1 or batch <= SMALL_BATCH)


# At most this many rows per step operation, the sweep's per-step work runs on one intra-op thread. On CPU,
# torch's matmul hands 2 to 8 rows to a multi-threaded gemm whose fork and join cost more than the product
# (on these 2-core machines, 128-wide layers: 2 rows 6.6 µs on two threads, 2.6 µs on one); up to 4 rows one
# thread was never slower at any width measured, up to 2048 (docs/design.md, "The fused sweep", point 8).
# Set it to 0 to leave torch's thread count alone.
ONE_THREAD_ROWS = 4


@contextlib.contextmanager
def _one_thread(rows: int, like: torch.Tensor):
    """torch's intra-op threads at 1 for the block (restored however it ends) when a step's operations have at
    most ``ONE_THREAD_ROWS`` rows on CPU; otherwise nothing. ``torch.set_num_threads`` is process-wide: while the
    block runs, another Python thread reads 1 from ``torch.get_num_threads`` and may run its own torch operations
    on one thread, and a thread count another thread sets meanwhile is overwritten when the block ends."""
    threads = torch.get_num_threads()
    if rows > ONE_THREAD_ROWS or threads == 1 or like.device.type != "cpu":
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _frozen(params: list):
    """The policy's parameters with ``requires_grad`` off for the block (restored however it ends), so that
    the graph recorded in it holds no ∂/∂θ branch (∇θ comes after the sweep)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def autodiff(flows, batch: int, horizon: int, memory: str) -> bool:
    """Whether a rollout's fused sweep of ``flows`` is autograd's own backward through the recorded graph
    (:func:`rollout_graph`): one flow with the residuals policy whose ∇θ is not taken after the sweep (above
    ``SMALL_BATCH``, or below ``AFTER_SWEEP_HORIZON`` steps). That graph is native's, with the edge weights, and
    ∇θ comes from its engine call either way, so an ``autograd.Function`` around it would add only its own cost
    (about 0.25 ms, 4%, at batch 256 and H = 10)."""
    return memory == "residuals" and len(flows) == 1 and not _theta_after_sweep(1, batch, horizon, memory)


def rollout_graph(policy, sim, flow: Flow, horizon: int, x0: torch.Tensor) -> Rollout:
    """The one-graph recording of one flow from x0 itself, in the current grad mode; its loss is the graph's
    node (``loss.backward()`` gives θ and, if x0 requires grad, x0 the flow's gradient)."""
    graph = _forward_graph(policy, sim, (flow,), horizon, x0, from_x0=True)
    return graph.rollout._replace(loss=graph.loss)


def _forward_graph(policy, sim, flows, horizon: int, x0: torch.Tensor, from_x0: bool = False) -> Graph:
    """With ``from_x0`` (:func:`rollout_graph`): x0 itself is the start and grad mode is the caller's;
    otherwise a leaf of its own (F copies of x0) and grad mode on."""
    n_flows, batch = len(flows), x0.shape[0]
    weights = _Weights(flows, batch, x0)
    after = _theta_after_sweep(n_flows, batch, horizon, "residuals") and not from_x0
    named = _named(policy)
    with (contextlib.nullcontext() if from_x0 else torch.enable_grad(), _frozen([p for _, p in named] if after else []),
          _one_thread(n_flows * batch, x0)):
        if from_x0:
            leaf = x0
        else:
            leaf = (x0.detach() if n_flows == 1 else x0.detach().repeat(n_flows, *(1,) * (x0.dim() - 1))).requires_grad_()
        x, states, actions, costs = leaf, [], [], []
        for t in range(horizon):
            w_in, w_phys = weights.at(t)
            a = policy(sim.obs(_weighted(x, w_in)))
            if after and a.grad_fn is None:  # depends on neither x_t nor (here) θ: a leaf of its own for μ_t
                a = a.detach().requires_grad_()
            x = sim.step(_weighted(x, w_phys), a)
            costs.append(sim.cost(x, a))
            actions.append(a)
            states.append(x)
        terminal = sim.terminal_cost(x)
        costs_t = torch.stack(costs)
        per_row = costs_t.sum(0) + terminal  # each row's return: Σ_t c_t + c_H
        loss = per_row.mean() if n_flows == 1 else per_row.sum() / batch  # Σ over flows of each flow's loss
    with torch.no_grad():
        if n_flows > 1:  # every flow's rows hold the same values: the rollout is the first flow's (sliced once)
            costs_t, terminal, value = costs_t[:, :batch], terminal[:batch], per_row[:batch].mean()
            visited = torch.cat([x0.unsqueeze(0), torch.stack(states)[:, :batch]])
            rows = torch.stack(actions)[:, :batch]
        else:
            visited, rows, value = torch.stack([x0] + states), torch.stack(actions), loss.detach()
        out = Rollout(visited, rows, costs_t.detach(), terminal.detach(), value)
    return Graph(out, tuple(flows), named, leaf, actions, loss, after)


def _backward_graph(policy, sim, graph: Graph, params: list, cotangent, lam0: bool):
    """One engine call for every flow: (∇θ per flow, λ_0 (F, B, …) or None), each times ``cotangent``."""
    n_flows, batch = len(graph.flows), graph.rollout.states.shape[1]
    after = graph.after  # then the graph was recorded without θ: μ_t are asked for
    inputs = ([graph.x0] if lam0 else []) + (graph.actions if after else params)
    with _one_thread(n_flows * batch, graph.x0):
        grads = torch.autograd.grad(graph.loss, inputs, cotangent, allow_unused=True, materialize_grads=True)
    lam, grads = (grads[0].reshape(n_flows, batch, *grads[0].shape[1:]), grads[1:]) if lam0 else (None, grads)
    if not after:
        return [grads], lam
    if n_flows == 1:
        return _policy_gradients(policy, sim, params, graph.rollout.states[:-1], [grads]), lam
    mus = [[mu[i * batch:(i + 1) * batch] for mu in grads] for i in range(n_flows)]
    return _policy_gradients(policy, sim, params, graph.rollout.states[:-1], mus), lam


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


def forward(policy, sim, horizon: int, x0: torch.Tensor, memory: str, flows=None) -> Tape | Graph:
    """The forward loop (policy parameters are read from ``policy``; none are updated).

    With ``flows`` given and :func:`stacks` true, the one graph of F·B rows; otherwise (and always
    without ``flows``) one small graph per step, whose reverse sweep serves any flows.
    """
    check_memory(memory)
    if flows is not None and stacks(flows, x0.shape[0], memory):
        return _forward_graph(policy, sim, flows, horizon, x0)
    batch = x0.shape[0]
    x, states, actions, costs, steps = x0.detach(), [x0.detach()], [], [], []
    with _one_thread(batch, x0):
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
    return Tape(out, _named(policy), memory, steps, tx)


def _adjoint(step: Step, flow: Flow, lam: torch.Tensor, params: list, cotangent=None):
    """(λ̃_t, μ_t, ∇θ contribution or None) of one flow at one step, from λ̃_{t+1} (the cost weighted by ``cotangent``)."""
    outputs, cotangents = [step.x_next], [lam]
    if step.cost.requires_grad:
        outputs.append(step.cost)
        cotangents.append(torch.ones_like(step.cost) if cotangent is None else cotangent)
    inputs = [step.x_g, step.action] + ([step.x_pi] if flow.k_in else []) + params
    grads = torch.autograd.grad(outputs, inputs, cotangents, retain_graph=True, allow_unused=True, materialize_grads=True)
    lam_x, mu = grads[0], grads[1]
    new = lam_x if flow.k_phys == 1.0 else flow.k_phys * lam_x
    if flow.k_in:
        new = new + (grads[2] if flow.k_in == 1.0 else flow.k_in * grads[2])
    return new, mu, (grads[-len(params):] if params else None)


def reverse(policy, sim, flows: tuple[Flow, ...], tape: Tape | Graph, cotangent=None, lam0: bool = True):
    """The reverse sweep for F single-pass ``flows``: (parameter names, each flow's gradients as a tuple in
    the names' order, λ_0 (F, B, n) or None). :func:`backward` is its stacked form.

    The gradients are those of ``cotangent`` · loss (a scalar tensor; default 1) rather than of the loss, at
    no extra cost; with ``lam0=False`` λ_0 is not returned (nor, where that spares work, computed).
    """
    params = [p for _, p in tape.named]
    if isinstance(tape, Graph):
        if tape.flows != tuple(flows):
            raise ValueError(f"this forward was recorded for the flows {[f.name for f in tape.flows]}, "
                             f"not {[f.name for f in flows]}: pass the same flows to forward and backward")
        acc, lam = _backward_graph(policy, sim, tape, params, cotangent, lam0)
    else:
        acc, lam = _backward_steps(policy, sim, flows, tape, params, cotangent)
    return [k for k, _ in tape.named], acc, (lam if lam0 else None)


def backward(policy, sim, flows: tuple[Flow, ...], tape: Tape | Graph, cotangent=None, lam0: bool = True):
    """The reverse sweep for F single-pass ``flows``: (grads {name: (F, ...)}, λ_0 (F, B, n)); see :func:`reverse`."""
    names, acc, lam = reverse(policy, sim, flows, tape, cotangent, lam0)
    if len(acc) == 1:  # a view, not a copy: at batch 1 every eager operation counts
        return {k: acc[0][j].unsqueeze(0) for j, k in enumerate(names)}, lam
    return {k: torch.stack([a[j] for a in acc]) for j, k in enumerate(names)}, lam


def _backward_steps(policy, sim, flows, tape: Tape, params: list, cotangent=None):
    """The reverse loop over the per-step graphs: (∇θ per flow, λ̃_0 (F, B, …)), each times ``cotangent``."""
    horizon, batch = len(tape.steps), tape.tx.shape[0]
    recompute = tape.memory == "recompute"
    per_step = not _theta_after_sweep(len(flows), batch, horizon, tape.memory)  # ∇θ per step, not after the sweep
    lams = [tape.tx if cotangent is None else cotangent * tape.tx for _ in flows]
    mus = [[None] * horizon for _ in flows]
    acc = [[torch.zeros_like(p) for p in params] for _ in flows]
    with _one_thread(batch, tape.tx):
        for t in range(horizon - 1, -1, -1):
            step = _record(policy, sim, tape.steps[t], batch) if recompute else tape.steps[t]
            for i, flow in enumerate(flows):
                lam, mu, g = _adjoint(step, flow, lams[i], params if per_step else [], cotangent)
                if t > 0 and flow.cut_after(t):
                    lam = torch.zeros_like(lam)  # λ_t = its local term: λ̃_t = 0
                lams[i], mus[i][t] = lam, mu
                if g is not None:
                    torch._foreach_add_(acc[i], list(g))
            tape.steps[t] = None  # release step t's graph as soon as the sweep has passed it
    if not per_step:
        acc = _policy_gradients(policy, sim, params, tape.rollout.states[:-1], mus)
    return acc, torch.stack(lams)


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
    tape = forward(policy, sim, horizon, x0, memory, flows)
    grads, lam0 = backward(policy, sim, flows, tape)
    return tape.rollout, grads, lam0
