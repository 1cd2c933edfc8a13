"""Command line: ``gradstop train`` (or ``python -m gradstop train``); ``gradstop diagnose`` and
``gradstop check`` live in ``gradstop.health_cli``, ``gradstop sweep`` and ``gradstop figures`` in
``gradstop.sweep_cli``.

Every field of :class:`gradstop.trainers.TrainConfig` is a flag (``--lr 3e-3``, ``--data fixed``,
``--no-shuffle``, ``--param poles=2``); ``--algo shac`` starts from SHAC's published defaults
(``ALGO_DEFAULTS``), ``--config FILE`` from a saved config, and flags override either. ``--flow`` (alias ``--stop``) takes a comma-separated list: one run per flow, from
the same initial weights and data, each in its own resumable folder::

    OUT/sweep.json             the configs of the runs (written first)
    OUT/<flow>/                one run folder each (gradstop.trainers.run: config.json, updates.csv, eval.csv,
                               checkpoint, policy.npz, summary.json, loss.png)
    OUT/summary.csv, loss.png  every flow side by side (written when all runs are done)

Run the same command again to resume after an interruption (finished runs are skipped). The
default OUT is ``results/train-<sim>-<backend>-<hash of the configs>``, so the same command
always finds its own folder.

    gradstop train --sim cartpole --backend torch --flow none,input,combined --horizon 100 --epochs 10
    gradstop train --algo shac --sim cartpole --flow none,input --epochs 20
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import io
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from gradstop import health_cli, sweep_cli
from gradstop.flows import VALID_FORMS, parse_flow
from gradstop.trainers.config import ALGO_DEFAULTS, TrainConfig
from gradstop.trainers.files import atomic_write, atomic_write_json

EXIT_OK, EXIT_USAGE, EXIT_NONFINITE, EXIT_INTERRUPTED = 0, 2, 3, 130


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; only the flags given override the base config."""
    for f in dataclasses.fields(TrainConfig):
        flag, help_ = "--" + f.name.replace("_", "-"), f.metadata["help"] + f" (default: {_show(f)})"
        if f.name == "sim_params":
            parser.add_argument("--param", dest="sim_params", action="append", metavar="KEY=VALUE", help=help_)
        elif f.name == "flow":
            parser.add_argument("--flow", "--stop", dest="flow", metavar="FLOWS",
                                help="comma-separated gradient flows, one run each, e.g. none,input,combined" + f" (default: {f.default})")
        elif f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_)
        else:
            kind = {"int": int, "float": float, "float | None": float}.get(f.type, str)
            parser.add_argument(flag, dest=f.name, type=kind, help=help_)
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(TrainConfig)})  # None: not given, keep the base


def _show(f) -> str:
    """A field's default for --help, with each algorithm's own where it differs (``ALGO_DEFAULTS``)."""
    def text(value):
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    others = [f"{algo}: {text(d[f.name])}" for algo, d in ALGO_DEFAULTS.items() if f.name in d]
    return text(default) + "".join(f"; {o}" for o in others)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradstop", description="gradstop: gradient flows through differentiable physics")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train policies (one per flow) and write a resumable results folder")
    train.add_argument("--config", metavar="FILE", help="start from this config.json (flags override its fields)")
    train.add_argument("--print-config", action="store_true", help="print the resulting config as JSON and exit")
    _add_config_flags(train)
    train.add_argument("--out", help="results folder (resumed if it holds these runs); default results/train-<sim>-<backend>-<hash>")
    train.add_argument("--root", default="results", help="parent folder of the default results folder")
    train.add_argument("--tensorboard", metavar="DIR", help="also log metrics to TensorBoard in DIR (needs tensorboardX)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    health_cli.add_parsers(sub)
    sweep_cli.add_parsers(sub)
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


def configs_from(ns: argparse.Namespace) -> list[TrainConfig]:
    """The TrainConfigs a ``gradstop train`` command line asks for (one per flow)."""
    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainConfig) if getattr(ns, f.name, None) is not None}
    base = {}
    if ns.config:
        path = Path(ns.config)
        if not path.is_file():
            raise ValueError(f"--config {path}: no such file (give the config.json of a run)")
        try:
            base = TrainConfig.from_dict(json.loads(path.read_text()), source=str(path)).to_dict()
        except json.JSONDecodeError as err:
            raise ValueError(f"--config {path} is not valid JSON: {err}") from None
    if "sim_params" in given:
        given["sim_params"] = {**base.get("sim_params", {}), **parse_sim_params(given["sim_params"])}
    for name in ("hidden", "critic_hidden"):
        if name in given:
            try:
                given[name] = tuple(int(h) for h in given[name].split(",") if h.strip())
            except ValueError:
                raise ValueError(f"--{name.replace('_', '-')} takes comma-separated integers, got {given[name]!r}") from None
    flows = [s.strip() for s in given.pop("flow", base.get("flow", TrainConfig.flow)).split(",") if s.strip()]
    if not flows:
        raise ValueError(f"--flow names no flow; {VALID_FORMS}")
    names = [parse_flow(f).name for f in flows]
    if len(set(names)) != len(names):
        raise ValueError(f"--flow names a flow twice: {','.join(flows)}")
    if not ns.config:  # the algorithm's published defaults under the flags (a config file is already complete)
        base = {**ALGO_DEFAULTS.get(given.get("algo", TrainConfig.algo), {}), **base}
    merged = {**base, **given}
    return [TrainConfig(**{**merged, "flow": name}) for name in names]


def train(ns: argparse.Namespace) -> int:
    """Run ``gradstop train``; returns the exit code."""
    from gradstop.trainers.run import NonFiniteError, make_sim, train as run_one

    configs = configs_from(ns)
    if ns.print_config:
        print(json.dumps(configs[0].to_dict() if len(configs) == 1 else [c.to_dict() for c in configs], indent=2))
        return EXIT_OK
    first = configs[0]
    sim = make_sim(first)  # checks the sim, backend and parameters before anything is written
    if first.backend == "jax" and first.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    digest = hashlib.sha256(json.dumps([c.identity() for c in configs], sort_keys=True).encode()).hexdigest()[:8]
    out = Path(ns.out) if ns.out else Path(ns.root) / f"train-{sim.name}-{first.backend}-{digest}"
    _claim(out, configs)
    failed = {}
    for config in configs:
        try:
            result = run_one(config, out / config.flow_slug, progress=not ns.quiet, tensorboard=ns.tensorboard)
        except NonFiniteError as err:
            failed[config.flow] = str(err)
            print(f"gradstop train: {err}", file=sys.stderr)
            continue
        if not ns.quiet:
            s = result.summary
            test = f", test {s['final_test_loss']:.4g}" if s["final_test_loss"] is not None else ""
            print(f"{config.flow:>24}: loss {s['first_loss']:.4g} -> {s['final_loss']:.4g}{test} "
                  f"({s['seconds']:.1f} s + {s['compile_seconds']:.1f} s compile, {s['steps_per_second']:.3g} steps/s)")
    if failed:
        print(f"gradstop train: {len(failed)} of {len(configs)} runs stopped on non-finite values "
              f"({', '.join(failed)}); the others are complete in {out}", file=sys.stderr)
        return EXIT_NONFINITE
    _compare(out, configs)
    print(f"results written to {out}")
    return EXIT_OK


def _claim(out: Path, configs: list[TrainConfig]) -> None:
    """Create ``out`` for these runs, or check that it holds them (then they resume)."""
    record = {"command": "gradstop train", "runs": [c.to_dict() for c in configs], "versions": versions(configs[0].backend)}
    sweep = out / "sweep.json"
    if sweep.exists():
        stored = json.loads(sweep.read_text())
        theirs = [TrainConfig.from_dict(r, source=str(sweep)) for r in stored["runs"]]
        if [c.flow for c in theirs] != [c.flow for c in configs]:
            raise ValueError(f"{out} holds runs of flows {[c.flow for c in theirs]}, not {[c.flow for c in configs]}: "
                             "choose another --out, or rerun its own command")
        diffs = configs[0].differences(theirs[0])
        if diffs:
            raise ValueError(f"{out} holds runs with a different config ({'; '.join(diffs)}): choose another --out, "
                             f"or resume them with their own settings (--config {out / configs[0].flow_slug / 'config.json'})")
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"results folder {out} already exists and holds no gradstop train runs: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep, record)


def _compare(out: Path, configs: list[TrainConfig]) -> None:
    """Every flow side by side: summary.csv and loss.png (test loss, or train loss without evaluations)."""
    from gradstop.results import plot_lines

    rows, lines = [], {}
    columns = ["flow", "first_loss", "final_loss", "final_test_loss", "best_test_loss", "final_test_success",
               "seconds", "compile_seconds", "steps_per_second", "skipped_updates"]
    for c in configs:
        folder = out / c.flow_slug
        s = json.loads((folder / "summary.json").read_text())
        rows.append([s[k] if k != "flow" else c.flow for k in columns])
        evals = np.genfromtxt(folder / "eval.csv", delimiter=",", names=True, ndmin=1)
        lines[c.flow] = (np.atleast_1d(evals["update"]), np.atleast_1d(evals["test_loss"]))
    text = ",".join(columns) + "\n" + "".join(",".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
    atomic_write(out / "summary.csv", text.encode())
    c = configs[0]
    buf = io.BytesIO()
    plot_lines(buf, lines, title=f"{c.algo.upper()} on {c.sim} ({c.backend}), H={c.horizon}, batch {c.batch}, lr {c.lr:g}",
               xlabel="update", ylabel=f"test loss ({c.test_size} initial states)", legend="flow")
    atomic_write(out / "loss.png", buf.getvalue())


def versions(framework: str) -> dict:
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
    run = {"train": train, "diagnose": health_cli.diagnose, "check": health_cli.check, "sweep": sweep_cli.sweep,
           "figures": sweep_cli.figures}[ns.command]
    try:
        return run(ns)
    except (ValueError, TypeError, FileExistsError, ImportError, ConnectionError) as err:
        print(f"gradstop {ns.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        resumable = ns.command in ("train", "sweep", "figures")
        again = "; run the same command again to resume from the last checkpoint" if resumable else ""
        print(f"gradstop {ns.command}: interrupted{again}", file=sys.stderr)
        return EXIT_INTERRUPTED
