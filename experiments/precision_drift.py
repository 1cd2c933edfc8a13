"""float32 against float64 gradients over the horizon, per simulator and flow (``gradstop.precision``).

    python -m experiments.precision_drift [--quick] [--seeds 5] [--horizon 150] [--batch 8]
                                          [--flows none,input,combined] [--scales 1 10] [--out DIR]

For each simulator — pointmass, the 1–4-pole cartpole (``preset="literature"``) and the neural
sim — each seed draws an MLP policy (``--hidden``, default 64×64 tanh, gradstop's default
initialisation) and ``--batch`` initial states from ``sim.reset``; ``gs.precision`` then takes
every flow's gradient in float32 and in float64 from the same weights and states at every horizon
H ≤ ``--horizon`` (every H to 20, then every 5th), in JAX. An untrained MLP's actions are small,
so ``--scales`` also runs each policy with its output layer multiplied by the given factors: a
stronger feedback controller, closer to a trained one.

Writes into a new folder: ``drift.csv`` (sim, scale, seed, flow, horizon, relative error, cosine),
``first_below.csv`` (per run: the first H with cos < 0.99 and < 0.9, empty if none),
``table.md`` (the medians over seeds), ``drift.png`` (median 1 − cos against H per sim and flow)
and ``settings.json`` (settings, versions, wall-clock). ``--quick`` (pointmass and the 1-pole
cartpole, one seed, H ≤ 10, one scale) runs in well under a minute and is what the tests run.
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
from gradstop.health.precision import default_horizons  # noqa: E402
from gradstop.study.figures import claim_folder, run_script, write_settings  # noqa: E402
from gradstop.study.results import flow_color, run_folder, unique_path, write_csv  # noqa: E402
if __package__ in (None, ""):  # run as a file (python experiments/<name>.py): the repository root holds `experiments`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.study import SIMS  # noqa: E402
from sims import make  # noqa: E402

QUICK = ("pointmass", "cartpole-1")
FILES = ["drift.csv", "first_below.csv", "table.md", "drift.png"]


def scaled(policy, scale: float):
    """The policy with its output layer's weights and bias multiplied by ``scale``."""
    weights = gs.jax.get_weights(policy)
    weights[-2:] = [w * scale for w in weights[-2:]]
    return gs.jax.set_weights(policy, weights)


SCRIPT = "precision_drift"


def parse(argv=None) -> argparse.Namespace:
    """The script's settings (``--quick`` applied)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="pointmass and 1-pole cartpole, one seed, H ≤ 10 (tests)")
    ap.add_argument("--sims", nargs="+", choices=list(SIMS), default=list(SIMS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--horizon", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--flows", default="none,input,combined")
    ap.add_argument("--hidden", default="64,64")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--force", action="store_true", help="replace the files of an earlier run of this script in --out")
    ap.add_argument("--out", help="a new results folder (default: results/precision-drift-<time>)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sims, args.seeds, args.horizon, args.scales = [s for s in args.sims if s in QUICK] or list(QUICK), 1, 10, args.scales[:1]
    return args


def main(argv=None) -> None:
    args = parse(argv)
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    hidden = tuple(int(h) for h in args.hidden.split(","))
    horizons = default_horizons(args.horizon)
    out = args.out or unique_path("results", "precision-drift")
    if Path(out).exists():
        claim_folder(out, SCRIPT, force=args.force)  # only this script's earlier output, and only with --force
    started = time.perf_counter()
    rows, firsts = [], []
    for label in args.sims:
        name, params = SIMS[label]
        sim = make(name, backend="jax", **params)
        for scale in args.scales:
            for seed in range(args.seeds):
                policy = scaled(gs.jax.mlp(seed, sim.obs_dim, sim.action_dim, hidden=hidden, dtype=jnp.float64), scale)
                x0 = sim.reset(seed, args.batch, dtype=jnp.float64)
                p = gs.precision(policy, sim, flows=flows, horizons=horizons, x0=x0)
                rows += [dict(sim=label, scale=scale, seed=seed, **r) for r in p.rows()]
                below = {t: p.first_below(t) for t in (0.99, 0.9)}
                firsts += [dict(sim=label, scale=scale, seed=seed, flow=f, first_below_099=below[0.99][f],
                                first_below_09=below[0.9][f], max_rel_error=float(np.nanmax(p.rel_error[f])))
                           for f in p.flows]
            print(f"{label} scale {scale:g}: " + "; ".join(
                f"{f}: max rel. error {np.median([r['max_rel_error'] for r in firsts if r['sim'] == label and r['scale'] == scale and r['flow'] == f]):.2g}"
                for f in p.flows), flush=True)
    seconds = time.perf_counter() - started
    table = _table(firsts, args)
    print(table)
    with run_folder(out, replace=args.force) as folder:
        write_csv(folder / "drift.csv", list(rows[0]), [list(r.values()) for r in rows])
        write_csv(folder / "first_below.csv", list(firsts[0]), [["" if v is None else v for v in r.values()] for r in firsts])
        (folder / "table.md").write_text(table + "\n")  # inside the staging folder: published whole or not at all
        _plot(folder / "drift.png", rows, args, flows)
        write_settings(folder, SCRIPT, args, seconds=seconds, complete=True, files=FILES, horizons=horizons,
                       sims={k: SIMS[k] for k in args.sims}, seeds=list(range(args.seeds)))
    print(f"wrote {out} in {seconds:.0f} s")


def _table(firsts, args) -> str:
    """Median over seeds of the largest relative error, and the first H below cos 0.99 / 0.9 (seeds that reach it)."""
    lines = ["| sim | output scale | flow | largest relative error (median over seeds) | first H with cos < 0.99 | first H with cos < 0.9 |",
             "|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["sim"], r["scale"], r["flow"]) for r in firsts)
    for sim, scale, flow in keys:
        group = [r for r in firsts if (r["sim"], r["scale"], r["flow"]) == (sim, scale, flow)]

        def first(key):
            hits = [r[key] for r in group if r[key] is not None]
            return "never" if not hits else f"{int(np.median(hits))} (median of {len(hits)}/{len(group)} seeds)"

        lines.append(f"| {sim} | {scale:g} | {flow} | {np.median([r['max_rel_error'] for r in group]):.2g} | "
                     f"{first('first_below_099')} | {first('first_below_09')} |")
    return "\n".join(lines)


def _plot(path, rows, args, flows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = list(dict.fromkeys(r["sim"] for r in rows))
    cols = min(3, len(sims))
    nrows = -(-len(sims) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), dpi=120, squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, sim in zip(axes.flat, sims):
        for k, scale in enumerate(args.scales):
            for flow in flows:
                sel = [r for r in rows if r["sim"] == sim and r["scale"] == scale and r["flow"] == flow]
                hs = sorted({r["horizon"] for r in sel})
                gap = [np.median([np.clip(1 - r["cosine"], 1e-16, None) for r in sel if r["horizon"] == h]) for h in hs]
                ax.plot(hs, gap, styles[k % 4], color=flow_color(flow), linewidth=1.3,
                        label=f"{flow}, scale {scale:g}")
        for level in (0.01, 0.1):
            ax.axhline(level, color="grey", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(sim, fontsize=10)
        ax.set_xlabel("horizon H")
        ax.set_ylabel("1 − cos(g_float32, g_float64)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(sims):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"float32 gradient drift, median over {args.seeds} seed(s), batch {args.batch} (dotted: cos 0.99 and 0.9)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


if __name__ == "__main__":
    run_script(main)
