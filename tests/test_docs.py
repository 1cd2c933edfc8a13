"""The API reference (``make docs``): every module imports and renders, and every Sphinx-style cross-reference in a
docstring (:func:`x`, :class:`x`, :mod:`x`, :meth:`x`) names something that exists."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings

import pytest

PACKAGES = ("gradstop", "sims")
# what `make docs` documents: the front door's __all__ hides its subpackages from pdoc, so each is named
API = ("gradstop", "gradstop.trainers", "gradstop.health", "gradstop.study", "gradstop.bench", "sims")
REF = re.compile(r":(func|class|mod|meth|attr|data):`~?([\w.]+)`")


def _modules():
    for pkg in PACKAGES:
        root = importlib.import_module(pkg)
        yield root
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{pkg}."):
            if not info.name.endswith("__main__"):  # running it is the command line
                yield importlib.import_module(info.name)


def _resolve(name: str, module) -> bool:
    """Whether ``name`` is an attribute path from the module, its package, its classes, or an absolute import path."""
    parts = name.split(".")
    starts = [module]
    if "." in module.__name__:
        starts.append(importlib.import_module(module.__name__.rpartition(".")[0]))
    starts += [obj for _, obj in inspect.getmembers(module, inspect.isclass) if obj.__module__ == module.__name__]
    for start in starts:
        obj = start
        for part in parts:
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return True
    for cut in range(len(parts), 0, -1):  # an absolute path: the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        return True
    return False


def _docstrings(module):
    yield module.__name__, module.__doc__ or ""
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj.__doc__ or ""
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if inspect.isfunction(member) or isinstance(member, property):
                    yield f"{module.__name__}.{name}.{attr}", member.__doc__ or ""


def test_the_reference_checker_catches_a_broken_reference():
    import gradstop.flows as flows

    assert _resolve("parse_flow", flows) and _resolve("gradstop.trainers.TrainConfig", flows)
    assert not _resolve("no_such_function", flows) and not _resolve("gradstop.trainers.NoSuchThing", flows)


def test_every_cross_reference_in_a_docstring_resolves():
    broken = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in _modules():
            for where, doc in _docstrings(module):
                broken += [f"{where}: :{kind}:`{name}`" for kind, name in REF.findall(doc) if not _resolve(name, module)]
    assert not broken, "broken references:\n" + "\n".join(broken)


def test_the_api_reference_builds(tmp_path):
    pdoc = pytest.importorskip("pdoc", reason="the dev extra installs pdoc")
    import pdoc.doc_types  # noqa: F401

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*API, output_directory=tmp_path)
    # pdoc cannot evaluate the string annotations of NamedTuple fields (``from __future__ import annotations``);
    # that costs a prettier type in the page, nothing else. Anything else (a module that fails to import) fails.
    serious = [str(w.message) for w in caught if "Error parsing type annotation" not in str(w.message)
               and issubclass(w.category, UserWarning) and "warp" not in str(w.message).lower()]
    assert not serious, serious
    assert (tmp_path / "gradstop.html").is_file() and (tmp_path / "sims.html").is_file()
    assert (tmp_path / "gradstop" / "trainers.html").is_file()
