"""The layout's rules: no import cycles among gradstop's and sims' modules, the library never imports its
command line, the neutral modules import no framework, and the two backends mirror each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gradstop", "sims")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that ``path`` imports, at the top or inside a function (both run sooner or later)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from pkg import mod`` imports the submodule; ``from mod import name`` the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 40
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_library_never_imports_the_command_line():
    offenders = sorted(f"{name} imports {', '.join(sorted(t for t in targets if t.startswith('gradstop.cli')))}"
                       for name, targets in _graph().items()
                       if not name.startswith("gradstop.cli") and name != "gradstop.__main__"  # `python -m gradstop`
                       and any(t.startswith("gradstop.cli") for t in targets))
    assert not offenders, offenders


@pytest.mark.parametrize("name", ["gradstop.flows", "gradstop.mixing", "gradstop._io", "gradstop._plot", "gradstop._policy", "gradstop._checks",
                                  "gradstop.study.results", "gradstop.study.stats"])
def test_neutral_modules_import_no_framework(name):
    path = _modules().get(name)
    if path is None:
        pytest.skip(f"{name} is not in this tree")
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import)}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"jax", "torch", "equinox", "optax", "brax"}, imported


def test_top_level_holds_only_the_front_door():
    top = sorted(p.stem for p in (ROOT / "gradstop").glob("*.py"))
    assert top == ["__init__", "__main__", "_checks", "_io", "_plot", "_policy", "flows", "gradients", "mixing", "rollout",
                   "training"]
    packages = sorted(p.name for p in (ROOT / "gradstop").iterdir() if (p / "__init__.py").is_file())
    assert packages == ["bench", "cli", "health", "jax", "study", "torch", "trainers"]


def test_moved_modules_still_import_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("gradstop.sweep", None)
    with pytest.warns(DeprecationWarning, match="gradstop.study.sweep"):
        old = importlib.import_module("gradstop.sweep")
    assert old is importlib.import_module("gradstop.study.sweep")


def test_a_plot_of_flows_colours_each_flow_as_every_figure_does(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from gradstop._plot import flow_color, plot_lines

    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.update({l.get_label(): l.get_color() for l in fig.axes[0].lines}))
    lines = {f: (np.arange(3), np.arange(1, 4.0)) for f in ("none", "input", "combined", "decay:0.9")}
    plot_lines(tmp_path / "a.png", lines, title="t", xlabel="x", ylabel="y", legend="flow")
    assert seen == {f: flow_color(f) for f in lines}
    assert seen["combined"] == "tab:purple" != flow_color("state")
