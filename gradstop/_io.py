"""Files gradstop writes, framework-neutral: atomic writes (a reader sees the old file or the new one, never a
part), JSON that takes NumPy values, and the versions recorded beside every result.

Every package that writes results (trainers, study, health, bench, cli) imports this module; it imports no other
part of gradstop.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "atomic_write_json", "jsonable", "versions", "is_unfinished_write", "empty_but_unfinished_writes"]


def atomic_write(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def is_unfinished_write(path: Path) -> bool:
    """Whether ``path`` is the temporary file of an :func:`atomic_write` killed before its rename (never user data)."""
    return path.is_file() and path.name.startswith(".") and ".tmp-" in path.name


def empty_but_unfinished_writes(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but :func:`is_unfinished_write` files, which are then removed: what a process
    killed between creating a results folder and renaming its first file into it leaves. False: it holds other
    things, and nothing is removed."""
    entries = list(folder.iterdir())
    if not all(is_unfinished_write(p) for p in entries):
        return False
    for p in entries:
        p.unlink()
    return True


def atomic_write_json(path: Path | str, data) -> None:
    atomic_write(path, (json.dumps(data, indent=2, default=jsonable) + "\n").encode())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def jsonable(value):
    """``json.dump``'s ``default``: NumPy scalars and arrays as Python values, anything else as its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def versions(framework: str) -> dict:
    """The versions of Python and the packages a result depends on, recorded in its settings."""
    names = ["gradstop", "numpy"] + (["jax", "jaxlib", "equinox", "optax"] if framework == "jax" else ["torch"])
    out = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
