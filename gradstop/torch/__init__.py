"""gradstop's PyTorch backend: MLP policies, the rollout and several flows' gradients, mirroring ``gradstop.jax``."""

from gradstop.torch.policy import MLP, Gaussian, gaussian, get_weights, mlp, set_weights
from gradstop.torch.rollout import rollout, scale_gradient
from gradstop.torch.gradients import gradients

__all__ = ["MLP", "mlp", "Gaussian", "gaussian", "get_weights", "set_weights", "rollout", "scale_gradient", "gradients"]
