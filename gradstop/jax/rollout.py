"""The rollout in JAX: ``lax.scan`` over the horizon, with two implementations of every flow.

``impl="native"``: JAX's own autodiff differentiates the scan; a flow's edge weights k_phys and
k_in are applied with :func:`scale_gradient`, truncation with a ``stop_gradient`` on the carried
state, and the combining flows take two gradients (XLA shares their forward when jitted).

``impl="fused"``: a ``jax.custom_vjp`` whose backward is the fused sweep of ``gradstop.jax.fused``
(one forward scan, one reverse scan of per-step VJPs carrying every component flow's adjoint).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from gradstop import _checks as front
from gradstop.flows import Flow, combine_gradients, parse_flow
from gradstop.jax import fused, mixing
from gradstop.rollout import Rollout

__all__ = ["rollout", "scale_gradient"]


def scale_gradient(tree, k: float):
    """Identity on values; multiplies the gradient flowing back through ``tree`` by ``k``
    (integer and boolean leaves, which carry no gradient, pass through unchanged)."""
    if k == 1.0:
        return tree
    if k == 0.0:
        return jax.lax.stop_gradient(tree)
    return jax.tree.map(lambda v: k * v + (1.0 - k) * jax.lax.stop_gradient(v) if eqx.is_inexact_array(v) else v, tree)


def rollout(policy, sim, *, stop="none", horizon: int, x0=None, key=None, batch: int | None = None, impl: str = "native",
            memory: str = "residuals", noise=None) -> Rollout:
    """JAX twin of :func:`gradstop.rollout` (same arguments); jit-compatible."""
    flow = parse_flow(stop)
    front.check_horizon(horizon)
    front.check_impl(impl, memory)
    front.check_framework(policy, sim)
    front.check_noise_wanted(noise, flow)
    with front.explained(sim, horizon, lambda: _footprint(policy, sim, x0, batch), front.kept(impl, memory)):
        x0 = _initial_states(policy, sim, x0, key, batch)

        def first_order(policy, sim, flow, x0):
            sim, flow = front.with_surrogate(sim, flow)
            return _first_order(policy, sim, flow, horizon, x0, impl, memory)

        if flow.mixed:
            sim, flow = front.with_surrogate(sim, flow)  # the noise wraps the surrogate, not the other way
            noise = _mixing_noise(policy, sim, flow, horizon, x0, key, noise)
            return mixing.rollout(policy, sim, flow, horizon, x0, noise, first_order)
        return first_order(policy, sim, flow, x0)


def _first_order(policy, sim, flow: Flow, horizon: int, x0, impl: str, memory: str) -> Rollout:
    if impl == "fused":
        return _fused(policy, sim, flow, horizon, x0, memory)
    if flow.combining:
        return _combining(policy, sim, flow, horizon, x0)
    return _single(policy, sim, flow, horizon, x0)


def _mixing_noise(policy, sim, flow: Flow, horizon: int, x0, key, noise):
    """The standard-normal draws of a mixing flow: as given (checked) or drawn from ``key``."""
    batch = jax.tree.leaves(x0)[0].shape[0]
    shape = (2, flow.mixing.samples, horizon, batch, sim.action_dim)
    if noise is None:
        if key is None:
            raise ValueError(f"flow {flow.name!r} adds Gaussian noise to the actions and needs a key to draw it: pass "
                             "key= (a jax.random key or an int seed), or the draws themselves as noise= of shape "
                             f"{shape} (standard normal)")
        front.check_key(key)
        key = jax.random.PRNGKey(key) if isinstance(key, int) else key
        return mixing.draw_noise(flow, horizon, batch, sim.action_dim, jax.random.fold_in(key, 1),
                                 _param_dtype(policy) or jnp.zeros(()).dtype)
    noise = jnp.asarray(noise)
    front.check_noise_shape(tuple(noise.shape), shape, flow)
    return noise


def _initial_states(policy, sim, x0, key, batch):
    """x0 as given (checked) or sampled with ``key``; also checks the policy's action size."""
    dtype = _param_dtype(policy)
    if x0 is None:
        front.check_key(key, optional=True)
        x0 = sim.reset(key, front.check_batch(batch, None), dtype=dtype)
    elif getattr(sim, "pytree_state", False):
        front.check_pytree_x0(x0, jax.eval_shape(lambda: sim.reset(0, 1)), jax.tree.structure, jax.tree.leaves)
        front.check_batch(batch, jax.tree.leaves(x0)[0].shape[0])
    else:
        x0 = jnp.asarray(x0)
        front.check_x0_shape(x0.shape, sim)
        front.check_x0_dtype(x0.dtype, dtype, jnp.issubdtype(x0.dtype, jnp.floating))
        front.check_batch(batch, x0.shape[0])
    action = jax.eval_shape(policy, jax.eval_shape(sim.obs, x0))
    front.check_action_shape(action.shape, sim)
    return x0


def _footprint(policy, sim, x0, batch) -> tuple[int, int, int, int]:
    """(batch, state values, action values, bytes per value) of a rollout, for the out-of-memory estimate."""
    itemsize = jnp.dtype(_param_dtype(policy) or jnp.zeros(()).dtype).itemsize
    if x0 is None:
        return batch or 1, getattr(sim, "state_dim", 0), sim.action_dim, itemsize
    leaves = jax.tree.leaves(x0)
    return leaves[0].shape[0], sum(int(np.prod(v.shape[1:])) for v in leaves), sim.action_dim, itemsize


def _single(policy, sim, flow: Flow, horizon: int, x0) -> Rollout:
    def step(x, t):
        a = policy(sim.obs(scale_gradient(x, flow.k_in)))
        x_next = sim.step(scale_gradient(x, flow.k_phys), a)
        cost = sim.cost(x_next, a)
        carry = x_next
        if flow.truncate is not None:  # reset λ_{t+1} to its local term: x_{t+1} forgets the future
            cut = (t + 1) % flow.truncate == 0
            carry = jax.tree.map(lambda v: jnp.where(cut, jax.lax.stop_gradient(v), v), x_next)
        return carry, (x_next, a, cost)

    _, (xs, actions, costs) = jax.lax.scan(step, x0, jnp.arange(horizon))
    x_final = jax.tree.map(lambda v: v[-1], xs)  # x_H as computed, before any truncation cut
    terminal = sim.terminal_cost(x_final)
    states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), x0, xs)
    loss = jnp.mean(costs.sum(0) + terminal)
    return Rollout(states, actions, costs, terminal, loss)


def _combining(policy, sim, flow: Flow, horizon: int, x0) -> Rollout:
    """Loss whose gradient is the combination of the ``none`` and ``input`` gradients.

    Both gradients are taken here (two reverse passes), combined per component, and attached
    with the surrogate L + ⟨sg(g), θ − sg(θ)⟩, whose value is L and whose gradient is g.
    """
    params, static = eqx.partition(policy, eqx.is_inexact_array)

    def loss_of(p, component):
        out = _single(eqx.combine(p, static), sim, component, horizon, x0)
        return out.loss, out

    results = [jax.grad(loss_of, has_aux=True)(params, f) for f in flow.components()]
    (g_none, out), (g_input, _) = results
    g = jax.tree.map(lambda a, b: combine_gradients(flow.base, a, b, jnp), g_none, g_input)
    g = jax.lax.stop_gradient(g)
    out = jax.lax.stop_gradient(out)
    attach = sum(jnp.vdot(gi, p - jax.lax.stop_gradient(p)) for gi, p in zip(jax.tree.leaves(g), jax.tree.leaves(params)))
    return out._replace(loss=out.loss + attach)


def _fused(policy, sim, flow: Flow, horizon: int, x0, memory: str) -> Rollout:
    """Loss with a custom VJP: the fused sweep over the flow's components, combined if need be.

    Only ``loss`` carries gradient: the policy parameters get the flow's direction, and x0 gets λ_0
    (zero for the combining flows, whose direction is defined for parameters only).
    """
    params, static = eqx.partition(policy, eqx.is_inexact_array)
    components = flow.components()

    @jax.custom_vjp
    def run(params, x0):
        out = _single(eqx.combine(params, static), sim, Flow(), horizon, x0)
        return jax.lax.stop_gradient(out)

    def run_fwd(params, x0):
        out, grads, lam0 = fused.sweep(params, static, sim, components, horizon, x0, memory)
        return out, (grads, lam0)

    def run_bwd(residuals, ct):
        grads, lam0 = residuals
        if flow.combining:
            g = jax.tree.map(lambda v: combine_gradients(flow.base, v[0], v[1], jnp), grads)
            g_x0 = jax.tree.map(lambda v: jnp.zeros_like(v[0]), lam0)
        else:
            g, g_x0 = jax.tree.map(lambda v: v[0], grads), jax.tree.map(lambda v: v[0], lam0)
        # integer and boolean leaves of x0 (lam0 holds None there) take float0 zero cotangents
        no_grad = jax.tree.map(lambda v: np.zeros(np.shape(v), jax.dtypes.float0),
                               eqx.filter(x0, eqx.is_inexact_array, inverse=True))
        return (jax.tree.map(lambda v: ct.loss * v, g),
                eqx.combine(jax.tree.map(lambda v: ct.loss * v, g_x0), no_grad))

    run.defvjp(run_fwd, run_bwd)
    out = run(params, x0)
    return out._replace(states=jax.lax.stop_gradient(out.states), actions=jax.lax.stop_gradient(out.actions),
                        costs=jax.lax.stop_gradient(out.costs), terminal=jax.lax.stop_gradient(out.terminal))


def _param_dtype(policy):
    leaves = [x for x in jax.tree.leaves(policy) if eqx.is_inexact_array(x)]
    return leaves[0].dtype if leaves else None
