"""Benchmark options: ``--quick`` runs a small subset (CI smoke test: add --benchmark-disable)."""


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="small subset of the benchmark grid: batch 1; neural at H 1 and 10; the other flat "
                          "sims at H 1 with the none+input pair; no Brax and no torch.compile (their compiles take a minute)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--quick"):
        return

    def small(item):
        params = getattr(item, "callspec", None) and item.callspec.params
        if not params or params.get("batch") != 1 or params.get("impl") == "native-compile":
            return False
        if params.get("sim_name") == "neural":
            return params.get("horizon") in (1, 10)
        return params.get("sim_name") in ("cartpole", "pointmass") and params.get("horizon") == 1 \
            and params.get("flow") == "none+input"

    keep = [item for item in items if small(item)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep
