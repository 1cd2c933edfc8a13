"""``gradstop diagnose`` and ``gradstop check``: gradient health from the command line, in files and pictures.

    gradstop diagnose --sim cartpole --preset literature --param poles=3 --flows none,input,combined --horizon 150 --out DIR
    gradstop check --sim cartpole --param poles=3 --backend torch --out DIR

``diagnose`` writes, into a new folder (never over an existing one):

    diagnose.png    log-scale adjoint norms |λ_t| against t (one colour per flow; solid: batch mean, dashed:
                    batch max), the sign agreement of each step's ∇θ contributions across flows, and
                    1 − cos(g₃₂, g₆₄) of the float32 gradient against float64 over the horizon
    trace.csv       per flow and t: λ and μ norms (mean, max) and the step's ∇θ contribution norm
    pairs.csv       per pair of flows and t: cosine and sign agreement of the step contributions
    precision.csv   per flow and horizon: the float32 gradient's relative error and cosine against float64
    summary.json    the settings, package versions, gradient norms and cosines, non-finite findings, and
                    the horizons where float32 first drops below cos 0.99 and 0.9

``check`` writes check.csv (one row per block and flow comparison), check.png (the errors against
their tolerances, log scale) and summary.json, prints the table, and exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from gradstop.study.results import flow_color, run_folder, unique_path, write_csv, write_json

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


DIAGNOSE_EPILOG = """\
writes into a new folder (--out): diagnose.png (adjoint norms |λ_t|, step sign
agreement, float32 drift), trace.csv, pairs.csv, precision.csv, summary.json.

examples:
  # where the 3-pole swing-up's gradient grows, for three flows
  gradstop diagnose --sim cartpole --preset literature --param poles=3 \\
      --flows none,input,combined --horizon 150

  # the policy a gradstop train run learned (its --hidden must match)
  gradstop diagnose --sim cartpole --hidden 64,64 --weights results/cp/none/policy.npz"""

CHECK_EPILOG = """\
writes into a new folder (--out): check.csv, check.png (errors against their
tolerances), summary.json; prints the table. Exit status 1 if a check failed.

examples:
  gradstop check --sim cartpole --param poles=3 --backend torch
  gradstop check --sim mypackage.mymodule:MySim --flows none,input --horizon 4"""


def add_parsers(sub) -> None:
    """Add the ``diagnose`` and ``check`` subcommands to the ``gradstop`` parser."""
    raw = argparse.RawDescriptionHelpFormatter
    d = sub.add_parser("diagnose", help="per-step adjoint traces, float32 drift and the origin of any NaN, as figure and CSV",
                       description="Trace a rollout's gradient step by step for several flows: adjoint norms, how\n"
                       "the flows' per-step contributions agree, where a NaN starts, float32 against float64.",
                       epilog=DIAGNOSE_EPILOG, formatter_class=raw)
    problem = d.add_argument_group("simulator and policy")
    _common(problem)
    problem.add_argument("--weights", metavar="NPZ", help="the policy's weights: policy.npz of a gradstop train run "
                           "(--hidden must match; default: fresh weights from --seed)")
    t = d.add_argument_group("the trace")
    t.add_argument("--flows", "--flow", dest="flows", default="none,input,combined", metavar="FLOWS",
                   help="comma-separated flows (default: none,input,combined)")
    t.add_argument("--horizon", type=int, default=150, metavar="H", help="rollout length (default: 150)")
    t.add_argument("--batch", type=int, default=8, metavar="N", help="initial states, drawn by sim.reset from --seed (default: 8)")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32", metavar="float32|float64",
                   help="the trace's dtype (default: float32)")
    t.add_argument("--memory", choices=("residuals", "recompute"), default="residuals", metavar="residuals|recompute",
                   help="the fused sweep's memory policy (default: residuals)")
    t.add_argument("--no-contributions", dest="contributions", action="store_false",
                   help="skip the per-step comparison of ∇θ contributions (faster at small batch)")
    t.add_argument("--no-precision", dest="precision", action="store_false", help="skip the float32-vs-float64 sweep over horizons")
    b = d.add_argument_group("the empirical-bias test (first-order against zeroth-order gradients, per horizon)")
    b.add_argument("--bias-test", metavar="H,H,...", type=_horizons,
                   help="horizons at which to compare each first-order flow's gradient with a zeroth-order estimate "
                   "(‖ĝ1 − ĝ0‖ against ĝ0's confidence bound ε; writes bias.csv). Default: off")
    b.add_argument("--bias-samples", type=int, default=16, metavar="N", help="noisy rollouts per initial state and estimator (default: 16)")
    b.add_argument("--bias-sigma", type=float, default=0.1, metavar="σ", help="standard deviation of the action noise (default: 0.1)")
    b.add_argument("--bias-bound", type=float, default=10.0, metavar="L",
                   help="the bound on a per-sample gradient's norm in ε's Bernstein bound (default: 10)")
    _output(d)
    c = sub.add_parser("check", help="hold a simulator's derivatives to finite differences and every flow's native gradient to fused",
                       description="Check a simulator's derivatives against finite differences (in float64), and\n"
                       "every flow's native gradient against the fused implementation's.",
                       epilog=CHECK_EPILOG, formatter_class=raw)
    _common(c.add_argument_group("simulator and policy"))
    k = c.add_argument_group("the checks")
    k.add_argument("--flows", "--flow", dest="flows", default="none,input,state,all,decay:0.9,truncate:4,combined,directional",
                   metavar="FLOWS", help="flows compared native against fused (default: all bases, a decay and a truncation)")
    k.add_argument("--horizon", type=int, default=8, metavar="H", help="the short rollout's length (default: 8)")
    k.add_argument("--batch", type=int, default=4, metavar="N", help="states per check (default: 4)")
    k.add_argument("--warmup", type=int, default=3, metavar="N", help="policy steps from sim.reset before the blocks are checked (default: 3)")
    k.add_argument("--directions", type=int, default=4, metavar="N", help="random directions per block (default: 4)")
    k.add_argument("--rtol", type=float, default=1e-5, metavar="X", help="a block's relative tolerance (default: 1e-5)")
    _output(c)


def _horizons(text: str) -> list[int]:
    try:
        hs = [int(h) for h in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bias-test takes comma-separated integer horizons, e.g. 10,50,150; got {text!r}") from None
    if not hs or min(hs) < 1:
        raise argparse.ArgumentTypeError(f"--bias-test horizons must be integers ≥ 1, got {text!r}")
    return hs


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument_group("output").add_argument(
        "--out", metavar="DIR", help="a new results folder (default: results/<command>-<sim>-<time>)")


def _common(p: argparse.ArgumentParser) -> None:
    from sims import BUILTINS

    p.add_argument("--sim", required=True, help=f"a built-in simulator ({', '.join(BUILTINS)}), brax:<env>, a name given to "
                   "sims.register, or your own as package.module:Class, importable from the current directory")
    p.add_argument("--preset", metavar="NAME", help="a named parameter set, e.g. cartpole's 'literature'")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a simulator parameter, repeatable: "
                   "--param poles=3 --param task=balance")
    p.add_argument("--backend", choices=("jax", "torch"), default="jax", metavar="jax|torch", help="framework (default: jax)")
    p.add_argument("--hidden", default="64,64", metavar="W,W,…", help="the MLP policy's hidden widths (default: 64,64)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="policy weights and initial states (default: 0)")


def _setup(ns: argparse.Namespace, dtype: str):
    """(sim, policy, x0, sim label) from the flags; enables JAX's 64-bit mode first (float64 references need it)."""
    from gradstop.cli.train import parse_sim_params

    if ns.backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    import gradstop as gs
    from sims import make

    params = parse_sim_params(ns.param)
    sim = make(ns.sim, backend=ns.backend, preset=ns.preset, **params)
    try:
        hidden = tuple(int(h) for h in ns.hidden.split(",") if h.strip())
    except ValueError:
        raise ValueError(f"--hidden takes comma-separated integers, got {ns.hidden!r}") from None
    if ns.backend == "jax":
        import jax.numpy as jnp

        policy = gs.jax.mlp(ns.seed, sim.obs_dim, sim.action_dim, hidden=hidden, dtype=getattr(jnp, dtype))
    else:
        import torch

        policy = gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=hidden, dtype=getattr(torch, dtype), seed=ns.seed)
    if getattr(ns, "weights", None):
        path = Path(ns.weights)
        if not path.is_file():
            raise ValueError(f"--weights {path}: no such file (give the policy.npz of a gradstop train run)")
        weights = list(np.load(path).values())
        shapes = [tuple(np.shape(w)) for w in gs.get_weights(policy)]
        if [w.shape for w in weights] != shapes:
            _weights_mismatch(path, weights, shapes, sim, ns)
        policy = _set(policy, weights, ns.backend)
    x0 = sim.reset(ns.seed, getattr(ns, "batch", 1), dtype=_dtype(ns.backend, dtype))
    label = ns.sim + (f" ({ns.preset})" if ns.preset else "") + "".join(f", {k}={v}" for k, v in params.items())
    return sim, policy, x0, label


def _describe(sim) -> dict:
    return sim.describe() if hasattr(sim, "describe") else {"name": getattr(sim, "name", type(sim).__name__)}


def _weights_mismatch(path, weights, shapes, sim, ns):
    """Why ``weights`` (W: (out, in), b: (out,) per layer) do not fit the MLP of ``shapes``: another simulator's
    observation or action size, or other hidden widths."""
    kernels = [w for w in weights if np.ndim(w) == 2]
    stored = [tuple(np.shape(w)) for w in weights]
    if not kernels or len(weights) % 2:
        raise ValueError(f"--weights {path} holds arrays of shapes {stored}, which are not an MLP's (weight, bias) pairs "
                         "(weights of a --policy gaussian run, which end with log σ, are not read here yet)")
    obs, act = kernels[0].shape[1], kernels[-1].shape[0]
    if obs != sim.obs_dim or act != sim.action_dim:
        raise ValueError(f"--weights {path} is a policy with observation size {obs} and action size {act}, but {ns.sim} "
                         f"observes {sim.obs_dim} values and takes {sim.action_dim}: the weights were trained on another "
                         "simulator (or other --param); give that run's --sim and --param")
    widths = ",".join(str(k.shape[0]) for k in kernels[:-1])
    raise ValueError(f"--weights {path} holds an MLP with hidden widths {widths or '(none)'}, not --hidden {ns.hidden}: "
                     f"pass --hidden {widths}")


def _set(policy, weights, backend):
    import gradstop as gs

    return getattr(gs, backend).set_weights(policy, [np.asarray(w) for w in weights])


def _dtype(backend: str, name: str):
    if backend == "jax":
        import jax.numpy as jnp

        return getattr(jnp, name)
    import torch

    return getattr(torch, name)


def _check_sizes(ns: argparse.Namespace) -> None:
    """--horizon and --batch, before anything is built."""
    from gradstop._checks import check_horizon

    check_horizon(ns.horizon)
    if ns.batch < 1:
        raise ValueError(f"--batch must be ≥ 1, got {ns.batch}")


def _prepare(ns: argparse.Namespace, command: str) -> tuple[list[str], Path]:
    """(the flows' names, a results folder that does not exist yet), checked before anything is built."""
    from gradstop.health.diagnose import parse_flows

    flows = [f.name for f in parse_flows(ns.flows)]
    _check_sizes(ns)
    out = Path(ns.out) if ns.out else unique_path("results", f"{command}-{ns.sim.replace(':', '-')}")
    if out.exists():
        raise FileExistsError(f"results folder {out} already exists: choose another --out, or move it away first")
    return flows, out


def diagnose(ns: argparse.Namespace) -> int:
    """Run ``gradstop diagnose``; returns the exit code."""
    import gradstop as gs
    from gradstop._io import versions

    flows, out = _prepare(ns, "diagnose")
    sim, policy, x0, label = _setup(ns, ns.dtype)
    tick = time.perf_counter()
    bias = None if not ns.bias_test else dict(horizons=ns.bias_test, samples=ns.bias_samples, sigma=ns.bias_sigma,
                                              bound=ns.bias_bound, key=ns.seed)
    d = gs.diagnose(policy, sim, flows=flows, horizon=ns.horizon, x0=x0, memory=ns.memory, contributions=ns.contributions,
                    bias_test=bias)
    seconds = time.perf_counter() - tick
    p = gs.precision(policy, sim, flows=flows, horizon=ns.horizon, x0=x0) if ns.precision else None
    print(d.summary())
    if p is not None:
        print(p.summary())
    summary = {
        "command": "diagnose", "sim": label, "sim_describe": _describe(sim), "backend": ns.backend, "dtype": ns.dtype,
        "flows": flows, "horizon": ns.horizon, "batch": ns.batch, "seed": ns.seed, "hidden": ns.hidden,
        "weights": ns.weights, "memory": ns.memory, "versions": versions(ns.backend), "diagnose_seconds": seconds,
        "loss": d.loss, "gradient_norms": d.norms, "cosine": {f"{a} | {b}": v for (a, b), v in d.cosine.items()},
        "sign_agreement": {f"{a} | {b}": v for (a, b), v in d.agreement.items()},
        "nonfinite": [dataclasses.asdict(n) | {"text": str(n)} for n in d.nonfinite],
        "float32_first_below": ({str(t): p.first_below(t) for t in (0.99, 0.9)} if p is not None else None),
        "bias_test": {name: {"horizons": t.horizons.tolist(), "fires": t.fires.tolist(), "samples": t.samples,
                             "sigma": t.sigma, "bound": t.bound, "delta": t.delta} for name, t in d.bias.items()} or None,
    }
    with run_folder(out) as folder:
        rows = d.rows()
        write_csv(folder / "trace.csv", list(rows[0]), [list(r.values()) for r in rows])
        pairs = d.pair_rows()
        write_csv(folder / "pairs.csv", ["flow_a", "flow_b", "t", "cosine", "sign_agreement"], [list(r.values()) for r in pairs])
        if p is not None:
            prec = p.rows()
            write_csv(folder / "precision.csv", list(prec[0]), [list(r.values()) for r in prec])
        plot_diagnosis(folder / "diagnose.png", d, p, title=f"{label}, {ns.backend} {ns.dtype}, batch {ns.batch}")
        if d.bias:
            write_csv(folder / "bias.csv", ["flow", "horizon", "bias", "eps", "var0", "var1", "fires"],
                      [[name, int(h), float(b), float(e), float(v0), float(v1), bool(f)] for name, t in d.bias.items()
                       for h, b, e, v0, v1, f in zip(t.horizons, t.bias, t.eps, t.var0, t.var1, t.fires)])
        write_json(folder / "summary.json", summary)
    print(f"wrote {out}")
    return EXIT_OK


def plot_diagnosis(path, d, p=None, *, title: str) -> None:
    """The diagnosis figure: adjoint norms, step sign agreement, and float32 drift (if ``p``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if p is not None else 2
    fig, axes = plt.subplots(panels, 1, figsize=(7.0, 2.7 * panels + 0.6), dpi=120)
    ax = axes[0]
    t = np.arange(d.horizon + 1)
    for name in d.components:
        color = flow_color(name)
        for values, style, label in ((d.lam_mean[name], "-", f"{name} (batch mean)"), (d.lam_max[name], "--", None)):
            shown = np.where(values > 0, values, np.nan)
            ax.plot(t, shown, style, color=color, label=label, linewidth=1.4)
    if any(np.nanmax(np.where(d.lam_max[n] > 0, d.lam_max[n], np.nan), initial=0) > 0 for n in d.components):
        ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("|λ_t|  (dashed: batch max)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    if d.step_agreement:
        for (a, b), values in d.step_agreement.items():
            ax.plot(np.arange(d.horizon), values, color=flow_color(b), label=f"{a} vs {b}", linewidth=1.2)
        for (a, b), value in d.agreement.items():
            if (a, b) in d.step_agreement:
                ax.axhline(value, color=flow_color(b), linestyle=":", linewidth=1.0)
        ax.legend(fontsize=8, title="dotted: whole gradients", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "per-step contributions not traced (--no-contributions), or one flow only",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step t")
    ax.set_ylabel("sign agreement of step t's ∇θ")
    ax.grid(alpha=0.3)
    if p is not None:
        ax = axes[2]
        for name in p.flows:
            gap = np.clip(1.0 - p.cosine[name], 1e-16, None)
            ax.plot(p.horizons, gap, color=flow_color(name), label=name, linewidth=1.4, marker=".", markersize=3)
        for level in (0.01, 0.1):
            ax.axhline(level, color="grey", linestyle=":", linewidth=1.0)
        ax.set_yscale("log")
        ax.set_xlabel("horizon H")
        ax.set_ylabel("1 − cos(g_float32, g_float64)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="dotted: cos 0.99, 0.9", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def check(ns: argparse.Namespace) -> int:
    """Run ``gradstop check``; returns the exit code (1 if a check failed)."""
    import gradstop as gs
    from gradstop._io import versions

    flows, out = _prepare(ns, "check")
    sim, policy, _, label = _setup(ns, "float64")
    report = gs.check_gradients(sim, policy, flows=flows, horizon=ns.horizon, batch=ns.batch, seed=ns.seed,
                                warmup=ns.warmup, directions=ns.directions, rtol=ns.rtol)
    print(report)
    with run_folder(out) as folder:
        write_csv(folder / "check.csv", ["check", "error", "tolerance", "passed", "detail"],
                  [[r["check"], r["error"], r["tolerance"], r["passed"], r["detail"]] for r in report.rows])
        _plot_check(folder / "check.png", report, title=f"gradient check: {label} ({ns.backend})")
        write_json(folder / "summary.json", {"command": "check", "sim": label, "sim_describe": _describe(sim),
                                             "backend": ns.backend, "flows": flows, "horizon": ns.horizon, "batch": ns.batch,
                                             "seed": ns.seed, "warmup": ns.warmup, "directions": ns.directions,
                                             "rtol": ns.rtol, "passed": report.passed,
                                             "failures": [r["check"] for r in report.failures],
                                             "versions": versions(ns.backend)})
    print(f"wrote {out}")
    return EXIT_OK if report.passed else EXIT_FAILED


def _plot_check(path, report, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.rows
    fig, ax = plt.subplots(figsize=(7.0, 0.28 * len(rows) + 1.2), dpi=120)
    y = np.arange(len(rows))[::-1]
    errors = [max(r["error"], 1e-18) for r in rows]
    ax.barh(y, errors, color=["tab:green" if r["passed"] else "tab:red" for r in rows])
    ax.scatter([r["tolerance"] for r in rows], y, marker="|", color="black", s=120, label="tolerance", zorder=3)
    ax.set_yticks(y, [r["check"] for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("relative error (red: above its tolerance)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


__all__ = ["add_parsers", "diagnose", "check", "plot_diagnosis"]
