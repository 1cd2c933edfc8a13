"""The efficiency figure: time and peak memory of one gradient against the horizon, native vs fused, JAX vs PyTorch.

    python -m experiments.runtime_memory [--quick] [--from-json out.json] [--out DIR]

Runs the benchmark suite (``pytest benchmarks``: pytest-benchmark, warm-up, compile timed apart) on
the published efficiency setting — the neural sim 12/6/128, MLP 12→128→128→6, float32, H ∈ {1, 10,
25, 50, 100, 150}, batch 1 and 256 — for one flow (``none``) and the none+input pair, JAX
native / fused and torch native / fused, eager and with ``compile=True``; or reads the JSON of an
earlier run (``--from-json``: ``make bench`` or ``pytest benchmarks --benchmark-json FILE``).
Peak memory: XLA's compiled memory analysis (JAX) and the torch profiler's allocation records
(torch eager): two methods, so memory is compared within a framework, never across; the compiled
torch rows are left out of the memory panels (the profiler does not see the buffers inductor's
compiled wrapper allocates, so their numbers are not comparable; they stay in cases.csv).

Writes ``benchmark.json`` (the suite's own file, machine and package versions inside),
``cases.csv`` (a row per case), ``ratios.md`` (fused/native, JAX/torch and compiled tables,
``gradstop.report``), ``ratios.csv`` (native/fused per framework and JAX/torch per impl at every
case), ``runtime-memory.png`` and ``settings.json``. Timings on shared 2-core VMs drift between
cases measured minutes apart: the paired ratios in docs/benchmarks.md (``fused_vs_native.py``)
are the ones to quote. ``--quick`` (batch 1, H 1 and 10, eager only, one round) takes seconds.
"""

from __future__ import annotations

import dataclasses
import shutil
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tyro

from gradstop.study.figures import claim_folder, read_settings, run_script, write_settings
from gradstop.bench.report import load_cases, ratio_tables
from gradstop.study.results import run_folder, save_figure, write_csv

SCRIPT = "runtime_memory"
ROOT = Path(__file__).resolve().parents[1]
FLOWS = ("none", "none+input")


@dataclasses.dataclass
class Args:
    from_json: str | None = None
    """read this pytest-benchmark JSON instead of running the suite"""
    quick: bool = False
    """a smoke run: batch 1, H 1 and 10, eager JAX and torch, one timing round (tests)"""
    out: str = "results/runtime-memory"
    """the figure's folder (new, or this script's earlier output with --force)"""
    force: bool = False
    """replace the files of an earlier run of this script in --out"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.from_json and not Path(args.from_json).is_file():
        raise ValueError(f"--from-json {args.from_json}: no such file (make one with `make bench`)")
    return args


def run_benchmarks(path: Path, quick: bool) -> float:
    """``pytest benchmarks`` into ``path``; its wall-clock seconds."""
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--benchmark-json", str(path)]
    if quick:
        cmd += ["--quick", "-k", "neural and not compile and not recompute and (none-H or none+input)",
                "--benchmark-max-time", "0.01", "--benchmark-min-rounds", "1", "--benchmark-warmup", "off"]
    else:
        cmd += ["--flows", ",".join(FLOWS)]
    tick = time.perf_counter()
    # a fresh pytest session: started from a pytest-xdist worker it would inherit the worker's variables and, taking
    # itself for a worker, write no JSON
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark suite failed ({' '.join(cmd)}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - tick


def ratios(cases) -> list[dict]:
    """native/fused per (framework, batch, flow, H) and torch/JAX per (impl, batch, flow, H); > 1: the second is faster."""
    idx = {(c["framework"], c["impl"], c["batch"], c["flow"], c["horizon"]): c["ms"] for c in cases}
    rows = []
    for (fw, impl, batch, flow, h), ms in sorted(idx.items(), key=lambda kv: [str(k) for k in kv[0]]):
        if impl == "native" and (fw, "fused", batch, flow, h) in idx:
            rows.append(dict(kind="native/fused", framework=fw, impl="", batch=batch, flow=flow, horizon=h,
                             ratio=ms / idx[(fw, "fused", batch, flow, h)]))
        if fw == "torch" and ("jax", impl.replace("-compile", ""), batch, flow, h) in idx:
            rows.append(dict(kind="torch/jax", framework="", impl=impl, batch=batch, flow=flow, horizon=h,
                             ratio=ms / idx[("jax", impl.replace("-compile", ""), batch, flow, h)]))
    return rows


STYLES = {"native": "-", "fused": "--", "native-compile": "-.", "fused-compile": ":"}
COLORS = {"jax": "tab:blue", "torch": "tab:orange"}


def plot(path, cases) -> None:
    """Two rows (time, memory) × a column per (batch, flow); a line per (framework, impl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c["batch"], c["flow"]) for c in cases})
    fig, axes = plt.subplots(2, len(panels), figsize=(3.5 * len(panels), 6.0), dpi=120, squeeze=False, sharex=True)
    for j, (batch, flow) in enumerate(panels):
        for i, (key, label, scale) in enumerate((("ms", "ms per gradient", 1.0), ("memory_bytes", "peak memory (MB)", 1e-6))):
            ax = axes[i, j]
            lines: dict = {}
            for c in cases:
                if key == "memory_bytes" and c["impl"].endswith("-compile"):
                    continue  # the profiler does not see the buffers of inductor's compiled wrapper: not comparable
                if (c["batch"], c["flow"]) == (batch, flow) and c[key] is not None and c[key] > 0:  # log axis: XLA can report 0
                    lines.setdefault((c["framework"], c["impl"]), []).append((c["horizon"], c[key] * scale))
            for (fw, impl), pts in sorted(lines.items()):
                h, v = np.asarray(sorted(pts)).T
                ax.plot(h, v, linestyle=STYLES.get(impl, "-"), color=COLORS.get(fw), marker="o", markersize=3,
                        label=f"{fw} {impl}")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.set_title(f"batch {batch}, {'one flow (none)' if flow == 'none' else 'the none+input pair'}", fontsize=9)
            if j == 0:
                ax.set_ylabel(label + ("" if i == 0 else "\nJAX: XLA analysis; torch eager: profiler"))
            if i == 1:
                ax.set_xlabel("horizon H")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("one gradient of a rollout: neural sim 12/6, MLP 128×128, float32 (pytest-benchmark medians)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


FILES = ["benchmark.json", "cases.csv", "ratios.md", "ratios.csv", "runtime-memory.png"]


def main(argv=None) -> None:
    args = parse(argv)
    if Path(args.out).exists():
        claim_folder(args.out, SCRIPT, force=args.force)  # only this script's earlier output, and only with --force
    started = time.perf_counter()
    before = read_settings(args.out) or {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.from_json) if args.from_json else Path(tmp) / "benchmark.json"
        bench_seconds = None if args.from_json else run_benchmarks(source, args.quick)
        if args.from_json and Path(args.from_json).resolve() == (Path(args.out) / "benchmark.json").resolve():
            bench_seconds = before.get("benchmark_seconds")  # redrawn from its own data: the suite's wall-clock stays
        cases = [c for c in load_cases(source) if c["sim"] == "neural" and c["flow"] in FLOWS]
        if not cases:
            raise ValueError(f"{source} holds no neural-sim cases of the flows {FLOWS}: run `pytest benchmarks --flows "
                             "none,none+input --benchmark-json FILE`")
        with run_folder(args.out, replace=args.force) as folder:
            shutil.copyfile(source, folder / "benchmark.json")  # before the old folder is replaced: source may lie in it
            rows = sorted(cases, key=lambda c: [str(c[k]) for k in ("framework", "impl", "batch", "flow", "horizon")])
            keys = ["framework", "impl", "batch", "flow", "horizon", "ms", "memory_bytes", "compile_s"]
            write_csv(folder / "cases.csv", keys, [[c[k] for k in keys] for c in rows])
            (folder / "ratios.md").write_text(f"Source: {'--from-json ' + str(source) if args.from_json else 'this run'}\n\n"
                                              + ratio_tables(cases))
            r = ratios(cases)
            write_csv(folder / "ratios.csv", ["kind", "framework", "impl", "batch", "flow", "horizon", "ratio"],
                      [list(x.values()) for x in r])
            plot(folder / "runtime-memory.png", cases)
            write_settings(folder, SCRIPT, args, seconds=time.perf_counter() - started, complete=True, files=FILES,
                           benchmark_seconds=bench_seconds, cases=len(cases),
                           source=f"redrawn from {args.from_json}" if args.from_json else "the benchmark suite, this run")
    print(f"wrote {args.out} ({len(cases)} cases)")


if __name__ == "__main__":
    run_script(main)
