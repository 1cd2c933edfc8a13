"""A JAX trainer's whole state as bytes (an ``.npz`` of its pytree's leaves, plus a JSON meta record)."""

from __future__ import annotations

import io
import json

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["pack", "read_meta", "unpack"]


def pack(tree, meta: dict) -> bytes:
    buf = io.BytesIO()
    leaves = jax.tree.leaves(tree)
    np.savez(buf, __meta__=np.asarray(json.dumps(meta)), **{f"leaf_{i}": np.asarray(v) for i, v in enumerate(leaves)})
    return buf.getvalue()


def read_meta(data: bytes) -> dict:
    with np.load(io.BytesIO(data)) as z:
        return json.loads(str(z["__meta__"]))


def unpack(template, data: bytes):
    """The tree stored in ``data``, shaped like ``template``; a ValueError if its arrays do not fit."""
    leaves, treedef = jax.tree.flatten(template)
    with np.load(io.BytesIO(data)) as z:
        stored = [z[f"leaf_{i}"] for i in range(sum(k.startswith("leaf_") for k in z.files))]
    if [(a.shape, a.dtype) for a in stored] != [(np.shape(a), np.asarray(a).dtype) for a in leaves]:
        raise ValueError("the checkpoint's arrays do not fit this run's networks and optimizers; it was written by a "
                         "different config: resume with that config or choose another --out")
    return jax.tree.unflatten(treedef, [jnp.asarray(a) for a in stored])
