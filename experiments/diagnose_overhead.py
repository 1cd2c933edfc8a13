"""Paired timing of ``gradstop.diagnose``'s sweep against one fused gradient of the same flows (JAX).

    python experiments/diagnose_overhead.py [--batch 1 256] [--horizon 150] [--flows none,input]
                                            [--sim neural] [--rounds 15] [--out results/diagnose-overhead]

For each (batch, horizon), every round times once, interleaved: (a) the jitted fused gradient of
the flows (``gs.gradients(..., impl="fused")``) and (b) the jitted traced sweep that
``gs.diagnose`` runs (the same gradients plus every per-step trace and non-finite code), and (c)
that sweep with ``contributions=False`` (no per-step comparison of the ∇θ contributions). The
ratios b/a and c/a are taken within each round; the median and the spread (min–max) over rounds are
reported. Compile time is excluded from both; turning the record into a ``Diagnosis`` (NumPy,
outside the sweep) is timed separately. The problem is ``gradstop.benchmark.problem``: float32,
MLP obs→128→128→action. Writes ``overhead.csv`` and ``overhead.md`` into a new results folder.
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import numpy as np

import gradstop as gs
from gradstop.bench.problem import problem
from gradstop.health.diagnose import diagnose, parse_flows
from gradstop.gradients import components_of
from gradstop.jax.diagnose import traced_sweep
from gradstop.study.results import check_absent, run_folder, write_csv


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--horizon", type=int, nargs="+", default=[150])
    ap.add_argument("--flows", default="none,input")
    ap.add_argument("--sim", default="neural")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default="results/diagnose-overhead")
    args = ap.parse_args(argv)
    # a taken --out fails now, not after the measurements
    check_absent(args.out, ap.error)
    flows = parse_flows(args.flows)
    components = components_of(flows)
    rows = []
    for batch in args.batch:
        sim, policy, x0 = problem("jax", args.sim, batch)
        params = eqx.partition(policy, eqx.is_inexact_array)[0]
        for horizon in args.horizon:
            grad = jax.jit(lambda p, x: gs.gradients(p, sim, flows=flows, horizon=horizon, x0=x, impl="fused").grads)
            grad = grad.lower(policy, x0).compile()
            traced = traced_sweep(policy, sim, components, horizon).lower(params, x0).compile()
            adjoints = traced_sweep(policy, sim, components, horizon, contributions=False).lower(params, x0).compile()
            fns = {"fused": lambda: jax.block_until_ready(grad(policy, x0)),
                   "diagnose": lambda: jax.block_until_ready(traced(params, x0)),
                   "adjoints": lambda: jax.block_until_ready(adjoints(params, x0))}
            for fn in fns.values():
                fn()
            times = {k: [] for k in fns}
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    tick = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - tick)
            ratio = np.asarray(times["diagnose"]) / np.asarray(times["fused"])
            ratio_adj = np.asarray(times["adjoints"]) / np.asarray(times["fused"])
            tick = time.perf_counter()
            diagnose(policy, sim, flows=flows, horizon=horizon, x0=x0)
            whole = time.perf_counter() - tick
            row = dict(sim=args.sim, batch=batch, horizon=horizon, flows=args.flows,
                       fused_ms=1e3 * np.median(times["fused"]), diagnose_ms=1e3 * np.median(times["diagnose"]),
                       adjoints_ms=1e3 * np.median(times["adjoints"]),
                       ratio=float(np.median(ratio)), ratio_min=float(ratio.min()), ratio_max=float(ratio.max()),
                       ratio_adjoints=float(np.median(ratio_adj)), ratio_adjoints_min=float(ratio_adj.min()),
                       ratio_adjoints_max=float(ratio_adj.max()),
                       gs_diagnose_call_s=whole)
            rows.append(row)
            print(f"batch {batch:>4} H {horizon:>4}: fused {row['fused_ms']:.3f} ms, diagnose sweep {row['diagnose_ms']:.3f} ms "
                  f"(ratio {row['ratio']:.2f}, {row['ratio_min']:.2f}–{row['ratio_max']:.2f}), without contributions "
                  f"{row['adjoints_ms']:.3f} ms (ratio {row['ratio_adjoints']:.2f}); "
                  f"gs.diagnose call incl. compile {whole:.1f} s", flush=True)
    lines = ["| batch | H | fused gradient (ms) | diagnose (ms) | ratio (min–max) | "
             "diagnose, contributions=False (ms) | ratio (min–max) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['horizon']} | {r['fused_ms']:.3f} | {r['diagnose_ms']:.3f} | "
              f"{r['ratio']:.2f} ({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {r['adjoints_ms']:.3f} | "
              f"{r['ratio_adjoints']:.2f} ({r['ratio_adjoints_min']:.2f}–{r['ratio_adjoints_max']:.2f}) |" for r in rows]
    with run_folder(args.out) as folder:
        write_csv(folder / "overhead.csv", list(rows[0]), [list(r.values()) for r in rows])
        (folder / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
