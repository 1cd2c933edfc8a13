"""Benchmark options: ``--quick`` runs a small subset (CI smoke test: add --benchmark-disable)."""


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", help="small subset of the benchmark grid (H 1 and 10, batch 1)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--quick"):
        return
    def small(item):
        params = getattr(item, "callspec", None) and item.callspec.params
        return bool(params) and params.get("batch") == 1 and params.get("horizon") in (1, 10)

    keep = [item for item in items if small(item)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep
