"""Markdown table of fused/native ratios from a pytest-benchmark JSON file.

    python benchmarks/table.py out.json

One row per (framework, batch, horizon, flow): median ms of one gradient for native and fused,
and native/fused (> 1: fused is faster). JAX rows add XLA's compiled temp memory.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def rows(path: str) -> list[str]:
    data = json.load(open(path))
    cases = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        key = (info["framework"], info["batch"], info["horizon"], info["flow"])
        cases[key][info["impl"]] = (bench["stats"]["median"] * 1e3, info.get("memory_bytes"))
    out = ["| framework | batch | H | flow | native ms | fused ms | native/fused | JAX temp MB native → fused |",
           "|---|---|---|---|---|---|---|---|"]
    for key in sorted(cases):
        impls = cases[key]
        if set(impls) != {"native", "fused"}:
            continue
        (n_ms, n_mem), (f_ms, f_mem) = impls["native"], impls["fused"]
        mem = f"{n_mem / 1e6:.2f} → {f_mem / 1e6:.2f}" if n_mem is not None else "—"
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {n_ms:.2f} | {f_ms:.2f} | {n_ms / f_ms:.2f}× | {mem} |")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/table.py BENCHMARK.json")
    print("\n".join(rows(sys.argv[1])))
