"""Benchmark options and the grid's three sizes.

    pytest benchmarks --benchmark-json out.json          # default grid: the published setting, ≈ 10 min on 2 cores
    pytest benchmarks --full --benchmark-json out.json   # every sim (Brax too), flow, memory policy (hours)
    pytest benchmarks --quick --benchmark-disable        # smoke subset (CI)
    pytest benchmarks --device cuda ...                  # torch on the GPU (JAX follows its default device)

Default grid: neural sim 12/6/128, H ∈ {1, 10, 25, 50, 100, 150}, batch 1 and 256, the none+input
pair, JAX native / fused, torch native / fused eager and with ``compile=True``.
"""

from __future__ import annotations

import importlib.metadata as metadata

import pytest


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="smoke subset: batch 1; neural at H 1 and 10 (the compiled torch path: fused, H 10); the "
                          "other flat sims at H 1 with the none+input pair; no Brax and no unrolled torch.compile")
    parser.addoption("--full", action="store_true",
                     help="the whole grid: every sim (Brax included), flow, memory policy, and torch.compile of the "
                          "unrolled loop (hours: Brax and unrolled compiles dominate)")
    parser.addoption("--flows", default="none+input",
                     help="default grid: the flows timed, comma-separated among none, input, combined, none+input "
                          "(default: the pair); experiments/runtime_memory.py adds none")
    parser.addoption("--device", default="cpu", choices=["cpu", "cuda"],
                     help="device of the torch cases (cuda: skipped when torch sees no GPU); JAX uses its default device")


def pytest_configure(config):
    if config.getoption("--quick") and config.getoption("--full"):
        raise pytest.UsageError("--quick and --full exclude each other: pick one grid")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Package versions and the torch device into the JSON's machine_info."""
    machine_info["packages"] = {}
    for name in ("gradstop", "jax", "jaxlib", "torch", "numpy", "equinox", "brax"):
        try:
            machine_info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            machine_info["packages"][name] = None
    machine_info["torch_device"] = config.getoption("--device")
    machine_info["grid"] = "quick" if config.getoption("--quick") else "full" if config.getoption("--full") else "default"
    machine_info["flows"] = config.getoption("--flows")


def _params(item):
    return getattr(item, "callspec", None) and item.callspec.params or {}


def quick(params) -> bool:
    if params.get("batch") != 1 or params.get("impl") == "native-unrolled-compile":
        return False
    if params.get("sim_name") == "neural":
        if params.get("impl", "").endswith("-compile"):  # one compile: the fused pair at H = 10
            return params.get("impl") == "fused-compile" and params.get("horizon") == 10 and params.get("flow") == "none+input"
        return params.get("horizon") in (1, 10)
    return params.get("sim_name") in ("cartpole", "pointmass") and params.get("horizon") == 1 \
        and params.get("flow") == "none+input"


def default(params, flows=("none+input",)) -> bool:
    return (params.get("sim_name") == "neural" and params.get("flow") in flows
            and params.get("impl") in ("native", "fused", "native-compile", "fused-compile"))


def pytest_collection_modifyitems(config, items):
    if config.getoption("--full"):
        return
    flows = tuple(f.strip() for f in config.getoption("--flows").split(",") if f.strip())
    known = ("none", "input", "combined", "none+input")
    if not flows or any(f not in known for f in flows):
        raise pytest.UsageError(f"--flows {config.getoption('--flows')!r}: give a comma-separated list among {', '.join(known)}")
    if config.getoption("--quick"):
        keep = [item for item in items if quick(_params(item))]
    else:
        keep = [item for item in items if default(_params(item), flows)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep
