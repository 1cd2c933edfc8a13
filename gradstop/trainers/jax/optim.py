"""Optimizers, schedules and clipping for the JAX trainers, by name, from optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["optimizer", "schedule", "clip", "global_norm"]


def schedule(config):
    """The config's learning-rate schedule as an optax schedule (see ``gradstop.trainers.schedule``)."""
    lr, total = config.lr, config.total_updates
    if config.schedule == "linear":
        rule = optax.linear_schedule(lr, lr * config.lr_final, total)
    elif config.schedule == "cosine":
        rule = optax.cosine_decay_schedule(lr, total, alpha=config.lr_final)
    else:
        rule = optax.constant_schedule(lr)
    # optax divides the integer count in float32; a float count keeps float64 runs exact
    return lambda count: rule(jnp.asarray(count, jnp.result_type(float)))


def optimizer(config) -> optax.GradientTransformation:
    """Adam, AdamW or SGD with the config's schedule (clipping is applied separately, see :func:`clip`)."""
    lr = schedule(config)
    if config.optimizer == "adam":
        return optax.adam(lr, b1=config.beta1, b2=config.beta2, eps=config.adam_eps)
    if config.optimizer == "adamw":
        return optax.adamw(lr, b1=config.beta1, b2=config.beta2, eps=config.adam_eps, weight_decay=config.weight_decay)
    return optax.sgd(lr, momentum=config.momentum or None)


def clip(config, grads):
    """Clip by value (each component to ±clip_value), then by global norm, with optax's transforms."""
    for transform, on in ((optax.clip, config.clip_value), (optax.clip_by_global_norm, config.clip_norm)):
        if on is not None:
            grads, _ = transform(on).update(grads, optax.EmptyState())
    return grads


def global_norm(tree):
    # spelled out: optax renamed its helper across versions (global_norm, tree_l2_norm, tree_norm)
    return jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(tree)))
