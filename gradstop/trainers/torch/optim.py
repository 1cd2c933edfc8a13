"""Optimizers, schedules and clipping for the PyTorch trainers, by name, from torch.optim."""

from __future__ import annotations

import functools

import torch

from gradstop.trainers.schedule import lr_at

__all__ = ["optimizer", "schedule", "clip", "global_norm"]


def optimizer(config, params) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over ``params`` (clipping is applied separately, see :func:`clip`)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.adam_eps)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.adam_eps,
                                 weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)


def schedule(config, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The config's learning-rate schedule (``gradstop.trainers.schedule.lr_at``) as a LambdaLR."""
    rate = functools.partial(lr_at, config.schedule, 1.0, config.lr_final, config.total_updates)
    return torch.optim.lr_scheduler.LambdaLR(opt, rate)


def clip(config, params) -> None:
    """Clip ``.grad`` in place by value (each component to ±clip_value), then by global norm."""
    if config.clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, config.clip_value)
    if config.clip_norm is not None:  # optax's rule (g·c/‖g‖ when ‖g‖ > c); clip_grad_norm_ adds 1e-6 to ‖g‖
        norm = global_norm(params)
        if norm > config.clip_norm:
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(config.clip_norm / norm)


def global_norm(params) -> torch.Tensor:
    return torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params if p.grad is not None))
