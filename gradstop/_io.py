"""Files gradstop writes, framework-neutral: atomic writes (a reader sees the old file or the new one, never a
part), JSON that takes NumPy values, and the versions recorded beside every result.

Every package that writes results (trainers, study, health, bench, cli) imports this module; it imports no other
part of gradstop.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "atomic_write_json", "jsonable", "versions", "is_unfinished_write", "empty_but_unfinished_writes",
           "hold_lock", "FolderBusyError", "read_json"]


def atomic_write(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, rename, fsync of the folder). A write that
    fails (a full disk, no permission) leaves the old file and no temporary one, and raises an ``OSError`` that
    names ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from None
    _fsync_dir(path.parent)


class FolderBusyError(ValueError):
    """Another process holds the lock of a results folder (a run or a sweep writing into it)."""


@contextlib.contextmanager
def hold_lock(path: Path | str, what: str):
    """Hold an exclusive lock on the file ``path`` for the block, refusing (:class:`FolderBusyError`) while another
    process holds it. The lock goes with its process, even on SIGKILL, so a lock left by a killed process is simply
    taken over; the file records who holds it (``pid N on HOST since TIME``), which the refusal quotes, and is removed
    when the block ends. ``what`` names the folder's use in the message, e.g. ``"another gradstop sweep"``."""
    import fcntl

    path = Path(path)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderBusyError(f"{path.parent} is in use: {what} ({holder}) is writing into it; wait for it to finish "
                                  "or stop it, or choose another --out") from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there now
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    handle.flush()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still held, so no one locks the old file after we let go
        handle.close()


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


def read_json(path: Path | str, fix: str | None = None):
    """The JSON file ``path``; a ValueError naming it (and ``fix``, or "restore it") if it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not valid JSON ({first}): it was edited or cut short; "
                         f"{fix or 'restore it from a copy'}") from None


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
