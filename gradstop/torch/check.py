"""The array operations ``gradstop.check_gradients`` needs, in PyTorch (``torch.autograd``)."""

from __future__ import annotations

import copy

import numpy as np
import torch

import gradstop as gs

__all__ = ["Ops"]


def _values(tree):
    return list(tree.values()) if isinstance(tree, dict) else list(tree) if isinstance(tree, (tuple, list)) else [tree]


class Ops:
    def __init__(self, seed: int):
        self.seed = seed

    @staticmethod
    def require_float64() -> None:
        """PyTorch computes float64 whenever asked to."""

    # -- policies ---------------------------------------------------------------------------------
    @staticmethod
    def default_policy(sim, seed: int):
        return gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(32, 32), dtype=torch.float64, seed=seed)

    @staticmethod
    def as_float64(policy):
        return copy.deepcopy(policy).to(torch.float64)

    @staticmethod
    def dtype_of(policy):
        return next(policy.parameters()).dtype

    def dtype_name(self, policy) -> str:
        return str(self.dtype_of(policy)).removeprefix("torch.")

    @staticmethod
    def functional(policy):
        params = {k: p.detach() for k, p in policy.named_parameters()}
        return params, lambda p, o: torch.func.functional_call(policy, p, (o,))

    # -- states and actions -----------------------------------------------------------------------
    def reset(self, sim, batch: int, dtype):
        return sim.reset(self.seed, batch, dtype=torch.float64 if dtype == "float64" else dtype)

    @staticmethod
    def cast(x, dtype):
        return x.to(dtype)

    def visited_state(self, policy, sim, batch: int, steps: int):
        x = self.reset(sim, batch, "float64")
        with torch.no_grad():
            for _ in range(steps):
                x = sim.step(x, policy(sim.obs(x)))
        return x

    @staticmethod
    def uniform_action(sim, x, batch: int, scale: float, rng):
        return torch.as_tensor(rng.uniform(-scale, scale, (batch, sim.action_dim)), dtype=torch.float64, device=x.device)

    # -- the dot-product test's algebra -------------------------------------------------------------
    @staticmethod
    def prepare(fn):
        return fn

    @staticmethod
    def vjp(fn, arg):
        """torch.autograd, not torch.func.vjp: a step written as a classic ``torch.autograd.Function`` (no
        ``setup_context``) works under autograd but not under torch.func's transforms, and rollouts accept it."""
        def leaf(v):
            return v.detach().requires_grad_()

        leaves = {k: leaf(v) for k, v in arg.items()} if isinstance(arg, dict) else leaf(arg)
        inputs = _values(leaves)
        with torch.enable_grad():
            out = fn(leaves)

        def pullback(u):
            if not out.requires_grad:  # out does not depend on arg
                grads = [torch.zeros_like(v) for v in inputs]
            else:
                grads = torch.autograd.grad(out, inputs, u, retain_graph=True, allow_unused=True, materialize_grads=True)
            return dict(zip(leaves, grads)) if isinstance(leaves, dict) else grads[0]

        return out.detach(), pullback

    @staticmethod
    def randn_like(tree, rng):
        def one(v):
            return torch.as_tensor(rng.standard_normal(tuple(v.shape)), dtype=v.dtype, device=v.device)

        return {k: one(v) for k, v in tree.items()} if isinstance(tree, dict) else one(tree)

    @staticmethod
    def axpy(arg, eps: float, v):
        if isinstance(arg, dict):
            return {k: arg[k] + eps * v[k] for k in arg}
        return arg + eps * v

    @staticmethod
    def inner(u, y) -> float:
        with torch.no_grad():
            return float(sum((a * b).sum() for a, b in zip(_values(u), _values(y))))

    @staticmethod
    def inner_abs(u, y) -> float:
        with torch.no_grad():
            return float(sum((a * b).abs().sum() for a, b in zip(_values(u), _values(y))))

    # -- flows --------------------------------------------------------------------------------------
    @staticmethod
    def flow_gradients(policy, sim, names, horizon: int, x0, impl: str) -> dict[str, np.ndarray]:
        out = gs.gradients(policy, sim, flows=names, horizon=horizon, x0=x0, impl=impl).grads
        return {k: np.concatenate([v.detach().cpu().double().numpy().ravel() for v in g.values()]) for k, g in out.items()}

    @staticmethod
    def loss_directional(policy, sim, horizon: int, x0, rng, eps: float) -> tuple[float, float]:
        """(finite difference, analytic) derivative of the rollout loss along a random parameter direction."""
        params = [p for p in policy.parameters() if p.requires_grad]
        v = [torch.as_tensor(rng.standard_normal(tuple(p.shape)), dtype=p.dtype) for p in params]
        loss = gs.rollout(policy, sim, horizon=horizon, x0=x0).loss
        analytic = float(sum((g * d).sum() for g, d in zip(torch.autograd.grad(loss, params), v)))
        shifted = []
        with torch.no_grad():
            for s in (1.0, -1.0):
                for p, d in zip(params, v):
                    p.add_(s * eps * d)
                shifted.append(float(gs.rollout(policy, sim, horizon=horizon, x0=x0).loss))
                for p, d in zip(params, v):
                    p.sub_(s * eps * d)
        return (shifted[0] - shifted[1]) / (2 * eps), analytic
