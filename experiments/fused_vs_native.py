"""Paired timing of fused vs native: the ratios the fused sweep's targets are stated in.

    python experiments/fused_vs_native.py [--framework jax torch] [--batch 1 256] [--horizon 10 50 150]
                                          [--flows none input combined none+input] [--rounds 15]
                                          [--torch-compile] [--torch-threads N] [--sim neural]
                                          [--out results/fused-vs-native]

pytest-benchmark times each case in its own test, minutes apart; on shared VMs whose speed
drifts by up to 2× that makes a ratio of two such medians unreliable. Here, for each (framework,
batch, horizon), every (flow, impl) runs once per round, interleaved, for ``--rounds`` rounds;
the ratio native/fused is taken within each round and the median over rounds is reported
(> 1: fused is faster). Neural sim (12/6/128) unless ``--sim`` names another (e.g.
``brax:inverted_pendulum``, JAX only); MLP policy obs→128→128→action (12→128→128→6 on neural),
float32, as in benchmarks/.
``--torch-compile`` adds, for torch and the flows none / input / none+input, native autodiff
under ``torch.compile`` (inductor; about a minute of compile per case, which is reported) to the
same rounds, and the ratio eager/compiled. ``--torch-threads 1`` runs every torch case on one intra-op
thread: the fused sweep puts its small stacked steps (≤ 4 rows) on one thread anyway, so this is
the comparison in which native has the same setting (at batch 1 it makes native 2–4% faster).
Writes ``ratios.md`` and ``ratios.csv`` into a new results folder.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gradstop as gs
from gradstop.study.results import check_absent, run_folder, unique_path, write_csv
from gradstop.bench.problem import problem

FLOWS = ["none", "input", "combined", "none+input"]


def _gradient_fn(framework, sim, policy, x0, flow, horizon, impl):
    """A no-argument callable computing one gradient (JAX: compiled, blocking; torch
    ``impl="compiled"``: native autodiff of a ``torch.compile``d loss per flow)."""
    if framework == "jax":
        import jax

        if flow == "none+input":
            fn = jax.jit(lambda p, x: gs.gradients(p, sim, flows=["none", "input"], horizon=horizon, x0=x, impl=impl).grads)
        else:
            fn = jax.jit(jax.grad(lambda p, x: gs.rollout(p, sim, stop=flow, horizon=horizon, x0=x, impl=impl).loss))
        compiled = fn.lower(policy, x0).compile()
        return lambda: jax.block_until_ready(compiled(policy, x0))

    if impl == "compiled":
        import torch

        losses = [torch.compile(lambda x, stop=stop: gs.rollout(policy, sim, stop=stop, horizon=horizon, x0=x).loss)
                  for stop in (["none", "input"] if flow == "none+input" else [flow])]
        params = list(policy.parameters())
        return lambda: [torch.autograd.grad(loss(x0), params) for loss in losses]

    def one():
        if flow == "none+input":
            return gs.gradients(policy, sim, flows=["none", "input"], horizon=horizon, x0=x0, impl=impl).grads
        policy.zero_grad(set_to_none=True)
        gs.rollout(policy, sim, stop=flow, horizon=horizon, x0=x0, impl=impl).loss.backward()

    return one


COMPILABLE = ("none", "input", "none+input")  # torch.compile cases (combined costs the pair plus an elementwise op)


def paired(framework, batch, horizon, flows, rounds, torch_compile=False, sim_name="neural"):
    """``({(flow, impl): [seconds per round]}, {flow: compile seconds})``, all cases interleaved in every round."""
    sim, policy, x0 = problem(framework, sim_name, batch)
    fns = {(f, impl): _gradient_fn(framework, sim, policy, x0, f, horizon, impl) for f in flows for impl in ("native", "fused")}
    if torch_compile and framework == "torch":
        import torch

        # Dynamo caches compiled graphs by code object and falls back to eager after a few
        # recompiles; the compiled losses of every case share one code object: start afresh.
        torch._dynamo.reset()
        fns.update({(f, "compiled"): _gradient_fn(framework, sim, policy, x0, f, horizon, "compiled")
                    for f in COMPILABLE if f in flows})
    compile_s = {}
    for (flow, impl), fn in fns.items():
        start = time.perf_counter()
        fn()  # warm-up (and torch.compile's compile)
        if impl == "compiled":
            compile_s[flow] = time.perf_counter() - start
    if {"none", "input", "none+input"} <= compile_s.keys():  # the pair reuses the single flows' graphs
        compile_s["none+input"] = compile_s["none"] + compile_s["input"]
    return interleaved(fns, rounds), compile_s


def interleaved(fns: dict, rounds: int) -> dict:
    """{key: [seconds per call, one per round]}: every (warmed-up) callable runs once per round, in turn.

    A round repeats each callable for about 20 ms of work (at least once), so fast cases are not
    dominated by timer resolution.
    """
    reps = {}
    for key, fn in fns.items():
        start = time.perf_counter()
        fn()
        reps[key] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(reps[key]):
                fn()
            times[key].append((time.perf_counter() - start) / reps[key])
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 256])
    parser.add_argument("--horizon", nargs="+", type=int, default=[10, 50, 150])
    parser.add_argument("--flows", nargs="+", default=FLOWS, choices=FLOWS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time torch native under torch.compile (flows none, input, none+input)")
    parser.add_argument("--sim", default="neural",
                        help="simulator name for sims.make: neural (default), cartpole, pointmass, brax:<env> (JAX only)")
    parser.add_argument("--torch-threads", type=int,
                        help="torch's intra-op threads for every case (torch.set_num_threads; default: torch's own, "
                             "the machine's cores). The fused sweep runs its small stacked steps on one thread "
                             "whatever this says; --torch-threads 1 puts native on one thread too")
    parser.add_argument("--out", help="results folder to create (default results/fused-vs-native-<time>)")
    args = parser.parse_args(argv)
    if args.rounds < 3 or min(args.batch) < 1 or min(args.horizon) < 1:
        parser.error("--rounds must be ≥ 3, --batch and --horizon ≥ 1")
    if args.sim.startswith("brax:") and "torch" in args.framework:
        parser.error(f"--sim {args.sim} is a Brax environment, which is JAX only: pass --framework jax")
    if args.torch_threads is not None and (args.torch_threads < 1 or "torch" not in args.framework):
        parser.error("--torch-threads must be ≥ 1, and applies to --framework torch only")
    # a taken --out fails now, not after the measurements
    dest = check_absent(args.out or unique_path("results", "fused-vs-native"), parser.error)
    header = ["framework", "batch", "horizon", "flow", "native_ms", "fused_ms", "native_over_fused",
              "ratio_q25", "ratio_q75", "fused_over_native_none", "compiled_ms", "native_over_compiled",
              "compile_s"]
    threads = ""
    if "torch" in args.framework:
        import torch

        if args.torch_threads is not None:
            torch.set_num_threads(args.torch_threads)
        threads = f" torch intra-op threads: {torch.get_num_threads()}."
    rows = []
    for framework in args.framework:
        for batch in args.batch:
            for horizon in args.horizon:
                times, compile_s = paired(framework, batch, horizon, args.flows, args.rounds, args.torch_compile,
                                          args.sim)
                for flow in args.flows:
                    n, f = np.asarray(times[(flow, "native")]), np.asarray(times[(flow, "fused")])
                    ratio = n / f
                    base = np.median(np.asarray(times[("none", "native")]) / f) if "none" in args.flows else np.nan
                    c = np.asarray(times.get((flow, "compiled"), [np.nan]))
                    rows.append([framework, batch, horizon, flow, np.median(n) * 1e3, np.median(f) * 1e3,
                                 np.median(ratio), *np.percentile(ratio, [25, 75]), 1 / base,
                                 np.median(c) * 1e3, np.median(n / c) if c.size == n.size else np.nan,
                                 compile_s.get(flow, np.nan)])
                    print(f"{framework:5s} b{batch:<4d} H{horizon:<4d} {flow:11s} native {rows[-1][4]:9.2f} ms  "
                          f"fused {rows[-1][5]:9.2f} ms  native/fused {rows[-1][6]:.2f}× "
                          f"[{rows[-1][7]:.2f}, {rows[-1][8]:.2f}]"
                          + (f"  compiled {rows[-1][10]:.2f} ms  native/compiled {rows[-1][11]:.2f}× "
                             f"(compile {rows[-1][12]:.0f} s)" if (flow, "compiled") in times else ""), flush=True)
    table = ["| framework | batch | H | flow | native ms | fused ms | native/fused (median of paired rounds) | IQR "
             "| torch.compile ms | native/compiled | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f}× | {r[7]:.2f}–{r[8]:.2f} | "
              + (f"{r[10]:.2f} | {r[11]:.2f}× | {r[12]:.0f} |" if np.isfinite(r[10]) else "— | — | — |") for r in rows]
    command = "python experiments/fused_vs_native.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with run_folder(dest) as folder:
        (folder / "ratios.md").write_text(f"Command: `{command.strip()}`, {args.rounds} paired rounds.{threads}\n\n" + "\n".join(table) + "\n")
        write_csv(folder / "ratios.csv", header, rows)
    print(f"wrote {dest}/ratios.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
