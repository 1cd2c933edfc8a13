"""Time and peak memory of one gradient: framework × impl × flow × horizon × sim × batch.

    pytest benchmarks --benchmark-json out.json          # default grid (minutes; see conftest.py)
    pytest benchmarks --full --benchmark-json out.json   # the whole grid (hours: see docs/benchmarks.md)
    pytest benchmarks --quick --benchmark-disable        # smoke test (CI)

Sims: ``neural`` (state 12, control 6, hidden 128: the published efficiency benchmark's shape),
``cartpole`` (one pole, swing-up), ``pointmass`` (2-D) and ``brax`` (Brax inverted_pendulum on the
spring pipeline; JAX only). Policy: MLP obs→128→128→action, float32, the same weights in both
frameworks. ``impl``: ``native`` (the framework's autodiff), ``fused`` (the fused sweep, keeping
residuals) and ``fused-recompute`` (memory="recompute"); for torch also ``native-compile`` and
``fused-compile``, the fast path ``compile=True`` (``gradstop.torch.compiled``: native runs one
compiled sweep per component flow, fused one for all). ``flow`` ``none+input`` is the pair from
``gs.gradients`` (native: two passes; fused: one sweep). ``test_torch_unrolled`` adds the row
``native-unrolled-compile`` (``--full`` only): the native torch loss under a plain ``torch.compile``,
which unrolls the loop (about a minute of compile at H = 10, minutes at H = 150). Compile times go
into ``extra_info['compile_s']``; problems are shared across horizons, so a compiled torch case at
a second horizon reuses the compiled loops (``extra_info['recompiled']`` says whether it did not).

Timing: JAX jitted with ``block_until_ready`` (compile time in ``extra_info['compile_s']``);
torch eager or compiled as the impl says, on ``--device`` (cpu, or cuda where torch sees a GPU). Peak memory of one gradient goes into ``extra_info['memory_bytes']``, measured by
``extra_info['memory_method']``: for JAX XLA's compiled ``memory_analysis().temp_size_in_bytes``;
for torch the peak of the profiler's memory timeline (``torch.profiler`` with
``profile_memory=True``: the running sum of its allocation records). Tests never assert on time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings

import numpy as np
import pytest

import gradstop as gs
from gradstop.bench.problem import problem

HORIZONS = [1, 10, 25, 50, 100, 150]
BATCHES = [1, 256]
FLOWS = ["none", "input", "combined", "none+input"]
IMPLS = ["native", "fused", "fused-recompute"]
TORCH_IMPLS = IMPLS + ["native-compile", "fused-compile"]
SIMS = {"neural": ("neural", {}), "cartpole": ("cartpole", {"poles": 1}), "pointmass": ("pointmass", {}),
        "brax": ("brax:inverted_pendulum", {"pipeline": "spring"})}


def grid(frameworks_sims, impls=IMPLS):
    """The benchmark grid over the given sims (shared by both frameworks' tests)."""
    def decorate(test):
        for mark in (pytest.mark.parametrize("impl", impls),
                     pytest.mark.parametrize("flow", FLOWS),
                     pytest.mark.parametrize("horizon", HORIZONS, ids=[f"H{h}" for h in HORIZONS]),
                     pytest.mark.parametrize("batch", BATCHES, ids=[f"b{b}" for b in BATCHES]),
                     pytest.mark.parametrize("sim_name", frameworks_sims)):
            test = mark(test)
        return test
    return decorate


def _split(impl):
    """(impl, memory, compile) of a grid impl name."""
    if impl == "fused-recompute":
        return "fused", "recompute", False
    if impl.endswith("-compile"):
        return impl.split("-")[0], "residuals", True
    return impl, "residuals", False


@functools.lru_cache(maxsize=None)
def _problem(backend, sim_name, batch, device="cpu"):
    """One problem per (backend, sim, batch, device), shared by every horizon and impl."""
    name, params = SIMS[sim_name]
    sim, policy, x0 = problem(backend, name, batch, **params)
    if backend == "torch" and device != "cpu":
        policy, x0 = policy.to(device), x0.to(device)
    return sim, policy, x0


def _torch_device(request):
    import torch

    device = request.config.getoption("--device")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda: torch sees no GPU here")
    return device


def _sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _info(benchmark, **info):
    benchmark.extra_info.update(info)


@grid(list(SIMS))
def test_jax(benchmark, sim_name, batch, horizon, flow, impl):
    import jax

    sim, policy, x0 = _problem("jax", sim_name, batch)
    impl_, memory, _ = _split(impl)
    if flow == "none+input":
        fn = jax.jit(lambda p, x0: gs.gradients(p, sim, flows=["none", "input"], horizon=horizon, x0=x0,
                                                impl=impl_, memory=memory).grads)
    else:
        fn = jax.jit(jax.grad(lambda p, x0: gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x0, impl=impl_,
                                                       memory=memory).loss))
    start = time.perf_counter()
    compiled = fn.lower(policy, x0).compile()
    jax.block_until_ready(compiled(policy, x0))
    _info(benchmark, framework="jax", sim=sim_name, impl=impl, flow=flow, horizon=horizon, batch=batch,
          compile_s=time.perf_counter() - start, memory_bytes=compiled.memory_analysis().temp_size_in_bytes,
          memory_method="XLA compiled memory_analysis().temp_size_in_bytes")
    benchmark(lambda: jax.block_until_ready(compiled(policy, x0)))


def _torch_peak_bytes(fn) -> int:
    """Peak CPU memory allocated during ``fn()``, from the torch profiler's allocation records.

    ``torch.profiler`` with ``profile_memory=True`` attributes every allocation and free to the
    operator that made it (``self_cpu_memory_usage``, ``[memory]`` events outside operators); in
    start-time order their running sum is the live memory over time, and its maximum the peak.
    (``export_memory_timeline`` gives the same peak for these cases but is deprecated and takes
    minutes on long rollouts of many small operations.)
    """
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings(), contextlib.redirect_stderr(open(os.devnull, "w")):
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events())
    return int(np.max(np.cumsum([delta for _, delta in events]), initial=0))


@grid([s for s in SIMS if s != "brax"], TORCH_IMPLS)
def test_torch(benchmark, request, sim_name, batch, horizon, flow, impl):
    from gradstop.torch import compiled

    device = _torch_device(request)
    sim, policy, x0 = _problem("torch", sim_name, batch, device)
    impl_, memory, fast = _split(impl)

    def one_gradient():
        if flow == "none+input":
            grads = gs.gradients(policy, sim, flows=["none", "input"], horizon=horizon, x0=x0, impl=impl_,
                                 memory=memory, compile=fast).grads
        else:
            policy.zero_grad(set_to_none=True)
            gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl=impl_, memory=memory,
                       compile=fast).loss.backward()
            grads = None
        _sync(device)
        return grads

    start, graphs = time.perf_counter(), compiled.compile_count()
    one_gradient()  # warm-up (and the compile of the compiled path)
    info = {"compile_s": time.perf_counter() - start, "recompiled": compiled.compile_count() > graphs} if fast else {}
    _info(benchmark, framework="torch", sim=sim_name, impl=impl, flow=flow, horizon=horizon, batch=batch,
          device=device, memory_bytes=_torch_peak_bytes(one_gradient) if device == "cpu" else None,
          memory_method="torch.profiler (profile_memory=True): peak of the running sum of allocations", **info)
    benchmark(one_gradient)


@pytest.mark.parametrize("sim_name", ["neural"])
@pytest.mark.parametrize("batch", BATCHES, ids=[f"b{b}" for b in BATCHES])
@pytest.mark.parametrize("horizon", HORIZONS, ids=[f"H{h}" for h in HORIZONS])
@pytest.mark.parametrize("flow", ["none", "input", "none+input"])
@pytest.mark.parametrize("impl", ["native-unrolled-compile"])
def test_torch_unrolled(benchmark, sim_name, batch, horizon, flow, impl):
    import torch

    torch._dynamo.reset()  # fresh caches: compile time measured from scratch, and no recompile limit reached
    name, params = SIMS[sim_name]
    sim, policy, x0 = problem("torch", name, batch, **params)
    stops = ["none", "input"] if flow == "none+input" else [flow]
    # one compiled loss per flow: the flow string is a constant of the traced graph
    losses = [torch.compile(lambda x, stop=stop: gs.rollout(policy, sim, stop=stop, horizon=horizon, x0=x).loss)
              for stop in stops]
    params = list(policy.parameters())

    def one_gradient():
        return [torch.autograd.grad(loss(x0), params) for loss in losses]

    start = time.perf_counter()
    one_gradient()  # compiles forward and backward (AOTAutograd)
    _info(benchmark, framework="torch", sim=sim_name, impl=impl, flow=flow, horizon=horizon, batch=batch,
          compile_s=time.perf_counter() - start, memory_bytes=_torch_peak_bytes(one_gradient),
          memory_method="torch.profiler (profile_memory=True): peak of the running sum of allocations")
    benchmark(one_gradient)
