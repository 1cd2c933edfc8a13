"""PyTorch's fast path against JAX: paired timing of one gradient, the table issue 10 asks for.

    python -m experiments.torch_speed [--batch 1 256] [--horizon 10 50 150] [--rounds 15] [--out DIR] [--quick]

For each (batch, H) every case below computes one gradient of the same problem (neural sim
12/6/128, MLP 12→128→128→6, float32, the same weights and start states in both frameworks:
``gradstop.benchmark.problem``), once per round, interleaved, for ``--rounds`` rounds; each ratio is
taken within a round and the median (and quartiles) over rounds is reported.

Cases, for the flow ``none`` and the pair ``none+input`` (``gs.gradients``):
  jax-native, jax-fused           ``jax.jit`` of the rollout's gradient / of the fused sweep;
  torch-native, torch-fused       eager PyTorch (autograd through the loop / the fused sweep);
  torch-native-compile, torch-fused-compile
                                  ``compile=True`` (``gradstop.torch.compiled``): the sweep as two
                                  compiled loops; native runs one sweep per component flow.

It also records each compile's wall-clock (the first call) and checks, by the compiled-graph
count, that every further horizon reused the compiled loops (``recompiled`` in the CSV).
Writes ``speed.md`` (the tables), ``speed.csv`` and ``settings.json`` into a new results folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

import gradstop as gs
from gradstop.bench.problem import problem
from gradstop._io import versions
from gradstop.study.results import check_absent, run_folder, unique_path, write_csv, write_json

if __package__ in (None, ""):  # run as a file: python experiments/torch_speed.py
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from experiments.fused_vs_native import interleaved  # noqa: E402

FLOWS = {"none": ["none"], "none+input": ["none", "input"]}
CASES = ["jax-native", "jax-fused", "torch-native", "torch-fused", "torch-native-compile", "torch-fused-compile"]


def _jax_fn(sim, policy, x0, flows, horizon, impl):
    import jax

    fn = jax.jit(lambda p, x: gs.gradients(p, sim, flows=flows, horizon=horizon, x0=x, impl=impl).grads)
    compiled = fn.lower(policy, x0).compile()
    return lambda: jax.block_until_ready(compiled(policy, x0))


def _torch_fn(sim, policy, x0, flows, horizon, impl, compile):
    if flows == ["none"] and not compile:  # what a user writes for one flow
        def one():
            policy.zero_grad(set_to_none=True)
            gs.rollout(policy, sim, stop="none", horizon=horizon, x0=x0, impl=impl).loss.backward()
        return one
    return lambda: gs.gradients(policy, sim, flows=flows, horizon=horizon, x0=x0, impl=impl, compile=compile).grads


def measure(problems, horizon: int, rounds: int, flows_names=tuple(FLOWS)):
    """``(times {(flow, case): [s]}, compile_s {(flow, case): s}, recompiled {(flow, case): bool})``.

    ``problems``: ((sim, policy, x0) in JAX, the same in torch), kept across horizons, so a compiled
    torch case at a second horizon shows whether it reused the first one's compiled loops.
    """
    from gradstop.torch import compiled

    (jsim, jpolicy, jx0), (tsim, tpolicy, tx0) = problems
    fns, compile_s, recompiled = {}, {}, {}
    for name in flows_names:
        flows = FLOWS[name]
        for case in CASES:
            start, graphs = time.perf_counter(), compiled.compile_count()
            if case.startswith("jax"):
                fn = _jax_fn(jsim, jpolicy, jx0, flows, horizon, case.split("-")[1])
            else:
                fn = _torch_fn(tsim, tpolicy, tx0, flows, horizon, case.split("-")[1], case.endswith("compile"))
            fn()  # warm-up, and the compile of the compiled cases
            if case.startswith("jax") or case.endswith("compile"):
                compile_s[(name, case)] = time.perf_counter() - start
            recompiled[(name, case)] = compiled.compile_count() > graphs
            fns[(name, case)] = fn
    return interleaved(fns, rounds), compile_s, recompiled


def _ratio(times, flow, num, den):
    r = np.asarray(times[(flow, num)]) / np.asarray(times[(flow, den)])
    return np.median(r), np.percentile(r, 25), np.percentile(r, 75)


RATIOS = [  # (column, numerator, denominator): > 1 means the denominator is faster
    ("compile_fused_over_jax_fused", "torch-fused-compile", "jax-fused"),
    ("compile_native_over_jax_native", "torch-native-compile", "jax-native"),
    ("eager_native_over_compile_fused", "torch-native", "torch-fused-compile"),
    ("compile_native_over_compile_fused", "torch-native-compile", "torch-fused-compile"),
    ("eager_native_over_eager_fused", "torch-native", "torch-fused"),
    ("jax_native_over_jax_fused", "jax-native", "jax-fused"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 256])
    parser.add_argument("--horizon", nargs="+", type=int, default=[10, 50, 150])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="batch 1, H 2 and 3, 3 rounds, flow none (a smoke run)")
    parser.add_argument("--out", help="results folder to create (default results/torch-speed-<time>)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.horizon, args.rounds = [1], [2, 3], 3
    if args.rounds < 3 or min(args.batch) < 1 or min(args.horizon) < 1:
        parser.error("--rounds must be ≥ 3, --batch and --horizon ≥ 1")
    # a taken --out fails now, not after the measurements
    dest = check_absent(args.out or unique_path("results", "torch-speed"), parser.error)
    flows = ["none"] if args.quick else list(FLOWS)
    header = ["batch", "horizon", "flow", *(f"{c}_ms" for c in CASES), *(f"{c}_compile_s" for c in CASES),
              *(f"{col}{q}" for col, _, _ in RATIOS for q in ("", "_q25", "_q75")), "recompiled"]
    rows, started = [], time.time()
    for batch in args.batch:
        problems = (problem("jax", "neural", batch), problem("torch", "neural", batch))
        for horizon in args.horizon:
            times, compile_s, recompiled = measure(problems, horizon, args.rounds, flows)
            for flow in flows:
                ms = [np.median(times[(flow, c)]) * 1e3 for c in CASES]
                comp = [compile_s.get((flow, c), np.nan) for c in CASES]
                ratios = [v for _, num, den in RATIOS for v in _ratio(times, flow, num, den)]
                again = any(recompiled[(flow, c)] for c in CASES if c.endswith("compile"))
                rows.append([batch, horizon, flow, *ms, *comp, *ratios, again])
                print(f"b{batch:<4d} H{horizon:<4d} {flow:10s} " + "  ".join(f"{c} {m:.2f}" for c, m in zip(CASES, ms))
                      + f"  compiled/JAX {ratios[0]:.2f}×  recompiled {again}", flush=True)
    command = "python -m experiments.torch_speed " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"Command: `{command.strip()}`; {args.rounds} paired rounds; medians of per-round ratios with quartiles.",
             "", "| batch | H | flow | JAX fused ms | torch compile fused ms | compile fused / JAX fused | "
             "compile native / JAX native | eager native / compile fused | compile native / compile fused | "
             "eager native / eager fused | JAX native / JAX fused | compile s (native, fused) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = 3 + len(CASES) * 2
        cells = [f"{r[base + 3 * i]:.2f}× ({r[base + 3 * i + 1]:.2f}–{r[base + 3 * i + 2]:.2f})" for i in range(len(RATIOS))]
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[4]:.3f} | {r[8]:.3f} | " + " | ".join(cells)
                     + f" | {r[3 + len(CASES) + 4]:.0f}, {r[3 + len(CASES) + 5]:.0f}" + (" (recompiled)" if r[-1] else "") + " |")
    with run_folder(dest) as folder:
        (folder / "speed.md").write_text("\n".join(lines) + "\n")
        write_csv(folder / "speed.csv", header, rows)
        write_json(folder / "settings.json", {"command": command.strip(), "batch": args.batch, "horizon": args.horizon,
                                              "rounds": args.rounds, "flows": flows, "wall_clock_s": time.time() - started,
                                              "versions": {**versions("jax"), **versions("torch"),
                                                           "machine": platform.machine(), "cpus": os.cpu_count()}})
    print(f"wrote {dest}/speed.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
