"""The zeroth- and α-order flows in PyTorch (``zero``, ``alpha:α``, ``alpha:auto``; see ``gradstop.mixing``).

The same estimators as ``gradstop.jax.mixing``: a noise-free rollout (the loss's value and V_0), M = B·N
noisy rollouts without a graph (ĝ0's coefficients and observations), M more through the first-order
flow in the requested implementation (ĝ1). A fixed α attaches α·L1 + (1 − α)·S0 (one backward pass
gives ĝα). ``alpha:auto`` needs the per-sample gradients behind σ0² and σ1²: it takes them with
``torch.func.vmap`` of ``torch.func.grad`` (one batched backward pass for ĝ0's score terms, and one
for ĝ1 where the first-order flow is native), and one sample at a time otherwise (M policy
backward passes for ĝ0, M rollout backward passes of batch 1 for ĝ1): for a fused or compiled
first-order flow, and, with a warning naming the error, for a policy or simulator that
torch.func cannot transform (e.g. a step written as a classic ``torch.autograd.Function``). Both
give the same numbers. It attaches ⟨ĝα, θ − θ.detach()⟩ to the loss.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from gradstop import mixing as neutral
from gradstop.flows import Flow
from gradstop.rollout import Rollout

__all__ = ["rollout", "draw_noise", "VECTORISE"]

#: ``alpha:auto`` batches its per-sample gradients with torch.func where it can; False takes them one sample
#: at a time everywhere (the reference path, the same numbers: for measuring what batching saves).
VECTORISE = True


def draw_noise(flow, horizon: int, batch: int, action_dim: int, key, dtype, device):
    """Standard-normal draws for a mixing flow, (2, N, H, B, action_dim): from ``key`` (an int seed or a
    ``torch.Generator``; None: the global RNG)."""
    shape = (2, flow.mixing.samples, horizon, batch, action_dim)
    # an int seed also seeds the initial states' draw: the noise takes its own stream of it
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([key, 1]).generate_state(1)[0])) \
        if isinstance(key, int) else key
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def rollout(policy, sim, flow, horizon: int, x0: torch.Tensor, noise: torch.Tensor, first_order,
            vectorise: bool = False) -> Rollout:
    """The mixing flow's Rollout: the noise-free rollout's fields, a loss whose gradient is ĝα, and ``mixing``.

    ``first_order(policy, sim, flow, x0)`` is the backend's rollout of a first-order flow (the requested impl);
    ``vectorise``: it is the native one, which ``torch.func`` can batch over ĝ1's samples.
    """
    mix = flow.mixing
    if not isinstance(policy, torch.nn.Module):
        raise TypeError(f"flow {flow.name!r} differentiates the policy's parameters: it must be an nn.Module")
    params = [p for p in policy.parameters() if p.requires_grad]
    x0 = x0.detach()
    batch = x0.shape[0]
    m = neutral.check_samples(flow, batch)
    noisy = neutral.ActionNoise(sim, horizon, torch.cat)
    repeated = x0.repeat(mix.samples, *([1] * (x0.dim() - 1)))  # row n·B + b starts at x0[b]
    w = mix.sigma * noise.to(dtype=x0.dtype, device=x0.device)

    def rows(g):  # (N, H, B, a) -> (M, H, a), row n·B + b
        return w[g].transpose(1, 2).reshape(m, horizon, sim.action_dim)

    with torch.no_grad():
        base = Rollout(*(v.detach() for v in first_order(policy, sim, Flow(), x0)[:5]))
    v0 = (base.costs.sum(0) + base.terminal).repeat(mix.samples)
    nan = torch.tensor(float("nan"), dtype=base.loss.dtype)
    grad = torch.is_grad_enabled() and bool(params)

    if mix.needs_zeroth_order:
        w0 = rows(0)
        with torch.no_grad():
            r0 = first_order(policy, noisy, Flow(), noisy.wrap(repeated, w0))
            states = r0.states[:-1]  # (H, M, state)
            obs = noisy.obs(states.reshape(horizon * m, -1)).reshape(horizon, m, -1)
            coef = (r0.costs.sum(0) + r0.terminal - v0) / mix.sigma**2  # (M,)
        w0_t = w0.transpose(0, 1)  # (H, M, a)

    def scores():  # (M,): Σ_h ⟨π(o_{i,h}), w_{i,h}⟩ with the graph to θ
        actions = policy(obs.reshape(horizon * m, -1)).reshape(horizon, m, -1)
        return (actions * w0_t).sum((0, 2))

    if mix.needs_first_order:
        start1 = noisy.wrap(repeated, rows(1))

    if not mix.auto:
        alpha, loss = mix.alpha, base.loss
        stats = dict(alpha=torch.tensor(alpha, dtype=base.loss.dtype), bias=nan, eps=nan, var0=nan, var1=nan)
        if not grad:
            return base._replace(mixing=stats)
        if alpha > 0.0:
            l1 = first_order(policy, noisy, flow.first_order, start1).loss
            loss = loss + alpha * (l1 - l1.detach())
        if alpha < 1.0:
            s0 = (coef * scores()).mean()
            loss = loss + (1.0 - alpha) * (s0 - s0.detach())
        return base._replace(loss=loss, mixing=stats)

    if not grad:
        raise RuntimeError(f"flow {flow.name!r} chooses α from per-sample gradients: call it with gradients enabled "
                           "(outside torch.no_grad()), or use a fixed alpha:α")
    leaves0 = leaves1 = None
    if VECTORISE:
        named = {n: p.detach() for n, p in policy.named_parameters() if p.requires_grad}  # the order of params
        try:
            leaves0 = _per_sample_scores(policy, named, obs, w0_t, coef)
            if vectorise:
                leaves1 = _per_sample_first_order(policy, named, noisy, flow.first_order, start1, first_order)
        except Exception as err:  # noqa: BLE001 -- the loop below is the reference, and raises any error of its own
            warnings.warn(f"flow {flow.name!r}: torch.func could not batch the per-sample gradients ({type(err).__name__}: "
                          f"{err}); taking them one sample at a time instead (the same numbers, M backward passes)",
                          RuntimeWarning, stacklevel=4)
    if leaves0 is None:
        per_score = scores()
        g0s = [torch.autograd.grad(coef[i] * per_score[i], params, retain_graph=i < m - 1, allow_unused=True,
                                   materialize_grads=True) for i in range(m)]
        leaves0 = [torch.stack(v) for v in zip(*g0s)]
    if leaves1 is None:
        g1s = [torch.autograd.grad(first_order(policy, noisy, flow.first_order, start1[i : i + 1]).loss, params,
                                   allow_unused=True, materialize_grads=True) for i in range(m)]
        leaves1 = [torch.stack(v) for v in zip(*g1s)]
    g0, g1 = [v.mean(0) for v in leaves0], [v.mean(0) for v in leaves1]
    var0, var1 = neutral.spread(leaves0, g0, torch), neutral.spread(leaves1, g1, torch)
    bias = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g1, g0)))
    dim = sum(p.numel() for p in params)
    eps = neutral.bernstein_bound(var0, m, dim, mix.bound, mix.delta, torch)
    alpha = neutral.choose_alpha(var0, var1, bias, eps, mix.tol, torch)
    attach = sum(((alpha * a + (1.0 - alpha) * b) * (p - p.detach())).sum() for a, b, p in zip(g1, g0, params))
    stats = dict(alpha=alpha, bias=bias, eps=eps, var0=var0, var1=var1)
    return base._replace(loss=base.loss + attach, mixing={k: v.detach() for k, v in stats.items()})


def _per_sample_scores(policy, named: dict, obs, w, coef) -> list[torch.Tensor]:
    """ĝ0's per-sample gradients, (M, *p.shape) per parameter: ∇θ coef_i · Σ_h ⟨π(o_{i,h}), w_{i,h}⟩ batched
    over i (obs (H, M, obs), w (H, M, a), coef (M,))."""
    def one(p, o, w_i, c):
        return c * (functional_call(policy, p, (o,)) * w_i).sum()

    out = vmap(grad(one), in_dims=(None, 1, 1, 0))(named, obs, w, coef)
    return [out[n] for n in named]


def _per_sample_first_order(policy, named: dict, noisy, flow, starts, first_order) -> list[torch.Tensor]:
    """ĝ1's per-sample gradients, (M, *p.shape) per parameter: the gradient of each noisy rollout of batch 1
    from ``starts`` (M, state), batched over the samples."""
    def one(p, start):
        return first_order(lambda o: functional_call(policy, p, (o,)), noisy, flow, start[None]).loss

    out = vmap(grad(one), in_dims=(None, 0))(named, starts)
    return [out[n] for n in named]
