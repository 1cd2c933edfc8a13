"""The multi-pole cartpole study: final test loss per gradient flow for 1–4 poles, in the published setting.

    python -m experiments.cartpole_study [--quick] [--parts main clipping zero-last shuffled] [--seeds 3]
                                         [--out DIR] [--ray local|auto|HOST:PORT] [--plot-only]

The setting in which the combined update was proposed (Schnell & Thuerey, "Stabilizing
Backpropagation Through Time to Learn Complex Physics", ICLR 2024; their CartPole/Runs/01 script),
every detail an option below:

- dynamics ``make("cartpole", preset="literature", poles=N)``: g 9.8, m 0.1, M 1.1, l 0.5, F = a,
  T = 1 s in H = 100 steps of semi-implicit Euler; loss 1 − mean_i cos θ_i at the final step;
- the published initial states (the preset's ``init="published"``): x, ẋ, θ̇_i ∈ U(−1, 1),
  θ_i = π + U(−1, 1)·π/6; 256 training and 256 test states drawn once per seed; batches of 8 in a
  fixed order (32 updates an epoch); 1000 epochs;
- MLP 2×100 tanh with biases, Keras' default initialisation (``weight_init="glorot"``: glorot-uniform
  weights, zero biases) and a linear output; the published script does NOT zero its last layer
  (``zero=False``), the ``zero-last`` part does;
- Adam, lr 1e-3, ε 1e-7 (Keras'; its ε is added to the un-corrected √v, ours to the corrected one);
  clipping none, by value (each component to ±1) or by global norm (to 1);
- the policy observes the raw state object by object, (x, ẋ, θ_1, θ̇_1, …) as the published code
  feeds it (``observation="raw"``), or gradstop's (x, sin θ, cos θ, ẋ, θ̇) (``"sincos"``);
- the published code ran one seed (42) per setting; we run ``--seeds`` seeds, each its own initial
  weights, training and test states.

Flows: the published none (F), input (P), combined (C), all (S), and ours: directional,
decay:0.9, truncate:10. Parts (a grid each; ``--parts`` picks):

    main        every flow × observation (raw, sincos) × poles, no clipping
    clipping    the published flows × clip by value / by norm, raw observation
    zero-last   the published flows, last layer zero-initialised, raw observation
    shuffled    the published flows, training set reshuffled every epoch, raw observation

Every run is a ``gradstop.trainers`` run in ``OUT/runs/<name>`` of a sweep (``gradstop.sweep``):
rerun the command to resume (finished runs are skipped), ``--ray`` to spread the runs over Ray
workers, ``--plot-only`` to draw from the runs finished so far. Writes ``final.csv`` (a row per
run), ``table.csv`` (mean, spread and count per part, observation, poles and flow), ``pairs.csv``
(each flow against ``none`` on the same seed), ``curves.csv`` (test loss per evaluation),
``cartpole-study.png`` (grouped bars: median final test loss per flow and pole count, a dot per
seed), ``cartpole-study-curves.png`` and ``settings.json``. ``--quick`` (1 pole, 2 flows, 2 epochs
on 16 states) runs in well under a minute.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tyro

from gradstop.figures import SweepOptions, finish_sweep_figure, run_script, sweep_runs, write_tables
from gradstop.results import flow_color, save_figure
from gradstop.sweep import Run
from gradstop.trainers.config import TrainConfig

SCRIPT = "cartpole_study"
PUBLISHED_FLOWS = ("none", "input", "combined", "all")
PARTS = ("main", "clipping", "zero-last", "shuffled")


@dataclasses.dataclass
class Args(SweepOptions):
    parts: tuple[str, ...] = PARTS
    """which grids to run: main, clipping, zero-last, shuffled (see the module docstring)"""
    poles: tuple[int, ...] = (1, 2, 3, 4)
    """pole counts N"""
    flows: tuple[str, ...] = ("none", "input", "combined", "all", "directional", "decay:0.9", "truncate:10")
    """flows of the main part (the other parts run the published ones among them)"""
    observations: tuple[str, ...] = ("raw", "sincos")
    """observations of the main part (the other parts use raw, the published one)"""
    seeds: int = 3
    """seeds per setting (0, 1, …): initial weights, training and test states"""
    epochs: int = 1000
    """epochs of 256 // 8 = 32 updates"""
    train_size: int = 256
    """training initial states, drawn once"""
    test_size: int = 256
    """test initial states, drawn once"""
    batch: int = 8
    """initial states per update"""
    horizon: int = 100
    """steps per rollout (T = 1 s)"""
    hidden: tuple[int, ...] = (100, 100)
    """hidden widths of the tanh MLP"""
    weight_init: str = "glorot"
    """initial weights: glorot (Keras' default, as published) or torch"""
    lr: float = 1e-3
    """Adam's learning rate"""
    adam_eps: float = 1e-7
    """Adam's ε (Keras' default)"""
    clip: float = 1.0
    """the clipping part's bound (the published cnum): ±clip per component, or global norm clip"""
    impl: str = "fused"
    """rollout implementation (the same gradients; fused is 1.4–2.3× faster here)"""
    eval_every: int = 10
    """evaluate the test loss every this many epochs (and after the last)"""
    quick: bool = False
    """a smoke run: 1 pole, flows none and combined, 2 seeds, 2 epochs on 16 states (tests)"""
    out: str = "results/cartpole-study"
    """the study's folder (resumed if it holds this study)"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    if args.quick:
        args = dataclasses.replace(args, parts=tuple(p for p in args.parts if p in ("main", "clipping")), poles=(1,),
                                   flows=("none", "combined"), observations=("raw",), seeds=2, epochs=2,
                                   train_size=16, test_size=16, eval_every=1)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose from {PARTS}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {args.seeds}")
    return args


# -- the grid ---------------------------------------------------------------------------------------
def config(args: Args, poles: int, flow: str, seed: int, observation: str = "raw", **changes) -> TrainConfig:
    """One run of the study: the published setting, then ``changes`` (clip_value, clip_norm, zero_last, shuffle)."""
    base = dict(sim="cartpole", preset="literature", sim_params={"poles": poles, "observation": observation},
                horizon=args.horizon, flow=flow, impl=args.impl, data="fixed", train_size=args.train_size,
                test_size=args.test_size, batch=args.batch, shuffle=False, epochs=args.epochs, eval_every=args.eval_every,
                hidden=args.hidden, activation="tanh", zero_last=False, weight_init=args.weight_init, optimizer="adam",
                lr=args.lr, adam_eps=args.adam_eps, seed=seed, dtype="float32", checkpoint_every=50)
    return TrainConfig(**{**base, **changes})


def runs(args: Args) -> list[Run]:
    """Every run of the chosen parts, named part=…,obs=…,poles=…,flow=…,seed=…."""
    published = [f for f in args.flows if f in PUBLISHED_FLOWS]
    grids = {  # part -> [(setting label, observations, flows, changes)]
        "main": [("none", args.observations, args.flows, {})],
        "clipping": [("value", ("raw",), published, dict(clip_value=args.clip)),
                     ("norm", ("raw",), published, dict(clip_norm=args.clip))],
        "zero-last": [("zero-last", ("raw",), published, dict(zero_last=True))],
        "shuffled": [("shuffled", ("raw",), published, dict(shuffle=True))],
    }
    out = []
    for part in args.parts:
        for label, observations, flows, changes in grids[part]:
            for obs in observations:
                for poles in args.poles:
                    for flow in flows:
                        for seed in range(args.seeds):
                            name = f"part={part},setting={label},obs={obs},poles={poles},flow={flow.replace(':', '_')},seed={seed}"
                            out.append(Run(name, config(args, poles, flow, seed, obs, **changes)))
    return out


def describe(run: Run) -> dict:
    """The grid coordinates of a run, read back from its name."""
    return dict(kv.split("=", 1) for kv in run.name.split(","))


# -- the figure -------------------------------------------------------------------------------------
PANELS = [("main", "none", "raw", "raw observation (published)"), ("main", "none", "sincos", "sin/cos observation"),
          ("clipping", "value", "raw", "raw, clip by value ±1"), ("clipping", "norm", "raw", "raw, clip by global norm 1"),
          ("zero-last", "zero-last", "raw", "raw, last layer zero-initialised"), ("shuffled", "shuffled", "raw", "raw, reshuffled every epoch")]


def tables(all_runs: list[Run], records: dict) -> tuple[list, list, list, list]:
    """final (a row per run), table (per panel, poles, flow), pairs (flow vs none, same seed), curves (per evaluation)."""
    final, curves = [], []
    for r in all_runs:
        d, rec = describe(r), records.get(r.name)
        s = (rec or {}).get("summary") or {}
        status = rec["status"] if rec else "pending"
        final.append(dict(part=d["part"], setting=d["setting"], obs=d["obs"], poles=int(d["poles"]), flow=r.config.flow,
                          seed=int(d["seed"]), status=status, final_test_loss=s.get("final_test_loss"),
                          best_test_loss=s.get("best_test_loss"), final_test_success=s.get("final_test_success"),
                          train_seconds=s.get("seconds")))
        for e in (rec or {}).get("evals", []):
            curves.append(dict(part=d["part"], setting=d["setting"], obs=d["obs"], poles=int(d["poles"]), flow=r.config.flow,
                               seed=int(d["seed"]), epoch=e["epoch"], test_loss=e["test_loss"], test_success=e["test_success"]))
    table, groups = [], {}
    for row in final:
        groups.setdefault((row["part"], row["setting"], row["obs"], row["poles"], row["flow"]), []).append(row)
    for (part, setting, obs, poles, flow), rows in groups.items():
        done = np.asarray([r["final_test_loss"] for r in rows if r["status"] == "done" and r["final_test_loss"] is not None])
        table.append(dict(part=part, setting=setting, obs=obs, poles=poles, flow=flow, runs=len(rows), done=int(done.size),
                          nonfinite=sum(r["status"] == "nonfinite" for r in rows),
                          median=float(np.median(done)) if done.size else None,
                          mean=float(done.mean()) if done.size else None, std=float(done.std()) if done.size else None,
                          min=float(done.min()) if done.size else None, max=float(done.max()) if done.size else None))
    pairs = []
    for (part, setting, obs, poles, flow), rows in groups.items():
        base = {r["seed"]: r["final_test_loss"] for r in groups.get((part, setting, obs, poles, "none"), []) if r["status"] == "done"}
        both = [(r["final_test_loss"], base[r["seed"]]) for r in rows if r["status"] == "done" and r["seed"] in base]
        if flow == "none" or not both:
            continue
        ours, theirs = np.asarray(both).T
        pairs.append(dict(part=part, setting=setting, obs=obs, poles=poles, flow=flow, seeds=len(both),
                          lower_than_none=int((ours < theirs).sum()), mean_ratio_to_none=float(np.mean(ours / theirs)),
                          mean=float(ours.mean()), none_mean=float(theirs.mean())))
    return final, table, pairs, curves


def plot_bars(path, final: list, flows: list, poles: list) -> None:
    """Grouped bars per panel: median final test loss per pole count and flow, a dot per seed, × per non-finite run;
    a log axis where the values span more than a decade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if any(r["part"] == p[0] and r["setting"] == p[1] and r["obs"] == p[2] for r in final)]
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.6 * rows), dpi=120, squeeze=False)
    width = 0.8 / len(flows)
    for ax, (part, setting, obs, title) in zip(axes.flat, panels):
        sel = [r for r in final if (r["part"], r["setting"], r["obs"]) == (part, setting, obs)]
        for j, flow in enumerate(flows):
            xs, means = [], []
            for i, n in enumerate(poles):
                vals = [r["final_test_loss"] for r in sel if r["poles"] == n and r["flow"] == flow and r["status"] == "done"]
                x = i + (j - (len(flows) - 1) / 2) * width
                if vals:
                    xs.append(x)
                    means.append(np.median(vals))
                    ax.scatter([x] * len(vals), vals, s=7, color="black", zorder=3, linewidths=0)
                diverged = sum(r["status"] == "nonfinite" for r in sel if r["poles"] == n and r["flow"] == flow)
                if diverged:
                    ax.annotate("×" * diverged, (x, 0.02), ha="center", fontsize=7, color="red", xycoords=("data", "axes fraction"))
            if xs:
                ax.bar(xs, means, width=width, color=flow_color(flow), label=flow if ax is axes.flat[0] else None)
        ax.set_xticks(range(len(poles)), [f"{n} pole{'s' if n > 1 else ''}" for n in poles])
        ax.set_ylabel("final test loss, 1 − mean cos θ")
        done = [r["final_test_loss"] for r in sel if r["status"] == "done" and r["final_test_loss"] is not None]
        positive = [v for v in done if v > 0]
        if positive and max(positive) > 10 * min(positive):
            ax.set_yscale("log")
            ax.set_ylim(bottom=min(positive) / 3, top=max(positive) * 3)
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.legend(loc="upper center", ncol=len(flows), fontsize=8, title="flow (bar: median over seeds; dot: one seed; ×: non-finite)",
               title_fontsize=8, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.93 if rows > 1 else 0.86))
    save_figure(fig, path)


def plot_curves(path, curves: list, flows: list, poles: list, observations: list) -> None:
    """Test loss against epoch, main part: a panel per observation and pole count, median over seeds and min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(observations), len(poles), figsize=(3.4 * len(poles), 2.9 * len(observations)), dpi=120,
                             squeeze=False, sharex=True)
    for a, obs in enumerate(observations):
        for b, n in enumerate(poles):
            ax = axes[a, b]
            for flow in flows:
                sel = [c for c in curves if c["part"] == "main" and c["obs"] == obs and c["poles"] == n and c["flow"] == flow]
                by_seed: dict = {}
                for c in sel:
                    by_seed.setdefault(c["seed"], {})[c["epoch"]] = c["test_loss"]
                if not by_seed:
                    continue
                epochs = sorted(set.intersection(*(set(v) for v in by_seed.values())))
                if not epochs:
                    continue
                y = np.asarray([[v[e] for e in epochs] for v in by_seed.values()], dtype=float)
                ax.plot(epochs, np.median(y, 0), color=flow_color(flow), label=flow, linewidth=1.2)
                ax.fill_between(epochs, y.min(0), y.max(0), color=flow_color(flow), alpha=0.12)
            ax.set_yscale("log")
            ax.set_title(f"{n} pole{'s' if n > 1 else ''}, {obs} observation", fontsize=9)
            ax.grid(alpha=0.3)
            if b == 0:
                ax.set_ylabel("test loss, 1 − mean cos θ")
            if a == len(observations) - 1:
                ax.set_xlabel("epoch (32 updates)")
    axes[0, 0].legend(fontsize=7, title="flow (median, min–max over seeds)", title_fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


FILES = ["final.csv", "table.csv", "pairs.csv", "curves.csv", "cartpole-study.png", "cartpole-study-curves.png"]


def main(argv=None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    all_runs = runs(args)
    out, records, report = sweep_runs(args, SCRIPT, all_runs, "cartpole study")
    final, table, pairs, curves = tables(all_runs, records)
    write_tables(out, {"final.csv": final, "table.csv": table, "pairs.csv": pairs, "curves.csv": curves})
    plot_bars(out / "cartpole-study.png", final, list(args.flows), list(args.poles))
    plot_curves(out / "cartpole-study-curves.png", curves, list(args.flows), list(args.poles), list(args.observations))
    finish_sweep_figure(out, SCRIPT, args, started=started, runs=all_runs, records=records, report=report, files=FILES,
                        task="cartpole, preset literature (published dynamics, initial states and loss)")


if __name__ == "__main__":
    run_script(main)
