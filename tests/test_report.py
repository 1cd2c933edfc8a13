"""The benchmark report: ratios computed from a pytest-benchmark JSON, figures and CSV written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradstop.bench.report import load_cases, ratio_tables, write_report

ROOT = Path(__file__).resolve().parents[1]


def _bench(framework, impl, flow, horizon, ms, memory, sim="neural", batch=1):
    return {"stats": {"median": ms / 1e3}, "extra_info": {"framework": framework, "sim": sim, "impl": impl, "flow": flow,
                                                          "horizon": horizon, "batch": batch, "memory_bytes": memory}}


@pytest.fixture
def benchmark_json(tmp_path):
    benches = []
    for h in (10, 150):
        benches += [_bench("jax", "native", "combined", h, 4.0 * h, 8e6 * h), _bench("jax", "fused", "combined", h, 2.0 * h, 9e6 * h),
                    _bench("jax", "fused-recompute", "combined", h, 3.0 * h, 1e6 * h),
                    _bench("torch", "native", "combined", h, 40.0 * h, 7e6 * h), _bench("torch", "fused", "combined", h, 25.0 * h, 7e6 * h)]
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"benchmarks": benches}))
    return path


def test_ratio_tables_divide_native_by_fused(benchmark_json):
    table = ratio_tables(load_cases(benchmark_json))
    assert "| jax | neural | 1 | combined | 150 | 600.00 | 300.00 | 2.00× | 1.33× | 1200.00 | 150.00 | 12% |" in table
    assert "| torch | neural | 1 | combined | 10 | 400.00 | 250.00 | 1.60× | — | 70.00 | nan | — |" in table
    assert "| neural | 1 | combined | 10 | native | 40.00 | 400.00 | 0.100 |" in table


def test_jax_only_benchmarks_say_why_there_is_no_framework_table(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"benchmarks": [_bench("jax", "native", "none", 10, 4.0, 1e6, sim="brax"),
                                               _bench("jax", "fused", "none", 10, 5.0, 1e6, sim="brax")]}))
    table = ratio_tables(load_cases(path))
    assert "| jax | brax | 1 | none | 10 | 4.00 | 5.00 | 0.80× |" in table
    assert "no case was measured in both frameworks" in table and "| JAX ms |" not in table


def test_compiled_torch_rows_get_their_own_table(tmp_path):
    native, fused = _bench("torch", "native-compile", "none", 10, 5.0, 1e6), _bench("torch", "fused-compile", "none", 10, 4.0, 1e6)
    native["extra_info"]["compile_s"], fused["extra_info"]["compile_s"] = 48.6, 20.2
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"benchmarks": [_bench("torch", "native", "none", 10, 20.0, 2e6), native, fused,
                                               _bench("jax", "native", "none", 10, 1.0, 1e6),
                                               _bench("jax", "fused", "none", 10, 2.0, 1e6)]}))
    table = ratio_tables(load_cases(path))
    assert ("| neural | 1 | none | 10 | 20.00 | 5.00 | 4.00 | — | 1.00 | 2.00 | 5.00× | 1.25× | 5.00× | 2.00× "
            "| 49, 20, — |") in table
    cases = load_cases(path)
    assert "Compiled torch" not in ratio_tables([c for c in cases if not c["impl"].endswith("compile")])


def test_report_writes_figures_table_and_csv(benchmark_json, tmp_path):
    dest = write_report(benchmark_json, tmp_path / "report")
    assert sorted(p.name for p in dest.iterdir()) == ["cases.csv", "memory-neural.png", "ratios.md", "runtime-neural.png"]
    assert len((dest / "cases.csv").read_text().splitlines()) == 11
    with pytest.raises(FileExistsError, match="already exists"):
        write_report(benchmark_json, dest)


@pytest.mark.parametrize("content, message", [(None, "no such benchmark file"), ("{", "is not JSON"),
                                               ('{"benchmarks": []}', "holds no gradstop benchmark cases")])
def test_bad_benchmark_files_are_named(tmp_path, content, message):
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "benchmark_figures.py"), str(path),
                             "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_paired_timing_script_writes_its_table(tmp_path):
    out = tmp_path / "paired"
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "fused_vs_native.py"), "--batch", "1",
                             "--horizon", "2", "--flows", "none", "combined", "--rounds", "3", "--torch-compile",
                             "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    table = (out / "ratios.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| jax") or line.startswith("| torch")]
    assert [r.split(" | ")[:4] for r in rows] == [["| jax", "1", "2", "none"], ["| jax", "1", "2", "combined"],
                                                   ["| torch", "1", "2", "none"], ["| torch", "1", "2", "combined"]]
    compiled = [r.split(" | ")[8:11] for r in rows]  # torch.compile ms, native/compiled, compile s
    assert compiled[0] == compiled[1] == compiled[3] == ["—", "—", "— |"]  # JAX rows and torch combined: not compiled
    assert compiled[2][1].endswith("×") and float(compiled[2][0]) > 0
    assert len((out / "ratios.csv").read_text().splitlines()) == 5


@pytest.mark.slow
def test_paired_timing_script_takes_other_sims_and_refuses_brax_in_torch(tmp_path):
    script = [sys.executable, str(ROOT / "experiments" / "fused_vs_native.py"), "--batch", "2", "--horizon", "3",
              "--flows", "input", "--rounds", "3"]
    result = subprocess.run(script + ["--framework", "jax", "--sim", "cartpole", "--out", str(tmp_path / "c")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "c" / "ratios.md").read_text()
    assert "--sim cartpole" in written
    taken = subprocess.run(script + ["--framework", "jax", "--sim", "cartpole", "--out", str(tmp_path / "c")],
                           capture_output=True, text=True, cwd=ROOT)  # refused before it measures anything
    assert taken.returncode == 2 and "already exists: choose another --out" in taken.stderr and not taken.stdout
    assert (tmp_path / "c" / "ratios.md").read_text() == written
    refused = subprocess.run(script + ["--sim", "brax:reacher", "--out", str(tmp_path / "b")],
                             capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2 and "JAX only: pass --framework jax" in refused.stderr
    assert not (tmp_path / "b").exists()
