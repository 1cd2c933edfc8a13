"""Input checks shared by both backends: each failure names the problem and the fix."""

from __future__ import annotations

import contextlib
import numbers


def check_horizon(horizon) -> None:
    if isinstance(horizon, bool) or not isinstance(horizon, int):
        raise ValueError(f"horizon must be a Python int ≥ 1 (a static length), got {horizon!r} of type {type(horizon).__name__}")
    if horizon < 1:
        raise ValueError(f"horizon must be ≥ 1, got {horizon}")


IMPLS = ("native", "fused")
MEMORY_POLICIES = ("residuals", "recompute")

# The fused sweep's one tuning constant, shared by both backends. At batch ≤ SMALL_BATCH a step's
# arrays are so small that per-operation overhead dominates on CPU: the sweep then leaves ∇θ to one
# large VJP over all H·B visited states after the sweep (JAX also packs each step's record into
# one buffer). Above it arithmetic dominates, and ∇θ is accumulated step by step instead, which
# spares the policy's recomputed forward. Measured on the neural benchmark: docs/benchmarks.md.
SMALL_BATCH = 8


def check_impl(impl, memory) -> None:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    check_memory(memory)


def check_compile(compile, backend: str) -> None:
    """``compile=`` is a bool, and only the PyTorch backend reads it (JAX is compiled by ``jax.jit``)."""
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False, got {compile!r}")
    if compile and backend != "torch":
        raise ValueError(f"compile=True is the PyTorch fast path; this {backend} simulator is compiled by wrapping "
                         "the call in jax.jit (drop compile=True)")


def check_memory(memory) -> None:
    if memory not in MEMORY_POLICIES:
        raise ValueError(f"unknown memory policy {memory!r}; choose one of {MEMORY_POLICIES} (impl='fused' reads it)")


def framework_of(obj) -> str | None:
    """'torch' or 'jax' if ``obj``'s class comes from that framework's ecosystem, else None."""
    modules = {c.__module__.split(".")[0] for c in type(obj).__mro__}
    if "torch" in modules:
        return "torch"
    if modules & {"equinox", "flax", "jax", "jaxlib"}:
        return "jax"
    return None


def check_framework(policy, sim) -> None:
    backend = getattr(sim, "backend", None)
    if backend is None:
        raise TypeError(f"sim must be a simulator from sims.make(...), got {type(sim).__name__}")
    if backend not in ("jax", "torch"):
        raise ValueError(
            f"a {backend} sim simulates forward only and cannot be differentiated: "
            "build it with sims.make(..., backend='jax') or backend='torch'"
        )
    found = framework_of(policy)
    if found is not None and found != backend:
        build = "gs.jax.mlp(key, sim.obs_dim, sim.action_dim)" if backend == "jax" else "gs.torch.mlp(sim.obs_dim, sim.action_dim)"
        raise TypeError(
            f"the policy is a {found} model but the sim computes in {backend}: build the policy with "
            f"{build}, or the sim with sims.make(..., backend={found!r}); gs.copy_weights moves weights across"
        )
    if not callable(policy):
        raise TypeError(f"the policy must be callable (obs -> action), got {type(policy).__name__}")
    in_features = getattr(policy, "in_features", None)
    noise = getattr(policy, "noise_features", 0)  # a Gaussian policy also takes its noise ε after the observation
    if isinstance(in_features, int) and sim.obs_dim not in (in_features, in_features + noise):
        raise ValueError(
            f"the policy takes {in_features} inputs but {sim.name} observations have {sim.obs_dim}: "
            f"build it with obs_dim=sim.obs_dim ({sim.obs_dim})"
        )


def check_action_shape(shape, sim) -> None:
    """The policy's output must be (B, sim.action_dim)."""
    if len(shape) < 1 or shape[-1] != sim.action_dim:
        raise ValueError(
            f"the policy outputs actions of shape {tuple(shape)} but {sim.name} takes {sim.action_dim} "
            f"action value(s) per state: build the policy with action_dim=sim.action_dim ({sim.action_dim})"
        )


def check_x0_shape(shape, sim) -> None:
    if len(shape) != 2 or shape[-1] != sim.state_dim:
        raise ValueError(
            f"x0 must have shape (batch, {sim.state_dim}) for {sim.name}, got {tuple(shape)}; "
            f"use sim.reset(key, batch) for valid initial states (a single state: x0[None])"
        )
    check_x0_size(shape[0])


def check_x0_size(size: int) -> None:
    """A rollout needs at least one initial state: the mean over an empty batch is NaN."""
    if size == 0:
        raise ValueError("x0 holds 0 states, and the loss of an empty batch is NaN: pass at least one initial state "
                         "(shape (B, ...) with B ≥ 1), or key= and batch= to sample them")


def check_batch(batch, x0_size: int | None) -> int:
    """The batch size: ``batch`` (default 1) when states are sampled; with an x0 of ``x0_size`` states, x0's own,
    and ``batch`` may only repeat it."""
    if x0_size is None:
        return 1 if batch is None else batch
    if batch is not None and batch != x0_size:
        raise ValueError(f"batch={batch!r} but x0 holds {x0_size} states: x0 sets the batch, so drop batch= "
                         f"or pass x0 with {batch} states")
    return x0_size


def check_key(key, what: str = "key", optional: bool = False) -> None:
    """A JAX PRNG key argument: an int seed or a ``jax.random`` key (checked here without importing JAX). With
    ``optional``, None passes too (a simulator's ``reset`` then says whether it needs a key)."""
    if key is None and optional:
        return
    is_seed = isinstance(key, numbers.Integral) and not isinstance(key, bool)
    dtype = str(getattr(key, "dtype", ""))
    if not (is_seed or dtype.startswith("key<") or (dtype == "uint32" and getattr(key, "shape", ())[-1:] == (2,))):
        raise TypeError(f"{what} must be an int seed or a jax.random key (jax.random.key(0)), got "
                        f"{type(key).__name__} {key!r}")


def check_x0_dtype(x0_dtype, policy_dtype, is_floating: bool) -> None:
    if not is_floating:
        raise TypeError(f"x0 must be a floating-point array, got dtype {x0_dtype}; cast it to the policy's dtype {policy_dtype}")
    if policy_dtype is not None and x0_dtype != policy_dtype:
        raise TypeError(
            f"x0 has dtype {x0_dtype} but the policy's parameters are {policy_dtype}: cast x0 to {policy_dtype}, "
            "or build the policy with dtype= matching x0"
        )


def check_pytree_x0(x0, example, structure, leaves) -> None:
    """x0 of a pytree-state sim: the structure of ``sim.reset`` and one batch size on every leaf."""
    if structure(x0) != structure(example):
        raise ValueError("x0 does not have the structure of this sim's states: pass a state from sim.reset(key, batch) "
                         "or a rollout's states (sliced at one time step)")
    sizes = {getattr(v, "shape", (None,))[:1] for v in leaves(x0)}
    size = sizes.pop() if len(sizes) == 1 else (None,)
    if None in size:
        raise ValueError("x0's leaves must share one leading batch axis (B, ...), as sim.reset(key, B) returns")
    if size:
        check_x0_size(size[0])


# What a rollout calls on a simulator; ``sims.base.Sim`` provides all of them (terminal_cost as zero).
PROTOCOL_METHODS = ("step", "obs", "cost", "terminal_cost", "reset")
PROTOCOL_ATTRIBUTES = ("backend", "obs_dim", "action_dim")


def check_protocol(sim, needs_reset: bool = True) -> None:
    """The simulator protocol (docs/simulators.md): name the first method or attribute a user's simulator lacks
    (``reset`` only if ``needs_reset``: a caller that passes its own x0 never draws initial states)."""
    for name in PROTOCOL_ATTRIBUTES + PROTOCOL_METHODS:
        if name == "reset" and not needs_reset:
            continue
        value = getattr(sim, name, None)
        if value is None:
            what = "method" if name in PROTOCOL_METHODS else "attribute"
            hint = (" (a task without a terminal cost returns zeros; subclassing sims.base.Sim provides that)"
                    if name == "terminal_cost" else "")
            raise TypeError(f"{type(sim).__name__} does not follow the simulator protocol: it has no {what} {name!r}{hint}; "
                            f"a simulator needs {', '.join(PROTOCOL_ATTRIBUTES)} and {', '.join(m + '()' for m in PROTOCOL_METHODS)}")
        if name in PROTOCOL_METHODS and not callable(value):
            raise TypeError(f"{type(sim).__name__}.{name} must be a method, got {type(value).__name__}")
    if not getattr(sim, "pytree_state", False) and getattr(sim, "state_dim", None) is None:
        raise TypeError(f"{type(sim).__name__} does not follow the simulator protocol: it has no attribute 'state_dim' "
                        "(the length of a flat state vector)")


class OutOfMemory(MemoryError):
    """A rollout's arrays do not fit in memory; the message estimates what its reverse sweep keeps, and the fixes."""


def residual_bytes(horizon: int, batch: int, state: int, action: int, itemsize: int) -> int:
    """What a reverse sweep keeps at the least, whatever the memory policy: every step's state and action,
    horizon × batch × (state + action) values of ``itemsize`` bytes (``memory='residuals'`` keeps each step's
    intermediate values of the simulator and the policy on top)."""
    return horizon * batch * (state + action) * itemsize


def is_out_of_memory(err: BaseException) -> bool:
    """The frameworks' allocation failures: JAX's RESOURCE_EXHAUSTED, torch.OutOfMemoryError, torch's CPU allocator."""
    if isinstance(err, OutOfMemory):
        return False
    text = str(err)
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or (isinstance(err, RuntimeError) and any(s in text for s in ("RESOURCE_EXHAUSTED", "can't allocate memory",
                                                                          "not enough memory", "out of memory"))))


def kept(impl: str, memory: str, compile: bool = False) -> str:
    """What a rollout keeps for its reverse sweep: 'recompute' (states and actions only) or 'residuals'."""
    return "recompute" if compile or (impl == "fused" and memory == "recompute") else "residuals"


def out_of_memory(horizon: int, batch: int, state: int, action: int, itemsize: int, memory: str) -> OutOfMemory:
    need = residual_bytes(horizon, batch, state, action, itemsize)
    estimate = (f"its reverse sweep keeps at least {_size(need)}: horizon {horizon} × batch {batch} × "
                f"(state {state} + action {action} values) × {itemsize} bytes, for the states and actions alone")
    if memory == "recompute":
        return OutOfMemory(f"out of memory in a rollout: {estimate}; use a smaller batch or a shorter horizon")
    return OutOfMemory(f"out of memory in a rollout: {estimate}, and memory='residuals' keeps each step's "
                       "intermediate values on top; use impl='fused', memory='recompute' (CLI: --impl fused --memory "
                       "recompute), which keeps only those, a smaller batch or a shorter horizon")


def _size(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps the number ≥ 1."""
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n >= 1024 ** power:
            return f"{n / 1024 ** power:.3g} {unit}"
    return f"{n} B"


def not_traceable(err: BaseException, sim) -> TypeError:
    """NumPy called on a traced JAX array, inside one of ``sim``'s methods (named when the traceback shows it)."""
    method = next((tb.tb_frame.f_code.co_name for tb in reversed(list(_frames(err.__traceback__)))
                   if tb.tb_frame.f_locals.get("self") is sim), None)
    where = f"{type(sim).__name__}.{method}" if method else f"a method of {type(sim).__name__} (step, obs or cost)"
    return TypeError(f"{where} is not traceable by JAX: it turns a traced array into a NumPy array (a NumPy function "
                     "such as np.sin applied to a state or an action); compute with the array namespace the simulator "
                     "is given, self.xp (jax.numpy), instead of numpy")


def _frames(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


@contextlib.contextmanager
def explained(sim, horizon: int, footprint=None, memory: str = "residuals"):
    """Re-raise the framework's out-of-memory and tracing errors raised inside as gradstop's own.

    ``footprint()`` returns (batch, state values, action values, bytes per value), for the memory estimate; it is
    called only on an out-of-memory error.
    """
    try:
        yield
    except Exception as err:
        if footprint is not None and is_out_of_memory(err):
            raise out_of_memory(horizon, *footprint(), memory) from err
        if type(err).__name__ == "TracerArrayConversionError":
            raise not_traceable(err, sim) from err
        raise


def check_noise_wanted(noise, flow) -> None:
    """``noise=`` is given only with a zeroth-/α-order flow, the only ones that read it."""
    if noise is not None and not flow.mixed:
        raise ValueError(f"noise= is read only by the zeroth-/α-order flows (zero, alpha:α, alpha:auto), not by "
                         f"{flow.name!r}: drop it, or choose one of those flows")


def check_noise_shape(shape: tuple, expected: tuple, flow) -> None:
    """The ``noise=`` draws of a zeroth-/α-order flow: (2, N, H, B, action_dim)."""
    if tuple(shape) != tuple(expected):
        raise ValueError(f"noise has shape {tuple(shape)}, but flow {flow.name!r} over this horizon and batch reads "
                         f"{tuple(expected)}: (2 estimators, N = samples:{flow.mixing.samples}, H, B, action_dim) standard-"
                         "normal draws; pass that shape, or omit noise= to draw it from key")


def with_surrogate(sim, flow):
    """(sim, flow) with a ``surrogate:NAME`` part resolved: ``sims.surrogate.Surrogate(sim, sims.make(NAME))`` and the
    flow without it; unchanged for any other flow."""
    name = getattr(flow, "surrogate", None)
    if name is None:
        return sim, flow
    import dataclasses

    from sims.surrogate import Surrogate, build_model

    try:
        model = build_model(name, sim.backend)
    except (ValueError, ImportError, AttributeError, TypeError) as err:
        raise ValueError(f"flow {flow.name!r}: the surrogate {name!r} cannot be built ({err}); name a simulator that "
                         "sims.make builds with its defaults, e.g. one you give to sims.register with the parameters it needs") from err
    return Surrogate(sim, model), dataclasses.replace(flow, surrogate=None)
