"""gradstop's JAX backend: MLP policies, the rollout and several flows' gradients, mirroring ``gradstop.torch``."""

from gradstop.jax.policy import MLP, Gaussian, gaussian, get_weights, mlp, set_weights
from gradstop.jax.rollout import rollout, scale_gradient
from gradstop.jax.gradients import gradients

__all__ = ["MLP", "mlp", "Gaussian", "gaussian", "get_weights", "set_weights", "rollout", "scale_gradient", "gradients"]
