"""Fitting the world model's MLP in PyTorch: Adam on minibatches (the JAX twin's data and order)."""

from __future__ import annotations

import numpy as np
import torch

from gradstop import _policy
from gradstop.torch.policy import get_weights, mlp, set_weights
from gradstop.trainers.world_model import batches_of

__all__ = ["fit_mlp"]


def fit_mlp(inputs: np.ndarray, target: np.ndarray, config) -> list[np.ndarray]:
    """Fit an MLP inputs -> target (mean squared error); its weights as [W_0 (out, in), b_0, …]."""
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    hidden = (config.model_hidden, config.model_hidden)
    net = mlp(inputs.shape[1], target.shape[1], hidden=hidden, dtype=dtype, seed=config.seed)
    set_weights(net, _policy.init_weights(_policy.layer_sizes(inputs.shape[1], target.shape[1], hidden, "tanh"),
                                          config.seed, stream=2))
    opt = torch.optim.Adam(net.parameters(), lr=config.model_lr)
    X, Y = torch.as_tensor(inputs, dtype=dtype), torch.as_tensor(target, dtype=dtype)
    for e in range(config.model_epochs):
        for idx in torch.as_tensor(batches_of(len(inputs), config.model_batch, config.seed, e)):
            opt.zero_grad(set_to_none=True)
            loss = ((net(X[idx]) - Y[idx]) ** 2).mean()
            loss.backward()
            opt.step()
    return get_weights(net)
