"""The few array operations whose spelling differs between JAX and PyTorch.

Physics is written once against ``sim.xp`` (``jax.numpy`` or ``torch``, using only the calls both
spell alike: sin, cos, tanh, stack, where, positional axes) and the helpers here for the rest.
Each backend's helpers import their framework lazily, so a torch-only user never imports JAX.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np

BACKENDS = ("jax", "torch", "numpy")
# Backends a rollout can differentiate through; 'numpy' simulates forward only (it also runs on
# complex arrays, which the tests' complex-step reference uses).
DIFFERENTIABLE = ("jax", "torch")


def _jax_ops():
    import jax
    import jax.numpy as jnp

    def key_of(key):
        if key is None:
            raise ValueError("JAX sims need a PRNG key to sample initial states: pass key=jax.random.key(0) or an int seed")
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return jax.random.key(int(key))
        dtype = getattr(key, "dtype", None)
        if dtype is None or not (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or dtype == jnp.uint32):
            raise TypeError(f"key must be an int seed or a jax.random key (jax.random.key(0)), got "
                            f"{type(key).__name__} {key!r}")
        return key

    def uniform(key, shape, dtype):
        return jax.random.uniform(key_of(key), shape, dtype=dtype)

    def constant(array: np.ndarray, like):
        return jnp.asarray(array, dtype=like.dtype)

    def default_float():
        return jnp.zeros(()).dtype

    return SimpleNamespace(
        xp=jnp, concat=jnp.concatenate, clip=jnp.clip, uniform=uniform, constant=constant,
        default_float=default_float, is_floating=lambda x: jnp.issubdtype(x.dtype, jnp.floating),
    )


def _torch_ops():
    import torch

    def generator_of(key):
        if key is None:
            return None
        if isinstance(key, int):
            return torch.Generator().manual_seed(key)
        if isinstance(key, torch.Generator):
            return key
        raise ValueError(f"torch sims take an int seed or a torch.Generator as key, got {type(key).__name__}")

    def uniform(key, shape, dtype):
        return torch.rand(shape, generator=generator_of(key), dtype=dtype)

    cache: dict = {}

    def constant(array: np.ndarray, like):
        # Constants are converted once per (array, dtype, device), not at every step; as normal tensors even when
        # first converted under torch.inference_mode, since a later differentiable step saves them for backward.
        k = (id(array), like.dtype, like.device)
        if k not in cache:
            with torch.inference_mode(False):
                cache[k] = (array, torch.as_tensor(array, dtype=like.dtype, device=like.device))
        return cache[k][1]

    return SimpleNamespace(
        xp=torch, concat=torch.cat, clip=torch.clamp, uniform=uniform, constant=constant,
        default_float=torch.get_default_dtype, is_floating=lambda x: x.is_floating_point(),
    )


def _numpy_ops():
    def uniform(key, shape, dtype):
        gen = key if isinstance(key, np.random.Generator) else np.random.default_rng(key)
        return gen.random(shape).astype(dtype)

    def clip(x, lo, hi):
        # Compares the real part only, so complex-step derivatives pass through (zero where clipped).
        return np.where(x.real < lo, lo, np.where(x.real > hi, hi, x))

    return SimpleNamespace(
        xp=np, concat=np.concatenate, clip=clip, uniform=uniform,
        constant=lambda array, like: np.asarray(array, dtype=like.dtype),
        default_float=lambda: np.float64, is_floating=lambda x: np.issubdtype(x.dtype, np.inexact),
    )


_LOADERS = {"jax": _jax_ops, "torch": _torch_ops, "numpy": _numpy_ops}
_LOADED: dict[str, SimpleNamespace] = {}


def ops(backend: str) -> SimpleNamespace:
    """The operations namespace of ``backend`` ('jax', 'torch' or 'numpy'), imported on first use."""
    if backend not in _LOADERS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend not in _LOADED:
        try:
            importlib.import_module(backend)
        except ImportError as err:
            raise ImportError(
                f"backend {backend!r} needs the {backend} package: pip install 'gradstop[{backend}]'"
            ) from err
        _LOADED[backend] = _LOADERS[backend]()
    return _LOADED[backend]
