"""An independent float64 reference for every flow: the adjoint recurrence of DESIGN §2 in NumPy.

Per-step Jacobians are explicit matrices, computed by complex-step differentiation
(∂f/∂x_j = Im f(x + i·h·e_j) / h, exact to rounding for h = 1e-30) of the NumPy twin of each sim
and of a NumPy MLP. No autodiff framework and no stop_gradient is involved: the flow's k_phys,
k_in, truncation and combination act on the recurrence directly::

    λ_H = ∂c_{H-1}/∂x_H + ∂c_H/∂x_H
    μ_t = ∂c_t/∂a_t + G_aᵀ λ_{t+1}
    λ_t = ∂c_{t-1}/∂x_t + k_phys·G_xᵀ λ_{t+1} + k_in·P_xᵀ μ_t     (local term only at a cut)
    ∇θ  = Σ_t P_θᵀ μ_t
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradstop.flows import Flow, combine_gradients, parse_flow
from sims import make

H_STEP = 1e-30


def mlp_apply(weights, obs):
    """NumPy MLP with tanh hidden layers; weights [W0, b0, ...], W: (out, in); obs (..., in)."""
    h = obs
    n = len(weights) // 2
    for i in range(n):
        w, b = weights[2 * i], weights[2 * i + 1]
        h = np.einsum("...i,...oi->...o", h, w) + b
        if i < n - 1:
            h = np.tanh(h)
    return h


def _unflatten(theta, shapes):
    out, i = [], 0
    for s in shapes:
        size = int(np.prod(s))
        out.append(theta[..., i : i + size].reshape(theta.shape[:-1] + s))
        i += size
    return out


def complex_jacobian(f, x):
    """J[i, j] = ∂f_i/∂x_j at the real point x (1-D), via one batched complex-step evaluation."""
    n = x.shape[-1]
    probe = x[None, :] + 1j * H_STEP * np.eye(n)
    return (np.imag(f(probe)) / H_STEP).T


@dataclasses.dataclass
class Trajectory:
    """A float64 forward rollout with every per-step Jacobian the recurrence needs."""

    states: np.ndarray      # (H+1, B, n)
    actions: np.ndarray     # (H, B, m)
    loss: float
    Gx: np.ndarray          # (H, B, n, n)  ∂g/∂x
    Ga: np.ndarray          # (H, B, n, m)  ∂g/∂a
    Px: np.ndarray          # (H, B, m, n)  ∂(π∘obs)/∂x
    Pt: np.ndarray          # (H, B, m, P)  ∂π/∂θ
    cx: np.ndarray          # (H, B, n)     ∂c(x_{t+1}, a_t)/∂x_{t+1}
    ca: np.ndarray          # (H, B, m)     ∂c(x_{t+1}, a_t)/∂a_t
    tx: np.ndarray          # (B, n)        ∂c_H/∂x_H


def trajectory(sim_name: str, sim_params: dict, weights, x0: np.ndarray, horizon: int) -> Trajectory:
    sim = make(sim_name, backend="numpy", **sim_params)
    shapes = [w.shape for w in weights]
    theta = np.concatenate([w.ravel() for w in weights])
    policy = lambda th, o: mlp_apply(_unflatten(th, shapes), o)  # noqa: E731
    B, n, m = x0.shape[0], sim.state_dim, sim.action_dim
    states, actions, loss = [x0], [], np.zeros(B)
    J = {k: [] for k in ("Gx", "Ga", "Px", "Pt", "cx", "ca")}
    x = x0
    for _ in range(horizon):
        a = policy(theta, sim.obs(x))
        x_next = sim.step(x, a)
        loss = loss + sim.cost(x_next, a)
        for key, f, at in (
            ("Gx", lambda b, v: sim.step(v, np.broadcast_to(a[b], (len(v), m))), x),
            ("Ga", lambda b, v: sim.step(np.broadcast_to(x[b], (len(v), n)), v), a),
            ("Px", lambda b, v: policy(theta, sim.obs(v)), x),
            ("Pt", lambda b, v: policy(v, np.broadcast_to(sim.obs(x[b : b + 1])[0], (len(v), sim.obs_dim))), None),
            ("cx", lambda b, v: sim.cost(v, np.broadcast_to(a[b], (len(v), m)))[:, None], x_next),
            ("ca", lambda b, v: sim.cost(np.broadcast_to(x_next[b], (len(v), n)), v)[:, None], a),
        ):
            point = (lambda b: theta) if at is None else (lambda b, at=at: at[b])
            jac = np.stack([complex_jacobian(lambda v, b=b, f=f: f(b, v), point(b)) for b in range(B)])
            J[key].append(jac[:, 0] if key in ("cx", "ca") else jac)
        states.append(x_next)
        actions.append(a)
        x = x_next
    loss = loss + sim.terminal_cost(x)
    tx = np.stack([complex_jacobian(lambda v: sim.terminal_cost(v)[:, None], x[b])[0] for b in range(B)])
    return Trajectory(np.stack(states), np.stack(actions), float(loss.mean()), tx=tx, **{k: np.stack(v) for k, v in J.items()})


def reference_gradient(traj: Trajectory, flow) -> np.ndarray:
    """The flow's parameter gradient (flat, [W0, b0, ...] order) from the adjoint recurrence."""
    flow: Flow = parse_flow(flow)
    if flow.combining:
        g_none, g_input = (reference_gradient(traj, f) for f in flow.components())
        return combine_gradients(flow.base, g_none, g_input, np)
    H, B = traj.actions.shape[:2]
    lam = traj.cx[H - 1] + traj.tx                       # λ_H, (B, n)
    grad = np.zeros(traj.Pt.shape[-1])
    for t in range(H - 1, -1, -1):
        mu = traj.ca[t] + np.einsum("bnm,bn->bm", traj.Ga[t], lam)
        grad += np.einsum("bmp,bm->p", traj.Pt[t], mu)
        local = traj.cx[t - 1] if t >= 1 else np.zeros_like(lam)
        if t >= 1 and flow.cut_after(t):
            lam = local
        else:
            lam = (local + flow.k_phys * np.einsum("bnk,bn->bk", traj.Gx[t], lam)
                   + flow.k_in * np.einsum("bmn,bm->bn", traj.Px[t], mu))
    return grad / B
