"""Command line: ``gradstop train`` (or ``python -m gradstop train``).

Trains one policy per flow by BPTT from the same initial weights and initial-state seed, then
writes a results folder: ``loss.csv`` (per iteration and flow), ``loss.png``, ``config.json``
(every setting, the sim's parameters, package versions) and ``policy-<flow>.npz`` (weights as
NumPy arrays, loadable into either framework with ``set_weights``).

    gradstop train --sim cartpole --backend torch --stop none,input,combined --horizon 100 --iters 300
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from gradstop import results
from gradstop.flows import VALID_FORMS, parse_flow
from gradstop.training import check_train_args


@dataclasses.dataclass
class TrainArgs:
    sim: str = dataclasses.field(default="cartpole", metadata={"help": "simulator name (sims.names())"})
    backend: str = dataclasses.field(default="jax", metadata={"help": "framework: jax or torch"})
    stop: str = dataclasses.field(default="none,input,combined", metadata={"help": "comma-separated gradient flows, one training run each"})
    horizon: int = dataclasses.field(default=100, metadata={"help": "rollout length H"})
    iters: int = dataclasses.field(default=300, metadata={"help": "Adam updates per flow"})
    batch: int = dataclasses.field(default=32, metadata={"help": "initial states per update"})
    lr: float = dataclasses.field(default=3e-3, metadata={"help": "Adam learning rate"})
    clip_norm: float | None = dataclasses.field(default=None, metadata={"help": "clip the gradient's global norm (default: off)"})
    hidden: str = dataclasses.field(default="64,64", metadata={"help": "hidden layer widths of the MLP policy"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the initial weights and initial states"})
    preset: str | None = dataclasses.field(default=None, metadata={"help": "simulator preset (e.g. cartpole's 'literature')"})
    param: list = dataclasses.field(default_factory=list, metadata={"help": "simulator parameter KEY=VALUE (repeatable), e.g. --param poles=2"})
    out: str | None = dataclasses.field(default=None, metadata={"help": "results folder (must not exist); default results/train-<sim>-<backend>-<time>"})
    root: str = dataclasses.field(default="results", metadata={"help": "parent folder of the default results folder"})
    quiet: bool = dataclasses.field(default=False, metadata={"help": "no progress bar"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradstop", description="gradstop: gradient flows through differentiable physics")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train policies by BPTT, one per flow, and write a results folder",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainArgs):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.type == "bool":
            train.add_argument(flag, action="store_true", help=f.metadata["help"])
        elif f.name == "param":
            train.add_argument(flag, action="append", default=default, metavar="KEY=VALUE", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float, "float | None": float}.get(f.type, str)
            train.add_argument(flag, type=kind, default=default, help=f.metadata["help"])
    return parser


def parse_sim_params(items: list[str]) -> dict:
    """['poles=2', 'task=balance', 'target=(1,0,0)'] -> {'poles': 2, 'task': 'balance', 'target': (1, 0, 0)}."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, got {item!r} (e.g. --param poles=2)")
        try:
            params[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            params[key.strip()] = value.strip()
    return params


def train(args: TrainArgs) -> Path:
    """Run ``gradstop train`` with ``args``; returns the results folder."""
    from sims import make

    flows = [parse_flow(s) for s in args.stop.split(",") if s.strip()]
    if not flows:
        raise ValueError(f"--stop names no flow; {VALID_FORMS}")
    if len({f.name for f in flows}) != len(flows):
        raise ValueError(f"--stop names a flow twice: {args.stop!r}")
    check_train_args(flows[0], args.horizon, args.iters, args.lr, args.batch, args.clip_norm)
    try:
        hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    except ValueError:
        raise ValueError(f"--hidden takes comma-separated integers, got {args.hidden!r}") from None
    sim = make(args.sim, backend=args.backend, preset=args.preset, **parse_sim_params(args.param))
    dest = Path(args.out) if args.out else results.unique_path(args.root, f"train-{sim.name}-{sim.backend}")
    backend = importlib.import_module(f"gradstop.{sim.backend}")

    with results.run_folder(dest) as folder:
        curves, rows, summary = {}, [], {}
        for flow in flows:
            policy = _init_policy(backend, sim, hidden, args.seed)
            start = time.perf_counter()
            policy, hist = backend.bptt(policy, sim, stop=flow, horizon=args.horizon, iters=args.iters, lr=args.lr,
                                        batch=args.batch, clip_norm=args.clip_norm, key=args.seed, progress=not args.quiet)
            curves[flow.name] = hist.loss
            rows += [(i + 1, flow.name, hist.loss[i], hist.grad_norm[i], hist.seconds[i]) for i in range(args.iters)]
            summary[flow.name] = {"first_loss": hist.loss[0], "final_loss": hist.loss[-1], "best_loss": hist.loss.min(),
                                  "seconds": time.perf_counter() - start}
            np.savez(folder / f"policy-{flow.name.replace(':', '_')}.npz", *backend.get_weights(policy))
            if not args.quiet:
                print(f"{flow.name:>24}: loss {hist.loss[0]:.4g} -> {hist.loss[-1]:.4g} ({summary[flow.name]['seconds']:.1f} s)")
        results.write_csv(folder / "loss.csv", ["iter", "flow", "loss", "grad_norm", "seconds"], rows)
        title = f"BPTT on {sim.name} ({sim.backend}), H={args.horizon}, batch {args.batch}, lr {args.lr:g}"
        results.plot_curves(folder / "loss.png", curves, title=title)
        results.write_json(folder / "config.json", {
            "command": "gradstop train", "args": dataclasses.asdict(args), "sim": sim.describe(),
            "flows": [f.name for f in flows], "summary": summary, "versions": _versions(sim.backend),
        })
    return dest


def _init_policy(backend, sim, hidden, seed):
    if sim.backend == "jax":
        return backend.mlp(seed, sim.obs_dim, sim.action_dim, hidden=hidden)
    return backend.mlp(sim.obs_dim, sim.action_dim, hidden=hidden, seed=seed)


def _versions(framework: str) -> dict:
    names = ["gradstop", "numpy"] + (["jax", "jaxlib", "equinox", "optax"] if framework == "jax" else ["torch"])
    out = {"python": sys.version.split()[0]}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    args = TrainArgs(**{k: v for k, v in vars(ns).items() if k != "command"})
    try:
        dest = train(args)
    except (ValueError, TypeError, FileExistsError, ImportError) as err:
        print(f"gradstop train: error: {err}", file=sys.stderr)
        return 2
    print(f"results written to {dest}")
    return 0
