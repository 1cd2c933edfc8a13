"""A PyTorch trainer's whole state as bytes (one ``torch.save`` dict of state dicts, plus a meta record)."""

from __future__ import annotations

import io

import torch

__all__ = ["pack", "read_meta", "unpack", "load_modules"]


def pack(state: dict, meta: dict) -> bytes:
    buf = io.BytesIO()
    torch.save({"meta": meta, **state}, buf)
    return buf.getvalue()


def read_meta(data: bytes) -> dict:
    return unpack(data)["meta"]


def unpack(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


def load_modules(state: dict, **modules) -> None:
    """``module.load_state_dict(state[name])`` for each; a ValueError naming the fix if one does not fit."""
    try:
        for name, module in modules.items():
            module.load_state_dict(state[name])
    except (RuntimeError, KeyError) as err:
        raise ValueError("the checkpoint does not fit this run's networks; it was written by a different config: "
                         f"resume with that config or choose another --out ({err})") from None
