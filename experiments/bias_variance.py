"""The zeroth- and first-order gradients' disagreement and variances against the horizon: contact tasks, swing-up, hopper.

    python -m experiments.bias_variance [--quick] [--tasks bounce-hard bounce-soft swingup hopper] [--horizon 16]
                                        [--samples 4096] [--sigma 0.1] [--seeds 3] [--out DIR]

For each task and seed, an untrained MLP policy (4 tanh units, float64, JAX; the seed draws its weights)
starts from one initial state (the ball from the middle of its initial box; the other tasks from their
reset state of that seed), and ``gs.bias_test`` (Suh et al., ICML 2022; the
estimators in docs/mixing.md) runs at every H ≤ ``--horizon``: ``--samples`` noisy rollouts (action noise
σ = ``--sigma``) give ĝ0 with its Bernstein confidence bound ε (L = 1, δ = 0.05), as many independent ones
ĝ1 (``none``). The figure shows, against H, ‖ĝ1 − ĝ0‖ beside ε (the test fires where the first is above
the second) and the per-sample variances σ0², σ1² (log scale), one line per seed; the dotted lines mark
the noise-free rollout's impacts (the wall, then the floor). The tasks:

    bounce-hard   sims.contact.Bounce, hard impacts (reflections resolved per substep)
    bounce-soft   the same with the smooth, stiff spring-damper contact (k = 2000)
    swingup       the 1-pole cartpole swing-up (smooth dynamics: no impacts)
    hopper        Brax's hopper on the spring pipeline (foot–ground contact): each
                  horizon compiles its own program (minutes each for Brax in float64), so it runs only the
                  powers of two up to ``--horizon`` (1, 2, 4, 8, 16), with at most 512 noisy rollouts
                  per estimator (the process held 5.4 GB at 512)

Writes ``bias.csv`` (task, seed, H, samples, bias, eps, var0, var1, fires), ``impacts.csv`` (the step of each
impact of each seed's noise-free rollout, for the bounce tasks), ``bias-variance.png`` and ``settings.json``. ``--quick``
(bounce-hard, one seed, H ≤ 4, 64 samples) runs in seconds.
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
from gradstop.study.figures import claim_folder, run_script, write_settings  # noqa: E402
from gradstop.study.results import run_folder, save_figure, unique_path, write_csv  # noqa: E402
from gradstop.study.sweep import default_compilation_cache  # noqa: E402

if __package__ in (None, ""):  # run as a file: the repository root holds `sims`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sims import make  # noqa: E402

SCRIPT = "bias_variance"
TASKS = {"bounce-hard": ("bounce", {"contact": "hard"}), "bounce-soft": ("bounce", {"contact": "soft"}),
         "swingup": ("cartpole", {"poles": 1}), "hopper": ("brax:hopper", {"pipeline": "spring"})}
DEFAULT_TASKS = list(TASKS)
POWERS_OF_TWO = {"hopper"}  # tasks whose every horizon costs a long compile: H = 1, 2, 4, … ≤ --horizon
# the most noisy rollouts per estimator a task runs: the hopper's float64 rollouts with their per-sample gradients
# held the process at 5.4 GB at 512 (measured); 4096 failed to compile here ("Cannot allocate memory"), before
# main freed its compiled programs per seed, and was not retried
MAX_SAMPLES = {"hopper": 512}
FILES = ["bias.csv", "impacts.csv", "bias-variance.png"]
BOUND, DELTA = 1.0, 0.05


def parse(argv=None) -> argparse.Namespace:
    """The script's settings (``--quick`` applied)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="bounce-hard, one seed, H ≤ 4, 64 samples (tests)")
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS), default=DEFAULT_TASKS)
    ap.add_argument("--horizon", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--force", action="store_true", help="replace the files of an earlier run of this script in --out")
    ap.add_argument("--out", help="a new results folder (default: results/bias-variance-<time>)")
    args = ap.parse_args(argv)
    if args.quick:
        args.tasks, args.seeds, args.horizon, args.samples = args.tasks[:1], 1, 4, 64
    if args.horizon < 1 or args.seeds < 1:
        ap.error(f"--horizon and --seeds must be ≥ 1, got {args.horizon} and {args.seeds}")
    return args


def impacts(states: np.ndarray, wall_x: float) -> dict:
    """The steps (1-based: the step into state t) whose velocity component normal to the wall or floor flips sign
    from into the surface to away from it, in one noise-free rollout's states (H + 1, 4)."""
    vx, vy = states[:, 2], states[:, 3]
    return {"wall": [int(t) for t in range(1, len(states)) if vx[t - 1] > 0 and vx[t] < 0],
            "floor": [int(t) for t in range(1, len(states)) if vy[t - 1] < 0 and vy[t] > 0]}


def task_horizons(task: str, horizon: int) -> list[int]:
    """The horizons a task's test runs at: every H ≤ ``horizon``, or the powers of two for the tasks that compile
    for minutes per horizon (``POWERS_OF_TWO``)."""
    if task in POWERS_OF_TWO:
        return [2 ** k for k in range(horizon.bit_length()) if 2 ** k <= horizon]
    return list(range(1, horizon + 1))


def task_samples(task: str, samples: int) -> int:
    """The noisy rollouts per estimator a task runs: ``samples``, capped by ``MAX_SAMPLES``."""
    return min(samples, MAX_SAMPLES.get(task, samples))


def main(argv=None) -> None:
    args = parse(argv)
    out = args.out or unique_path("results", "bias-variance")
    if Path(out).exists():
        claim_folder(out, SCRIPT, force=args.force)
    started = time.perf_counter()
    # the seeds of one task and horizon compile one program: Brax's compiles take minutes, so keep them
    cache = default_compilation_cache(Path.home() / ".cache" / "gradstop" / "jax")
    try:
        rows, hits, horizons, samples = measure(args)
    finally:
        jax.config.update("jax_compilation_cache_dir", cache)
    seconds = time.perf_counter() - started
    with run_folder(out, replace=args.force) as folder:
        write_csv(folder / "bias.csv", list(rows[0]), [list(r.values()) for r in rows])
        write_csv(folder / "impacts.csv", ["task", "seed", "surface", "step"], [list(r.values()) for r in hits])
        plot(folder / "bias-variance.png", rows, hits, args)
        write_settings(folder, SCRIPT, args, seconds=seconds, complete=True, files=FILES, horizons=horizons, samples=samples,
                       tasks={k: dict(sim=TASKS[k][0], **TASKS[k][1]) for k in args.tasks}, bound=BOUND, delta=DELTA, flow="none")
    print(f"wrote {out} in {seconds:.0f} s")


def measure(args):
    """The test's rows, the bounce rollouts' impacts, and each task's horizons and samples."""
    rows, hits, horizons, samples = [], [], {}, {}
    for task in args.tasks:
        horizons[task], samples[task] = task_horizons(task, args.horizon), task_samples(task, args.samples)
        if samples[task] < args.samples:
            print(f"{task}: {samples[task]} noisy rollouts per estimator, not {args.samples} (its cap, MAX_SAMPLES)", flush=True)
        name, params = TASKS[task]
        sim = make(name, backend="jax", **params)
        for seed in range(args.seeds):
            policy = gs.jax.mlp(seed, sim.obs_dim, sim.action_dim, hidden=(4,), dtype=jnp.float64)
            if name == "bounce":
                low, high = sim.init_bounds()
                x0 = jnp.asarray((low + high)[None] / 2, jnp.float64)
                states = np.asarray(gs.rollout(policy, sim, stop="none", horizon=args.horizon, x0=x0).states[:, 0])
                found = impacts(states, sim.wall_x)
            else:
                x0, found = sim.reset(seed, 1, dtype=jnp.float64), {}
            for where, steps in found.items():
                hits += [dict(task=task, seed=seed, surface=where, step=s) for s in steps]
            t = gs.bias_test(policy, sim, horizons=horizons[task], x0=x0, samples=samples[task], sigma=args.sigma,
                             bound=BOUND, delta=DELTA, key=seed)
            rows += [dict(task=task, seed=seed, H=int(h), samples=samples[task], bias=float(b), eps=float(e), var0=float(v0), var1=float(v1),
                          fires=bool(f)) for h, b, e, v0, v1, f in zip(t.horizons, t.bias, t.eps, t.var0, t.var1, t.fires)]
            # every horizon compiles its own programs; a process that kept them all failed to compile the hopper's
            # ("Cannot allocate memory" with 20 GB free) and runs once they are freed here
            jax.clear_caches()
            fired = [int(h) for h, f in zip(t.horizons, t.fires) if f]
            print(f"{task} seed {seed}: fires at H = {fired or 'none'}" + (f"; impacts {found}" if found else ""), flush=True)
    return rows, hits, horizons, samples


def plot(path, rows, hits, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(args.tasks), figsize=(4.2 * len(args.tasks), 6.0), dpi=120, squeeze=False)
    shades = plt.get_cmap("viridis")(np.linspace(0.1, 0.8, args.seeds))
    for j, task in enumerate(args.tasks):
        top, bottom = axes[0, j], axes[1, j]
        for seed in range(args.seeds):
            r = [x for x in rows if x["task"] == task and x["seed"] == seed]
            h = [x["H"] for x in r]
            top.plot(h, [x["bias"] for x in r], color=shades[seed], marker="o" if task in POWERS_OF_TWO else None,
                     markersize=3, label=f"‖ĝ1 − ĝ0‖, seed {seed}")
            top.plot(h, [x["eps"] for x in r], color=shades[seed], linestyle="--", label=f"ε, seed {seed}")
            top.scatter([x["H"] for x in r if x["fires"]], [x["bias"] for x in r if x["fires"]], color="crimson",
                        zorder=3, s=14, label="fires" if seed == 0 else None)
            bottom.plot(h, [x["var0"] for x in r], color=shades[seed], label=f"σ0² (zeroth order), seed {seed}")
            bottom.plot(h, [x["var1"] for x in r], color=shades[seed], linestyle=":", label=f"σ1² (first order), seed {seed}")
        for ax in (top, bottom):
            for hit in {(x["surface"], x["step"]) for x in hits if x["task"] == task and x["seed"] == 0}:
                ax.axvline(hit[1], color="grey", linestyle=":" if hit[0] == "wall" else "-.", linewidth=0.8)
            ax.set_yscale("log")
            if task in POWERS_OF_TWO:
                ax.set_xscale("log", base=2)
            ax.set_xlabel("horizon H")
            ax.grid(alpha=0.3)
        n = next(x["samples"] for x in rows if x["task"] == task)
        top.set_title(f"{task}: disagreement and its bound ({n} rollouts)", fontsize=9)
        bottom.set_title(f"{task}: per-sample variances", fontsize=9)
    axes[0, 0].legend(fontsize=5.5, ncol=2)
    axes[1, 0].legend(fontsize=5.5, ncol=2)
    fig.suptitle(f"empirical-bias test against H (noisy rollouts per estimator in each title, σ = {args.sigma:g}; "
                 "grey: seed 0's wall (dotted) and floor (dash-dot) impacts)", fontsize=8.5)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    run_script(main)
