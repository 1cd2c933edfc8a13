"""``gradstop sweep`` (a grid of training runs from a JSON file) and ``gradstop figures`` (the study's figures).

    gradstop sweep grid.json [--out DIR] [--ray local|auto|HOST:PORT] [--only TEXT] [--dry-run]
    gradstop figures [--quick] [--only NAME ...] [--out DIR] [--ray ...] [--force]

A sweep file names the runs' shared fields and the axes to vary (``gradstop.sweep.load_spec``)::

    {"name": "lr-scan",
     "base": {"sim": "cartpole", "preset": "literature", "sim_params": {"poles": 2}, "data": "fixed", "epochs": 100},
     "grid": {"flow": ["none", "combined"], "lr": [0.001, 0.003], "seed": [0, 1, 2]}}

Each run trains in ``DIR/runs/<name>`` (``flow=none,lr=0.001,seed=0``); running the same command
again skips finished runs, resumes interrupted ones and retries failed ones. The exit code is 0 when
every run has a result, 1 when some failed (each is reported with its config and error in
``DIR/failures/``), 2 for bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


SWEEP_EPILOG = """\
a sweep file names the runs' shared fields and the axes to vary:

  {"name": "lr-scan",
   "base": {"sim": "cartpole", "preset": "literature", "sim_params": {"poles": 2},
            "data": "fixed", "epochs": 100},
   "grid": {"flow": ["none", "combined"], "lr": [0.001, 0.003], "seed": [0, 1, 2]}}

Each run trains in OUT/runs/<name> (e.g. flow=none,lr=0.001,seed=0). Run the same
command again to skip finished runs, resume interrupted ones and retry failed ones.
Exit status: 0 every run has a result, 1 some failed (see OUT/failures/), 2 bad input.

examples:
  gradstop sweep grid.json --dry-run              # list the runs and their status
  gradstop sweep grid.json --only flow=combined   # only the runs whose name has this
  gradstop sweep grid.json --ray local --ray-cpus 8"""

FIGURES_EPILOG = """\
examples:
  gradstop figures --list                  # the figures, and which are current
  gradstop figures --quick                 # every figure on a tiny budget (minutes)
  gradstop figures --only gradient-norms --force"""


def add_ray_flags(p) -> None:
    p = p.add_argument_group("Ray (optional: runs in parallel)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on Ray: 'local' (start an instance here), 'auto' (this "
                   "machine's cluster) or HOST:PORT of a cluster's head; default: one run after another in this process")
    p.add_argument("--ray-cpus", type=int, metavar="N", help="--ray local: CPUs of the local instance (default: all)")


def add_parsers(sub) -> None:
    """Add the ``sweep`` and ``figures`` subcommands to the ``gradstop`` parser."""
    raw = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("sweep", help="train a grid of runs from a JSON sweep file, in-process or on Ray; resumable",
                       description="Train every run of a grid (a JSON sweep file), resumably, in this process or on Ray.",
                       epilog=SWEEP_EPILOG, formatter_class=raw)
    s.add_argument("spec", metavar="SWEEP.json", help="the sweep file (below): its name, base fields and grid")
    runs = s.add_argument_group("which runs")
    runs.add_argument("--only", action="append", metavar="TEXT", help="run only the runs whose name contains TEXT (repeatable: any)")
    runs.add_argument("--retry-nonfinite", action="store_true", help="also rerun runs that stopped on a non-finite value")
    runs.add_argument("--dry-run", action="store_true", help="list the runs and their status, train nothing")
    runs.add_argument("--population", type=int, default=1, metavar="S",
                      help="train up to S new JAX runs that differ only in their seed as one vmapped program per task "
                           "(default 1; 4 measured 1.4-1.5x the runs per hour on 2 cores); summary.json names the population")
    out = s.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", help="the sweep folder (resumed if it holds this sweep); default ROOT/sweep-<name>-<hash>")
    out.add_argument("--root", metavar="DIR", default="results", help="parent folder of the default sweep folder (default: results)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    add_ray_flags(s)
    f = sub.add_parser("figures", help="regenerate the study's figures (experiments/), skipping those that are current",
                       description="Regenerate the study's figures (experiments/), skipping those that are current.",
                       epilog=FIGURES_EPILOG, formatter_class=raw)
    f.add_argument("--quick", action="store_true", help="every figure on its tiny budget (minutes in all)")
    f.add_argument("--only", nargs="+", metavar="NAME", help="only these figures (gradstop figures --list names them)")
    f.add_argument("--out", metavar="DIR", help="the gallery folder (default: results/figures, --quick: results/figures-quick)")
    f.add_argument("--force", action="store_true", help="rebuild figures even when current (a sweep's finished runs are kept)")
    f.add_argument("--list", action="store_true", help="list the figures and whether each is current, run nothing")
    add_ray_flags(f)


def sweep(ns: argparse.Namespace) -> int:
    from gradstop.study.sweep import load_spec, run_status, run_sweep

    name, runs = load_spec(ns.spec)
    if ns.only:
        runs = [r for r in runs if any(t in r.name for t in ns.only)]
        if not runs:
            raise ValueError(f"--only {' '.join(ns.only)} matches no run of {ns.spec}")
    digest = hashlib.sha256(json.dumps([[r.name, r.config.identity()] for r in load_spec(ns.spec)[1]],
                                       sort_keys=True).encode()).hexdigest()[:8]
    out = Path(ns.out) if ns.out else Path(ns.root) / f"sweep-{name}-{digest}"
    if ns.dry_run:
        for r in runs:
            print(f"{run_status(out, r) or 'to run':>10}  {r.name}")
        print(f"{len(runs)} runs in {out}")
        return EXIT_OK
    report = run_sweep(runs, out, ray=ns.ray, cpus=ns.ray_cpus, retry_nonfinite=ns.retry_nonfinite, progress=not ns.quiet,
                       population=ns.population)
    print(report.describe(), file=sys.stderr if report.failed else sys.stdout)
    return EXIT_FAILED if report.failed else EXIT_OK


def figures(ns: argparse.Namespace) -> int:
    from gradstop.study.figures import run_figures

    return run_figures(quick=ns.quick, only=ns.only, out=ns.out, force=ns.force, ray=ns.ray, ray_cpus=ns.ray_cpus,
                       list_only=ns.list)
