"""Bad input to the rollout: each mistake gets a clear error that names the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest

import gradstop as gs
from helpers import load
from sims import make

BACKENDS = ["jax", "torch"]


def policy_for(backend, sim, obs_dim=None, action_dim=None, dtype="float64"):
    obs_dim, action_dim = obs_dim or sim.obs_dim, action_dim or sim.action_dim
    if backend == "jax":
        import jax.numpy as jnp

        return gs.jax.mlp(0, obs_dim, action_dim, hidden=(8,), dtype=getattr(jnp, dtype))
    import torch

    return gs.torch.mlp(obs_dim, action_dim, hidden=(8,), dtype=getattr(torch, dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_policy_action_size_must_match_sim(backend):
    sim = make("pointmass", backend=backend)
    with pytest.raises(ValueError, match=r"outputs actions of shape \(2, 5\) but pointmass takes 3 .*action_dim=sim.action_dim \(3\)"):
        gs.rollout(policy_for(backend, sim, action_dim=5), sim, horizon=3, key=0, batch=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_policy_input_size_must_match_observations(backend):
    sim = make("cartpole", backend=backend, poles=2)
    with pytest.raises(ValueError, match=r"takes 4 inputs but cartpole observations have 8: build it with obs_dim=sim.obs_dim"):
        gs.rollout(policy_for(backend, sim, obs_dim=4), sim, horizon=3, key=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("horizon,match", [(0, "horizon must be ≥ 1, got 0"), (-3, "horizon must be ≥ 1"),
                                           (2.0, "horizon must be a Python int"), (True, "horizon must be a Python int"),
                                           ("10", "horizon must be a Python int")])
def test_horizon_must_be_a_positive_int(backend, horizon, match):
    sim, policy, x0 = load(backend, "pointmass")
    with pytest.raises(ValueError, match=match):
        gs.rollout(policy, sim, horizon=horizon, x0=x0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 4, 1), (2, 5)])
def test_x0_shape_must_be_batch_by_state(backend, shape):
    sim, policy, _ = load(backend, "pointmass")  # state_dim 4
    x0 = np.zeros(shape)
    if backend == "torch":
        import torch

        x0 = torch.as_tensor(x0)
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, 4\) for pointmass, got"):
        gs.rollout(policy, sim, horizon=2, x0=x0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_x0_dtype_must_be_float_and_match_policy(backend):
    sim, policy, x0 = load(backend, "pointmass")
    as_int = x0.astype(np.int32) if backend == "jax" else x0.to(dtype=__import__("torch").int32)
    with pytest.raises(TypeError, match="x0 must be a floating-point array, got dtype .*int32"):
        gs.rollout(policy, sim, horizon=2, x0=as_int)
    as_f32 = x0.astype(np.float32) if backend == "jax" else x0.float()
    with pytest.raises(TypeError, match="x0 has dtype .*float32 but the policy's parameters are .*float64: cast x0"):
        gs.rollout(policy, sim, horizon=2, x0=as_f32)


def test_torch_x0_must_be_a_tensor():
    sim, policy, x0 = load("torch", "pointmass")
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor for a torch sim, got ndarray; use torch.as_tensor"):
        gs.rollout(policy, sim, horizon=2, x0=x0.numpy())


@pytest.mark.parametrize("policy_backend,sim_backend", [("torch", "jax"), ("jax", "torch")])
def test_frameworks_cannot_be_mixed(policy_backend, sim_backend):
    sim = make("pointmass", backend=sim_backend)
    policy = policy_for(policy_backend, make("pointmass", backend=policy_backend))
    with pytest.raises(TypeError, match=f"the policy is a {policy_backend} model but the sim computes in {sim_backend}.*copy_weights"):
        gs.rollout(policy, sim, horizon=2, key=0)


def test_numpy_sims_cannot_be_differentiated():
    sim = make("pointmass", backend="numpy")
    with pytest.raises(ValueError, match="a numpy sim simulates forward only.*backend='jax'"):
        gs.rollout(policy_for("jax", make("pointmass")), sim, horizon=2, key=0)


def test_sim_must_be_a_simulator():
    with pytest.raises(TypeError, match="sim must be a simulator from sims.make"):
        gs.rollout(policy_for("jax", make("pointmass")), "pointmass", horizon=2, key=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_impl_and_flow(backend):
    sim, policy, x0 = load(backend, "pointmass")
    with pytest.raises(ValueError, match=r"unknown impl 'fast'; choose one of \('native', 'fused'\)"):
        gs.rollout(policy, sim, horizon=2, x0=x0, impl="fast")
    with pytest.raises(ValueError, match=r"unknown memory policy 'all'; choose one of \('residuals', 'recompute'\)"):
        gs.rollout(policy, sim, horizon=2, x0=x0, impl="fused", memory="all")
    with pytest.raises(ValueError, match="unknown flow part 'inputs'.*valid flows"):
        gs.rollout(policy, sim, horizon=2, x0=x0, stop="inputs")


def test_jax_needs_a_key_or_x0():
    sim = make("pointmass")
    with pytest.raises(ValueError, match="JAX sims need a PRNG key.*key=jax.random.key\\(0\\) or an int seed"):
        gs.rollout(policy_for("jax", sim, dtype="float32"), sim, horizon=2)


def test_combining_flow_needs_parameters_in_torch():
    import torch

    sim = make("pointmass", backend="torch")
    with pytest.raises(TypeError, match="'combined' combines parameter gradients: the policy must be an nn.Module"):
        gs.rollout(lambda o: torch.zeros(o.shape[0], 3), sim, stop="combined", horizon=2, key=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_must_fit_the_policy(backend):
    sim = make("pointmass", backend=backend)
    small, big = policy_for(backend, sim), policy_for(backend, sim, obs_dim=7)
    with pytest.raises(ValueError, match="weights do not fit this policy"):
        gs.copy_weights(big, small)
