"""The exploding-gradient picture: each flow's gradient norm, and cos(∇input, ∇none), against the horizon.

    python -m experiments.gradient_norms [--quick] [--seeds 5] [--states 8] [--horizon 150]
                                         [--flows none,input,state,all,combined,directional,decay:0.9,truncate:10]
                                         [--sims pointmass cartpole-1 ...] [--out DIR]

For each simulator — pointmass, the 1–4-pole cartpole (``preset="literature"``: T = 1 s in 100
steps, loss 1 − mean cos θ at the final step, so H > 100 runs past the published horizon) and the
neural sim — each seed draws an MLP policy (64×64 tanh, gradstop's default initialisation, untrained)
and ``--states`` initial states from ``sim.reset``; every (seed, state) pair is one sample, whose
gradient (batch of one, float64, JAX) is taken for every flow at every horizon H ≤ ``--horizon``
(every H to 20, then every 5th). One compiled program per simulator serves every horizon, seed and
state (``gradstop.jax.precision``: the horizon-n loss is the longest rollout's with later costs
masked). The figure shows the median over samples with the interquartile range shaded, log scale
for the norms.

Writes into a new folder: ``norms.csv`` (one row per sample, flow and horizon: the gradient norm and
cos(∇input, ∇none) of that sample), ``summary.csv`` (median and quartiles per sim, flow and
horizon), ``gradient-norms.png`` and ``settings.json`` (settings, versions, wall-clock). ``--quick``
(pointmass and the 1-pole cartpole, one seed, two states, H ≤ 10) runs in well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradstop as gs  # noqa: E402
from gradstop.health.diagnose import parse_flows  # noqa: E402
from gradstop.jax.precision import gradients_by_horizon  # noqa: E402
from gradstop.health.precision import default_horizons  # noqa: E402
from gradstop.study.figures import claim_folder, run_script, write_settings  # noqa: E402
from gradstop.study.results import flow_color, run_folder, unique_path, write_csv  # noqa: E402
if __package__ in (None, ""):  # run as a file (python experiments/<name>.py): the repository root holds `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.study import SIMS  # noqa: E402
from sims import make  # noqa: E402

FLOWS = "none,input,state,all,combined,directional,decay:0.9,truncate:10"
FILES = ["norms.csv", "summary.csv", "gradient-norms.png"]


SCRIPT = "gradient_norms"


def parse(argv=None) -> argparse.Namespace:
    """The script's settings (``--quick`` applied)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="pointmass and 1-pole cartpole, one seed, two states, H ≤ 10")
    ap.add_argument("--sims", nargs="+", choices=list(SIMS), default=list(SIMS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--states", type=int, default=8, help="initial states per seed (each its own sample)")
    ap.add_argument("--horizon", type=int, default=150)
    ap.add_argument("--flows", default=FLOWS)
    ap.add_argument("--hidden", default="64,64")
    ap.add_argument("--force", action="store_true", help="replace the files of an earlier run of this script in --out")
    ap.add_argument("--out", help="a new results folder (default: results/gradient-norms-<time>)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sims, args.seeds, args.states, args.horizon = ["pointmass", "cartpole-1"], 1, 2, 10
        args.flows = "none,input,combined"
    for name in ("seeds", "states", "horizon"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be ≥ 1, got {getattr(args, name)}")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    flows = parse_flows(args.flows)
    names = [f.name for f in flows]
    wanted = parse_flows(sorted({*names, "none", "input"}, key=lambda n: (n not in names, n)))  # the cosine needs both
    hidden = tuple(int(h) for h in args.hidden.split(","))
    horizons = default_horizons(args.horizon)
    out = args.out or unique_path("results", "gradient-norms")
    if Path(out).exists():
        claim_folder(out, SCRIPT, force=args.force)  # only this script's earlier output, and only with --force
    started = time.perf_counter()
    rows = []
    for label in args.sims:
        name, params = SIMS[label]
        sim = make(name, backend="jax", **params)
        tick = time.perf_counter()
        for seed in range(args.seeds):
            policy = gs.jax.mlp(seed, sim.obs_dim, sim.action_dim, hidden=hidden, dtype=jnp.float64)
            states = sim.reset(seed, args.states, dtype=jnp.float64)
            for i in range(args.states):
                g = gradients_by_horizon(policy, sim, wanted, horizons, states[i:i + 1], None, 1, "float64")
                a, b = g["input"], g["none"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                for f in names:
                    norms = np.linalg.norm(g[f], axis=1)
                    rows += [dict(sim=label, seed=seed, state=i, flow=f, horizon=h, norm=float(norms[k]),
                                  cos_input_none=float(cos[k])) for k, h in enumerate(horizons)]
        print(f"{label}: {args.seeds * args.states} samples × {len(horizons)} horizons in {time.perf_counter() - tick:.0f} s",
              flush=True)
    seconds = time.perf_counter() - started
    summary = _summary(rows)
    with run_folder(out, replace=args.force) as folder:
        write_csv(folder / "norms.csv", list(rows[0]), [list(r.values()) for r in rows])
        write_csv(folder / "summary.csv", list(summary[0]), [list(r.values()) for r in summary])
        _plot(folder / "gradient-norms.png", summary, args, names)
        write_settings(folder, SCRIPT, args, seconds=seconds, complete=True, files=FILES, horizons=horizons,
                       sims={k: SIMS[k] for k in args.sims}, samples_per_sim=args.seeds * args.states, dtype="float64",
                       seeds=list(range(args.seeds)), policy=f"untrained MLP {args.hidden} tanh, gs.jax.mlp(seed)")
    print(f"wrote {out} in {seconds:.0f} s")


def _summary(rows) -> list[dict]:
    """Median and quartiles over samples of the norm and the cosine, per sim, flow and horizon."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["sim"], r["flow"], r["horizon"]), []).append(r)
    out = []
    for (sim, flow, h), group in groups.items():
        norm = np.array([r["norm"] for r in group])
        cos = np.array([r["cos_input_none"] for r in group])
        q = np.nanpercentile(norm, [25, 50, 75])
        c = np.nanpercentile(cos, [25, 50, 75]) if np.isfinite(cos).any() else [np.nan] * 3
        out.append(dict(sim=sim, flow=flow, horizon=h, samples=len(group), norm_q25=q[0], norm_median=q[1], norm_q75=q[2],
                        cos_q25=c[0], cos_median=c[1], cos_q75=c[2]))
    return out


def _plot(path, summary, args, names) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = list(dict.fromkeys(r["sim"] for r in summary))
    fig, axes = plt.subplots(2, len(sims), figsize=(3.6 * len(sims), 6.4), dpi=120, squeeze=False)
    for j, sim in enumerate(sims):
        ax = axes[0, j]
        for flow in names:
            sel = [r for r in summary if r["sim"] == sim and r["flow"] == flow]
            h = [r["horizon"] for r in sel]
            ax.plot(h, [r["norm_median"] for r in sel], color=flow_color(flow), label=flow, linewidth=1.3)
            ax.fill_between(h, [r["norm_q25"] for r in sel], [r["norm_q75"] for r in sel], color=flow_color(flow), alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(sim, fontsize=10)
        ax.set_xlabel("horizon H")
        ax.set_ylabel("|∇θ L|")
        ax.grid(alpha=0.3)
        ax = axes[1, j]
        sel = [r for r in summary if r["sim"] == sim and r["flow"] == names[0]]
        h = [r["horizon"] for r in sel]
        ax.plot(h, [r["cos_median"] for r in sel], color=flow_color("input"), linewidth=1.3)
        ax.fill_between(h, [r["cos_q25"] for r in sel], [r["cos_q75"] for r in sel], color=flow_color("input"), alpha=0.2)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("horizon H")
        ax.set_ylabel("cos(∇input, ∇none)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, title="flow", title_fontsize=7)
    fig.suptitle(f"gradient norm and cos(∇input, ∇none) vs horizon: median and interquartile range over "
                 f"{args.seeds} seeds × {args.states} initial states (untrained MLP {args.hidden}, float64)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


if __name__ == "__main__":
    run_script(main)
