"""impl='fused' equals impl='native' for every flow, both frameworks, both memory policies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradstop as gs
from helpers import SIMS, assert_close, gradient, load, to_numpy
from sims import make

FLOWS = ["none", "input", "state", "all", "decay:0.8", "input+truncate:3", "combined", "directional"]
BACKENDS = ["jax", "torch"]
# The torch sweep takes one flow's ∇θ after the sweep at a small batch from this horizon on (below it, autograd's
# own ∇θ through the weighted graph): torch tests of that route run at least this many steps.
AFTER = 16


def _fused_grad(backend, sim, policy, x0, flow, horizon, memory):
    if backend == "jax":
        import jax

        fn = jax.jit(jax.value_and_grad(
            lambda p: gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x0, impl="fused", memory=memory).loss))
        loss, g = fn(policy)
        return float(loss), np.concatenate([np.ravel(w) for w in gs.get_weights(g)])
    policy.zero_grad(set_to_none=True)
    out = gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl="fused", memory=memory)
    out.loss.backward()
    return float(to_numpy(out.loss)), np.concatenate([p.grad.numpy().ravel() for p in policy.parameters()])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("horizon", [*(pytest.param(h, marks=pytest.mark.slow) for h in (1, 2)), 7,
                                     *(pytest.param(h, marks=pytest.mark.slow) for h in (50, 150))])
@pytest.mark.parametrize("sim_name", sorted(SIMS))
def test_fused_equals_native_float64(sim_name, horizon, flow, backend):
    sim, policy, x0 = load(backend, sim_name)
    loss, native = gradient(backend, policy, sim, x0, flow, horizon)
    for memory in ("residuals", "recompute"):
        loss_f, fused = _fused_grad(backend, sim, policy, x0, flow, horizon, memory)
        assert_close(loss_f, loss, what="loss")
        assert_close(fused, native, what=f"{memory} gradient")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", FLOWS)
def test_fused_equals_native_in_a_single_step(backend, flow):
    """H = 1, every flow (the other sims at H = 1 run in the slow tests)."""
    test_fused_equals_native_float64("pointmass", 1, flow, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flow", ["none", "input", "combined"])
def test_fused_equals_native_float32(backend, flow):
    """float32: within 1e-5 of native, relative to the gradient's largest entry."""
    sim, policy, x0 = load(backend, "cartpole", dtype="float32")
    _, native = gradient(backend, policy, sim, x0, flow, 30)
    _, fused = _fused_grad(backend, sim, policy, x0, flow, 30, "residuals")
    if flow == "combined":  # a component whose two signs are decided by rounding may differ: compare the rest
        _, g_none = gradient(backend, policy, sim, x0, "none", 30)
        _, g_input = gradient(backend, policy, sim, x0, "input", 30)
        safe = np.minimum(np.abs(g_none), np.abs(g_input)) > 1e-4 * np.abs(g_input).max()
        native, fused = native[safe], fused[safe]
    assert_close(fused, native, dtype="float32")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dims=st.integers(1, 3), horizon=st.integers(1, 12), flow=st.sampled_from(FLOWS + ["state+decay:0.5", "truncate:2"]),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_fused_equals_native_property_torch(dims, horizon, flow, batch, seed):
    """Random dims, horizons, batches and flows (torch: no compile per example, so many examples are cheap)."""
    import torch

    sim = make("pointmass", backend="torch", dims=dims, drag=0.3)
    policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(5,), dtype=torch.float64, seed=seed)
    x0 = sim.reset(seed, batch, dtype=torch.float64)
    _, native = gradient("torch", policy, sim, x0, flow, horizon)
    _, fused = _fused_grad("torch", sim, policy, x0, flow, horizon, "recompute")
    assert_close(fused, native)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_gives_x0_its_adjoint(backend):
    """For a single flow the fused x0 gradient is λ_0, as native autodiff gives it."""
    sim, policy, x0 = load(backend, "pointmass")
    if backend == "jax":
        import jax

        grads = [jax.grad(lambda x: gs.rollout(policy, sim, stop="input", horizon=6, x0=x, impl=i).loss)(x0) for i in ("native", "fused")]
    else:
        grads = []
        for impl in ("native", "fused"):
            x = x0.clone().requires_grad_(True)
            gs.rollout(policy, sim, stop="input", horizon=6, x0=x, impl=impl).loss.backward()
            grads.append(x.grad)
    assert_close(to_numpy(grads[1]), to_numpy(grads[0]))


def _flat_grad(backend, policy, grad):
    if backend == "jax":
        return np.concatenate([np.ravel(w) for w in gs.jax.get_weights(grad)])
    return np.concatenate([to_numpy(grad[k]).ravel() for k, _ in policy.named_parameters()])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_of_several_flows_in_one_sweep(backend):
    """gs.gradients: each flow equals its own rollout gradient; norms and cosines are those of the vectors."""
    sim, policy, x0 = load(backend, "neural")
    flows = ["none", "input", "combined", "directional", "decay:0.9"]
    results = {impl: gs.gradients(policy, sim, flows=flows, horizon=12, x0=x0, impl=impl) for impl in ("fused", "native")}
    vectors = {}
    for flow in flows:
        loss, expected = gradient(backend, policy, sim, x0, flow, 12)
        for impl, res in results.items():
            got = _flat_grad(backend, policy, res.grads[flow])
            assert_close(got, expected, what=f"{impl} {flow}")
            assert_close(float(to_numpy(res.loss)), loss, what="loss")
            assert_close(float(to_numpy(res.norms[flow])), np.linalg.norm(expected), what="norm")
        vectors[flow] = expected
    assert list(results["fused"].cosine) == [(a, b) for i, a in enumerate(flows) for b in flows[i + 1:]]
    for (a, b), value in results["fused"].cosine.items():
        expected = vectors[a] @ vectors[b] / (np.linalg.norm(vectors[a]) * np.linalg.norm(vectors[b]))
        assert abs(float(to_numpy(value)) - expected) < 1e-10


def test_gradients_rejects_bad_flow_lists():
    sim, policy, x0 = load("torch", "pointmass")
    with pytest.raises(ValueError, match="flows is empty"):
        gs.gradients(policy, sim, flows=[], horizon=3, x0=x0)
    with pytest.raises(ValueError, match="flows names a flow twice"):
        gs.gradients(policy, sim, flows=["input", "input+decay:1"], horizon=3, x0=x0)
    with pytest.raises(ValueError, match="unknown flow part 'nope'"):
        gs.gradients(policy, sim, flows=["nope"], horizon=3, x0=x0)


class _CountingPointMass:
    """A JAX point mass whose state is a pytree with an integer and a boolean leaf, as Brax's mjx
    states are: {'q': (B, 6) float, 'steps': (B,) int32, 'braking': (B,) bool}. The boolean leaf
    changes the physics (extra damping once x > 0), so it must ride along correctly."""

    pytree_state = True
    backend = "jax"
    obs_dim, action_dim = 7, 3

    def __init__(self):
        self.flat = make("pointmass", backend="jax")

    def reset(self, key, batch, dtype=None):
        import jax.numpy as jnp

        q = jnp.asarray(make("pointmass", backend="numpy").reset(0, batch), dtype=dtype or jnp.float64)
        return {"q": q, "steps": jnp.zeros(batch, jnp.int32), "braking": q[:, 0] > 0}

    def step(self, x, a):
        import jax.numpy as jnp

        q = self.flat.step(x["q"], a)
        q = q.at[:, 3:].multiply(jnp.where(x["braking"], 0.9, 1.0)[:, None])
        return {"q": q, "steps": x["steps"] + 1, "braking": q[:, 0] > 0}

    def obs(self, x):
        import jax.numpy as jnp

        return jnp.concatenate([x["q"], 0.1 * x["steps"][:, None].astype(x["q"].dtype)], axis=1)

    def cost(self, x_next, a):
        return self.flat.cost(x_next["q"], a)

    def terminal_cost(self, x):
        return self.flat.terminal_cost(x["q"])


@pytest.mark.parametrize("flow", ["none", *(pytest.param(f, marks=pytest.mark.slow) for f in ("decay:0.8", "input+truncate:3", "combined"))])
def test_fused_equals_native_on_states_with_integer_and_boolean_leaves(flow):
    import jax

    sim = _CountingPointMass()
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(8,), dtype=np.float64)
    for batch in (3, 12):  # both sides of the fused sweep's small-batch path
        x0 = sim.reset(0, batch)

        def loss(p, impl, memory="residuals"):
            return gs.rollout(p, sim, stop=flow, horizon=6, x0=x0, impl=impl, memory=memory).loss

        native = np.concatenate([np.ravel(w) for w in gs.get_weights(jax.grad(loss)(policy, "native"))])
        assert np.abs(native).max() > 0
        for memory in ("residuals", "recompute"):
            g = jax.jit(jax.grad(loss), static_argnums=(1, 2))(policy, "fused", memory)
            assert_close(np.concatenate([np.ravel(w) for w in gs.get_weights(g)]), native, what=f"{memory} b{batch}")

    def loss_of_x0(x0, impl):
        return gs.rollout(policy, sim, stop=flow, horizon=6, x0=x0, impl=impl).loss

    g_native, g_fused = (jax.grad(loss_of_x0, allow_int=True)(x0, impl) for impl in ("native", "fused"))
    assert g_fused["steps"].dtype == jax.dtypes.float0 and g_fused["braking"].dtype == jax.dtypes.float0
    assert_close(g_fused["q"], g_native["q"], what="x0 adjoint")


@pytest.mark.parametrize("batch", [3, 10])  # both sides of SMALL_BATCH: one graph of F·B rows, and one graph per step
def test_torch_fused_both_recordings_equal_native(batch):
    """Several flows in one torch sweep, both ways the forward is recorded; each flow equals its native gradient,
    its λ_0 equals native autodiff's x0 gradient, and the rollout is the one native gives."""
    import torch

    from gradstop.flows import parse_flow
    from gradstop.torch import fused

    sim, policy, x0 = load("torch", "neural", batch=batch)
    names = ["none", "input", "decay:0.8", "input+truncate:3", "state", "truncate:2"]
    flows = tuple(parse_flow(f) for f in names)
    assert fused.stacks(flows, batch, "residuals") == (batch <= 8)
    assert fused.stacks(flows[:1], batch, "residuals") and not fused.stacks(flows, 1, "recompute")
    out, grads, lam0 = fused.sweep(policy, sim, flows, 9, x0)
    with torch.no_grad():
        reference = gs.rollout(policy, sim, horizon=9, x0=x0)
    for field in ("states", "actions", "costs", "terminal", "loss"):
        assert_close(to_numpy(getattr(out, field)), to_numpy(getattr(reference, field)), what=field)
    for i, name in enumerate(names):
        _, expected = gradient("torch", policy, sim, x0, name, 9)
        got = np.concatenate([to_numpy(grads[k][i]).ravel() for k, _ in policy.named_parameters()])
        assert_close(got, expected, what=f"{name} b{batch}")
        x = x0.clone().requires_grad_(True)
        gs.rollout(policy, sim, stop=name, horizon=9, x0=x).loss.backward()
        assert_close(to_numpy(lam0[i]), to_numpy(x.grad), what=f"{name} λ_0 b{batch}")


@pytest.mark.parametrize("horizon", [AFTER - 1, AFTER])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("flow", FLOWS)
def test_torch_fused_single_flow_on_both_sides_of_after_sweep_horizon_equals_native(flow, batch, horizon):
    """At a small batch one flow takes ∇θ from autograd's own engine call below AFTER_SWEEP_HORIZON steps and
    after the sweep from it on (float64): both equal native's ∇θ and x0 gradient, and leave no ``.grad`` on x0 for
    the combining flows (and none or zeros where every path from x0 is cut: ``all``)."""
    sim, policy, x0 = load("torch", "pointmass", batch=batch)
    got = {}
    for impl in ("native", "fused"):
        policy.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        out = gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x, impl=impl)
        out.loss.backward()
        got[impl] = float(out.loss.detach()), np.concatenate([to_numpy(p.grad).ravel() for p in policy.parameters()]), x.grad
    assert_close(got["fused"][0], got["native"][0], what="loss")
    assert_close(got["fused"][1], got["native"][1], what=f"{flow} b{batch} H{horizon} ∇θ")
    swept = gs.gradients(policy, sim, flows=[flow], horizon=horizon, x0=x0).grads[flow]
    assert_close(np.concatenate([to_numpy(swept[k]).ravel() for k, _ in policy.named_parameters()]), got["native"][1],
                 what=f"gs.gradients {flow} b{batch} H{horizon}")
    if got["native"][2] is None:
        assert got["fused"][2] is None or not got["fused"][2].any()
    else:
        assert_close(to_numpy(got["fused"][2]), to_numpy(got["native"][2]), what=f"{flow} b{batch} H{horizon} x0")


def test_torch_edge_weight_is_exact():
    """The per-row edge weight: identity on values (the same tensor's values, not a rounded product), the
    gradient scaled row by row, and exactly 0 in a row of weight 0 even where the incoming gradient is not finite."""
    import torch

    from gradstop.torch.fused import _EdgeWeight

    x = torch.tensor([[1e-300, -2.0], [3.0, float("inf")]], dtype=torch.float64, requires_grad=True)
    k = torch.tensor([[0.5], [0.0]], dtype=torch.float64)
    y = _EdgeWeight.apply(x, k, k == 0)
    assert torch.equal(y.detach(), x.detach())
    (g,) = torch.autograd.grad(y, x, torch.tensor([[2.0, 4.0], [float("nan"), float("inf")]], dtype=torch.float64))
    assert torch.equal(g, torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64))


def test_torch_fused_backward_refuses_other_flows():
    from gradstop.flows import parse_flow
    from gradstop.torch import fused

    sim, policy, x0 = load("torch", "pointmass")
    tape = fused.forward(policy, sim, 3, x0, "residuals", (parse_flow("none"),))
    with pytest.raises(ValueError, match="recorded for the flows \\['none'\\], not \\['input'\\]"):
        fused.backward(policy, sim, (parse_flow("input"),), tape)


@pytest.mark.parametrize("batch", [3, 10])
@pytest.mark.parametrize("flow", ["none", "decay:0.8", "input+truncate:3", "combined"])
def test_torch_fused_backward_of_a_scaled_loss(batch, flow):
    """The sweep is run for the loss's cotangent (here −2.5) rather than scaled after it: parameters and x0 get
    −2.5 × native's gradients, in both recordings, for a single flow and a combining one (a single flow at
    batch 10 is autograd's own backward through the weighted graph: ``fused.autodiff``; at batch 3 the sweep,
    from AFTER steps on)."""
    sim, policy, x0 = load("torch", "neural", batch=batch)
    grads = {}
    for impl in ("native", "fused"):
        policy.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        (-2.5 * gs.rollout(policy, sim, stop=flow, horizon=AFTER, x0=x, impl=impl).loss).backward()
        grads[impl] = [p.grad.clone() for p in policy.parameters()], x.grad
    for got, expected in zip(grads["fused"][0], grads["native"][0]):
        assert_close(to_numpy(got), to_numpy(expected), what=f"{flow} b{batch} ∇θ")
    if flow == "combined":  # defined for parameters only: x0 gets none, in both impls
        assert grads["fused"][1] is None and grads["native"][1] is None
    else:
        assert_close(to_numpy(grads["fused"][1]), to_numpy(grads["native"][1]), what=f"{flow} b{batch} λ_0")


@pytest.mark.parametrize("batch", [3, 10])
def test_torch_fused_reverse_cotangent_and_lam0(batch):
    """``fused.reverse`` with a cotangent c gives c × the gradients and λ_0 of c = 1, and λ_0 only when asked."""
    import torch

    from gradstop.flows import parse_flow
    from gradstop.torch import fused

    sim, policy, x0 = load("torch", "neural", batch=batch)
    flows = (parse_flow("none"), parse_flow("decay:0.8"))
    c = torch.tensor(-0.75, dtype=x0.dtype)
    names, plain, lam = fused.reverse(policy, sim, flows, fused.forward(policy, sim, 6, x0, "residuals", flows))
    names_c, scaled, lam_c = fused.reverse(policy, sim, flows, fused.forward(policy, sim, 6, x0, "residuals", flows), c)
    assert names == names_c == [k for k, _ in policy.named_parameters()]
    for a, b in zip(plain, scaled):
        for u, v in zip(a, b):
            assert_close(to_numpy(v), to_numpy(c * u))
    assert_close(to_numpy(lam_c), to_numpy(c * lam))
    _, _, none = fused.reverse(policy, sim, flows, fused.forward(policy, sim, 6, x0, "residuals", flows), lam0=False)
    assert none is None


@pytest.mark.parametrize("batch", [1, 10])
def test_torch_fused_leaves_requires_grad_as_it_was(batch):
    """At small batch the forward records the graph with the policy's parameters' ``requires_grad`` off; it is
    restored after the forward, also when the forward raises, and a layer the user froze stays frozen and gets
    no gradient while the others get native's."""
    import torch

    sim, policy, x0 = load("torch", "neural", batch=batch)
    frozen = policy.linears[1].weight
    frozen.requires_grad_(False)
    flags = [p.requires_grad for p in policy.parameters()]
    expected = {}
    for impl in ("native", "fused"):
        policy.zero_grad(set_to_none=True)
        gs.rollout(policy, sim, stop="input", horizon=AFTER, x0=x0, impl=impl).loss.backward()
        assert [p.requires_grad for p in policy.parameters()] == flags
        expected[impl] = [None if p.grad is None else p.grad.clone() for p in policy.parameters()]
    assert frozen.grad is None
    for got, want in zip(expected["fused"], expected["native"]):
        assert (got is None) == (want is None)
        if got is not None:
            assert_close(to_numpy(got), to_numpy(want))

    calls = {"n": 0}

    def fail_on_the_third_step(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("policy failed")

    handle = policy.register_forward_pre_hook(fail_on_the_third_step)
    with pytest.raises(RuntimeError, match="policy failed"):
        gs.rollout(policy, sim, stop="none", horizon=AFTER, x0=x0, impl="fused").loss.backward()
    handle.remove()
    assert [p.requires_grad for p in policy.parameters()] == flags
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("batch", [1, 3])
def test_torch_fused_rollout_frees_its_graph_without_the_garbage_collector(batch):
    """A differentiable fused rollout whose loss is dropped without a backward frees its recorded graph at once:
    the autograd node must not hold the loss it returned (a reference cycle only the garbage collector breaks)."""
    import gc
    import weakref

    sim, policy, x0 = load("torch", "neural", batch=batch)
    gc.collect()
    gc.disable()
    try:
        out = gs.rollout(policy, sim, stop="input", horizon=AFTER, x0=x0, impl="fused")
        tape = weakref.ref(out.loss.grad_fn.tape)  # a custom Function's grad_fn is its ctx
        del out
        assert tape() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("batch, horizon", [(10, 4), (10, AFTER), (3, AFTER - 1)])
def test_torch_fused_single_flow_is_autograds_own_backward_where_theta_is_not_taken_after_the_sweep(batch, horizon):
    """One flow above SMALL_BATCH, or at a small batch below AFTER_SWEEP_HORIZON steps: the rollout's loss is the
    recorded graph's node (no autograd.Function), and under no_grad nothing is recorded; several flows, or one
    flow at a small batch from AFTER_SWEEP_HORIZON steps on, keep the sweep."""
    import torch

    from gradstop.flows import parse_flow
    from gradstop.torch import fused

    assert fused.AFTER_SWEEP_HORIZON == AFTER
    decay, none = (parse_flow("decay:0.8"),), (parse_flow("none"),)
    assert fused.autodiff(decay, 10, 4, "residuals") and fused.autodiff(decay, 1, AFTER - 1, "residuals")
    assert not fused.autodiff(none, 8, AFTER, "residuals") and not fused.autodiff(none, 10, 4, "recompute")
    assert not fused.autodiff(none + decay, 10, 4, "residuals")
    sim, policy, x0 = load("torch", "neural", batch=batch)
    out = gs.rollout(policy, sim, stop="decay:0.8", horizon=horizon, x0=x0, impl="fused")
    assert out.loss.requires_grad and not hasattr(out.loss.grad_fn, "tape")
    assert not (out.states.requires_grad or out.actions.requires_grad or out.costs.requires_grad)
    with torch.no_grad():
        quiet = gs.rollout(policy, sim, stop="decay:0.8", horizon=horizon, x0=x0, impl="fused")
    assert not quiet.loss.requires_grad and torch.equal(quiet.loss, out.loss.detach())
    assert hasattr(gs.rollout(policy, sim, stop="input", horizon=AFTER, x0=x0[:3], impl="fused").loss.grad_fn, "tape")
    assert hasattr(gs.rollout(policy, sim, stop="combined", horizon=4, x0=x0[:3], impl="fused").loss.grad_fn, "tape")


@pytest.mark.parametrize("batch", [1, 10])
def test_torch_fused_writes_no_grad_into_the_simulators_tensors(batch):
    """A simulator that reads a tensor requiring grad (here a learnable drag): ``gs.gradients`` writes no
    ``.grad`` anywhere, the policy's included, and a fused rollout's backward gives the policy what native gives."""
    import dataclasses

    import torch

    sim, policy, x0 = load("torch", "pointmass", batch=batch)
    drag = torch.tensor(0.9, dtype=x0.dtype, requires_grad=True)

    @dataclasses.dataclass(frozen=True, eq=False)
    class Dragged(type(sim)):
        def step(self, x, a):
            return super().step(x, a) * drag

    dragged = Dragged(**{f.name: getattr(sim, f.name) for f in dataclasses.fields(sim)})
    gs.gradients(policy, dragged, flows=["none", "input", "combined"], horizon=5, x0=x0)
    assert drag.grad is None and all(p.grad is None for p in policy.parameters())
    grads = {}
    for impl in ("native", "fused"):
        policy.zero_grad(set_to_none=True)
        gs.rollout(policy, dragged, stop="input", horizon=AFTER, x0=x0, impl=impl).loss.backward()
        grads[impl] = [p.grad.clone() for p in policy.parameters()]
    for got, want in zip(grads["fused"], grads["native"]):
        assert_close(to_numpy(got), to_numpy(want))


@pytest.mark.parametrize("impl", ["native", "fused"])
def test_torch_rollout_after_one_under_inference_mode(impl):
    """Constants cached during a rollout under ``torch.inference_mode`` (the simulator's weights, the fused sweep's
    edge columns) are normal tensors: a differentiable rollout afterwards works and gives native's gradient."""
    import torch

    from gradstop.torch import fused

    fused._column.cache_clear()
    sim, policy, x0 = load("torch", "neural", batch=2)  # a fresh simulator: its constants not yet converted
    with torch.inference_mode():
        quiet = gs.rollout(policy, sim, stop="combined", horizon=3, x0=x0, impl=impl)
    _, expected = gradient("torch", policy, sim, x0, "combined", 3)
    loss, got = gradient("torch", policy, sim, x0, "combined", 3, impl=impl)
    assert_close(loss, float(quiet.loss))
    assert_close(got, expected)


@pytest.mark.parametrize("batch, one", [(1, True), (2, True), (3, False)])
def test_torch_fused_small_stacked_steps_run_on_one_thread(batch, one):
    """The sweep's per-step work runs on one intra-op thread where a step has at most ONE_THREAD_ROWS rows (here the
    combined flow's two copies of the batch: 2, 4, 6 rows), and torch's own count is back afterwards, also when the
    policy raises mid-forward."""
    import torch

    from gradstop.torch import fused

    assert fused.ONE_THREAD_ROWS == 4
    sim, policy, x0 = load("torch", "neural", batch=batch)
    seen = []
    handle = policy.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = gs.rollout(policy, sim, stop="combined", horizon=3, x0=x0, impl="fused")
        assert torch.get_num_threads() == 2
        out.loss.backward()
        assert torch.get_num_threads() == 2
        assert seen[:3] == [1 if one else 2] * 3  # the forward's three steps (then ∇θ's pass, on torch's count)
        handle.remove()
        handle = policy.register_forward_pre_hook(lambda module, args: (_ for _ in ()).throw(RuntimeError("policy failed")))
        with pytest.raises(RuntimeError, match="policy failed"):
            gs.rollout(policy, sim, stop="combined", horizon=3, x0=x0, impl="fused")
        assert torch.get_num_threads() == 2
    finally:
        handle.remove()
        torch.set_num_threads(threads)
