"""Benchmark report: pytest-benchmark JSON → runtime and memory vs horizon figures + ratio tables.

    python experiments/benchmark_figures.py out.json --out results/benchmarks

reads the JSON that ``pytest benchmarks --benchmark-json out.json`` writes and produces, in a new
results folder (written completely or not at all):

- ``runtime-<sim>.png`` and ``memory-<sim>.png``: median time / peak memory of one gradient
  against the horizon, one panel per (batch, flow), one line per (framework, impl);
- ``ratios.md``: Markdown tables of fused/native per framework and horizon (time and memory),
  JAX/torch per impl, and the compiled torch rows (``native-compile``, ``fused-compile``: the
  ``compile=True`` path; ``native-unrolled-compile``: plain ``torch.compile`` of the loop) against
  torch eager and JAX;
- ``cases.csv``: every case, one row each.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from gradstop.study.results import run_folder, unique_path, write_csv

__all__ = ["load_cases", "ratio_tables", "plot_vs_horizon", "write_report"]

KEY = ("framework", "sim", "batch", "flow", "impl", "horizon")
COMPILED = ("native-compile", "fused-compile", "native-unrolled-compile")  # the compiled torch impls


def load_cases(path) -> list[dict]:
    """One dict per benchmark case: the grid coordinates, ``ms`` (median) and ``memory_bytes``."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such benchmark file; make one with "
                                "`pytest benchmarks --benchmark-json {path}`") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err}); pass the file pytest-benchmark wrote") from None
    cases = []
    for bench in data.get("benchmarks", []) if isinstance(data, dict) else []:
        info = bench.get("extra_info", {})
        if not all(k in info for k in ("framework", "impl", "flow", "horizon", "batch")):
            continue
        cases.append({**{k: info.get(k) for k in KEY}, "sim": info.get("sim", "neural"),
                      "ms": bench["stats"]["median"] * 1e3, "memory_bytes": info.get("memory_bytes"),
                      "compile_s": info.get("compile_s")})
    if not cases:
        raise ValueError(f"{path} holds no gradstop benchmark cases: was it written by `pytest benchmarks --benchmark-json`?")
    return cases


def _index(cases):
    return {tuple(c[k] for k in KEY): c for c in cases}


def _fmt_ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "—"


def ratio_tables(cases: list[dict]) -> str:
    """Markdown: fused/native per framework (time, memory), and JAX/torch per impl."""
    idx = _index(cases)
    lines = ["### native/fused: > 1 means the fused sweep is faster (time) or smaller (memory)", "",
             "| framework | sim | batch | flow | H | native ms | fused ms | native/fused | native/recompute "
             "| memory native MB | memory recompute MB | recompute/native memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    seen = sorted({(c["framework"], c["sim"], c["batch"], c["flow"], c["horizon"]) for c in cases})
    for fw, sim, batch, flow, h in seen:
        get = lambda impl: idx.get((fw, sim, batch, flow, impl, h))  # noqa: E731
        nat, fus, rec = get("native"), get("fused"), get("fused-recompute")
        if nat is None or (fus is None and rec is None):
            continue
        mem_n = nat["memory_bytes"]
        mem_r = rec["memory_bytes"] if rec else None
        lines.append(
            f"| {fw} | {sim} | {batch} | {flow} | {h} | {nat['ms']:.2f} | {fus['ms'] if fus else float('nan'):.2f} "
            f"| {_fmt_ratio(nat['ms'], fus and fus['ms'])} | {_fmt_ratio(nat['ms'], rec and rec['ms'])} "
            f"| {mem_n / 1e6 if mem_n is not None else float('nan'):.2f} "
            f"| {mem_r / 1e6 if mem_r is not None else float('nan'):.2f} "
            f"| {f'{mem_r / mem_n:.0%}' if mem_r is not None and mem_n else '—'} |")
    pairs = []
    for sim, batch, flow, h, impl in sorted({(c["sim"], c["batch"], c["flow"], c["horizon"], c["impl"]) for c in cases}):
        j, t = idx.get(("jax", sim, batch, flow, impl, h)), idx.get(("torch", sim, batch, flow, impl, h))
        if j and t:
            pairs.append(f"| {sim} | {batch} | {flow} | {h} | {impl} | {j['ms']:.2f} | {t['ms']:.2f} | {j['ms'] / t['ms']:.3f} |")
    lines += ["", "### JAX/torch: time of JAX (jitted) over torch (eager); < 1 means JAX is faster", ""]
    lines += (["| sim | batch | flow | H | impl | JAX ms | torch ms | JAX/torch |", "|---|---|---|---|---|---|---|---|", *pairs]
              if pairs else ["(no case was measured in both frameworks: run the benchmarks without `-k jax`/`-k torch` "
                             "for this table; Brax sims are JAX only)"])
    compiled = sorted({(c["sim"], c["batch"], c["flow"], c["horizon"]) for c in cases
                       if c["framework"] == "torch" and c["impl"] in COMPILED})
    if compiled:
        lines += ["", "### Compiled torch: `compile=True` (native-compile, fused-compile) and the unrolled "
                  "`torch.compile` of the loop, against torch eager and JAX (> 1: the denominator is faster)", "",
                  "| sim | batch | flow | H | eager native ms | native-compile ms | fused-compile ms | unrolled ms "
                  "| JAX native ms | JAX fused ms | eager native / fused-compile | native-compile / fused-compile "
                  "| native-compile / JAX native | fused-compile / JAX fused | compile s (native, fused, unrolled) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for sim, batch, flow, h in compiled:
            get = lambda fw, impl: idx.get((fw, sim, batch, flow, impl, h))  # noqa: E731
            e, n, f, u = (get("torch", i) for i in ("native", *COMPILED))
            jn, jf = get("jax", "native"), get("jax", "fused")
            ms = lambda c: f"{c['ms']:.2f}" if c else "—"  # noqa: E731
            sec = lambda c: f"{c['compile_s']:.0f}" if c and c.get("compile_s") is not None else "—"  # noqa: E731
            lines.append(f"| {sim} | {batch} | {flow} | {h} | {ms(e)} | {ms(n)} | {ms(f)} | {ms(u)} | {ms(jn)} | {ms(jf)} "
                         f"| {_fmt_ratio(e and e['ms'], f and f['ms'])} | {_fmt_ratio(n and n['ms'], f and f['ms'])} "
                         f"| {_fmt_ratio(n and n['ms'], jn and jn['ms'])} | {_fmt_ratio(f and f['ms'], jf and jf['ms'])} "
                         f"| {sec(n)}, {sec(f)}, {sec(u)} |")
    return "\n".join(lines) + "\n"


def plot_vs_horizon(path, cases: list[dict], sim: str, quantity: str) -> bool:
    """``quantity`` ('ms' or 'memory_bytes') against H for one sim; False if there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [c for c in cases if c["sim"] == sim and c[quantity] is not None]
    panels = sorted({(c["batch"], c["flow"]) for c in mine})
    if not panels:
        return False
    cols = sorted({p[1] for p in panels})
    rows = sorted({p[0] for p in panels})
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.6 * len(cols), 3.0 * len(rows)), dpi=110,
                             squeeze=False, sharex=True)
    styles = {"native": "-", "fused": "--", "fused-recompute": ":", "native-compile": "-.",
              "fused-compile": (0, (5, 1, 1, 1, 1, 1)), "native-unrolled-compile": (0, (1, 3))}
    colors = {"jax": "tab:blue", "torch": "tab:orange"}
    for r, batch in enumerate(rows):
        for c, flow in enumerate(cols):
            ax = axes[r][c]
            lines = defaultdict(list)
            for case in mine:
                if case["batch"] == batch and case["flow"] == flow:
                    lines[(case["framework"], case["impl"])].append((case["horizon"], case[quantity]))
            for (fw, impl), pts in sorted(lines.items()):
                h, v = np.asarray(sorted(pts)).T
                scale = 1e-6 if quantity == "memory_bytes" else 1.0
                ax.plot(h, v * scale, linestyle=styles.get(impl, "-"), color=colors.get(fw), marker="o", markersize=3,
                        label=f"{fw} {impl}")
            ax.set_yscale("log")
            ax.set_title(f"batch {batch}, {flow}", fontsize=9)
            ax.grid(alpha=0.3)
            if r == len(rows) - 1:
                ax.set_xlabel("horizon H")
            if c == 0:
                ax.set_ylabel("ms per gradient" if quantity == "ms" else "peak memory (MB)")
    axes[0][0].legend(fontsize=7)
    what = "time of one gradient" if quantity == "ms" else "peak memory of one gradient"
    fig.suptitle(f"{sim}: {what} vs horizon", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(benchmark_json, out=None) -> Path:
    """Figures, ratio tables and a CSV of ``benchmark_json`` in a new folder (default results/benchmarks-<time>)."""
    cases = load_cases(benchmark_json)
    dest = Path(out) if out else unique_path("results", "benchmarks")
    with run_folder(dest) as folder:
        for sim in sorted({c["sim"] for c in cases}):
            plot_vs_horizon(folder / f"runtime-{sim}.png", cases, sim, "ms")
            plot_vs_horizon(folder / f"memory-{sim}.png", cases, sim, "memory_bytes")
        (folder / "ratios.md").write_text(f"Source: {benchmark_json}\n\n" + ratio_tables(cases))
        write_csv(folder / "cases.csv", [*KEY, "ms", "memory_bytes"],
                  ([c[k] for k in KEY] + [c["ms"], c["memory_bytes"]] for c in sorted(cases, key=lambda c: [str(c[k]) for k in KEY])))
    return dest
