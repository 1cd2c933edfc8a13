"""``gradstop train`` (or ``python -m gradstop train``).

Every field of :class:`gradstop.trainers.TrainConfig` is a flag (``--lr 3e-3``, ``--data fixed``,
``--no-shuffle``, ``--param poles=2``), shown in ``--help`` under the group ``GROUPS`` gives it;
``--algo shac`` starts from SHAC's published defaults (``ALGO_DEFAULTS``), ``--config FILE`` from a
saved config, and flags override either. ``--flow`` (alias ``--stop``) takes a comma-separated list:
one run per flow, from the same initial weights and data, each in its own resumable folder::

    OUT/sweep.json             the configs of the runs (written first)
    OUT/<flow>/                one run folder each (gradstop.trainers.run: config.json, updates.csv, eval.csv,
                               checkpoint, policy.npz, summary.json, loss.png)
    OUT/summary.csv, loss.png  every flow side by side (written when all runs are done)

Run the same command again to resume after an interruption (finished runs are skipped). The
default OUT is ``results/train-<sim>-<backend>-<hash of the configs>``, so the same command
always finds its own folder.

    gradstop train --sim cartpole --backend torch --flow none,input,combined --horizon 100 --epochs 10
    gradstop train --algo shac --sim cartpole --flow none,input --epochs 20

The parser is plain argparse with one argument group per ``GROUPS`` entry, not ``tyro``: tyro builds
its flags from types and owns their defaults, while this command must keep "a flag overrides the
``--config``/``--algo`` base only where it is given" (every default is None), ``--param KEY=VALUE``,
the ``--flow``/``--stop`` alias and its error messages.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import io
import json
import re
import sys
from pathlib import Path

import numpy as np

from gradstop._checks import IMPLS, MEMORY_POLICIES
from gradstop._policy import ACTIVATIONS, WEIGHT_INITS
from gradstop.flows import VALID_FORMS, parse_flow
from gradstop.trainers.config import (ACTION_SQUASHES, ALGO_DEFAULTS, ALGOS, CRITIC_INITS, CRITIC_OPTIMIZERS, DATA_MODES, DTYPES, NONFINITE,
                                      MODEL_USES, OPTIMIZERS, POLICIES, SCHEDULES, TD_DONES, TIME_LIMITS, TrainConfig)
from gradstop._io import atomic_write, atomic_write_json, read_json, versions

EXIT_OK, EXIT_USAGE, EXIT_NONFINITE, EXIT_INTERRUPTED = 0, 2, 3, 130

# The --help groups, in order: (title, description, the TrainConfig fields shown in it, in order). Every field is in
# exactly one group (tests/test_cli_help.py checks it); the "output" group also holds the flags that are no field.
GROUPS = {
    "run": ("what to train, on which simulator, with which gradient",
            ("algo", "sim", "preset", "sim_params", "backend", "flow", "horizon", "epochs", "updates_per_epoch", "seed",
             "dtype", "impl", "memory", "compile", "max_seconds", "until_done")),
    "data": ("the initial states: a fresh stream or a fixed training set, and a test set",
             ("data", "train_size", "test_size", "validation", "batch", "shuffle", "eval_every")),
    "policy": ("the MLP policy", ("hidden", "activation", "zero_last", "weight_init", "policy", "init_std", "actor_layer_norm")),
    "optimizer": ("the actor's optimizer (SHAC's critic shares its schedule, betas, clipping; with\n"
                  "--critic-optimizer actor all of it)",
                  ("optimizer", "lr", "schedule", "lr_final", "beta1", "beta2", "adam_eps", "weight_decay", "momentum",
                   "clip_value", "clip_norm")),
    "SHAC": ("--algo shac only (Xu et al., ICLR 2022); a default's 'shac: …' is the value\n"
             "--algo shac starts from",
             ("window", "gamma", "td_lambda", "critic_lr", "critic_hidden", "critic_activation", "critic_iterations",
              "critic_minibatches", "target_alpha", "critic_layer_norm", "critic_init", "critic_optimizer", "td_dones",
              "time_limit", "guards", "action_squash", "obs_norm")),
    "world model": ("--world-model: train the actor through a network fitted to the simulator\n"
                    "(and evaluate it on the simulator itself)",
                    ("world_model", "model_hidden", "model_transitions", "model_epochs", "model_lr", "model_batch",
                     "model_use")),
    "output": ("where the results go, and how a run reports and recovers",
               ("checkpoint_every", "on_nonfinite")),
}
# The valid values of the fields that take one of a few names (TrainConfig checks them, with a "did you mean").
CHOICES = {"algo": ALGOS, "backend": ("jax", "torch"), "impl": IMPLS, "memory": MEMORY_POLICIES, "data": DATA_MODES,
           "activation": ACTIVATIONS, "critic_activation": ACTIVATIONS, "weight_init": WEIGHT_INITS, "policy": POLICIES,
           "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "dtype": DTYPES, "on_nonfinite": NONFINITE,
           "critic_init": CRITIC_INITS, "critic_optimizer": CRITIC_OPTIMIZERS, "td_dones": TD_DONES, "time_limit": TIME_LIMITS,
           "action_squash": ACTION_SQUASHES, "model_use": MODEL_USES}
METAVARS = {"sim": "NAME", "preset": "NAME", "hidden": "W,W,…", "critic_hidden": "W,W,…"}

USAGE = "gradstop train [--sim NAME] [--flow FLOWS] [--config FILE] [OPTION …]"
DESCRIPTION = """\
Train one policy per gradient flow (--flow none,input,combined) from the same
initial weights and data, each in its own resumable run folder under --out:

  OUT/sweep.json             the runs' configs (written first)
  OUT/<flow>/                config.json, updates.csv, eval.csv, checkpoint,
                             policy.npz, summary.json, loss.png
  OUT/summary.csv, loss.png  every flow side by side (when all runs are done)

Run the same command again to resume after an interruption: finished runs are
skipped. A flag overrides the --algo defaults or the --config file only where
it is given."""
EPILOG = """\
examples:
  # the literature's 2-pole cartpole swing-up: three flows, one fixed training set
  gradstop train --preset literature --param poles=2 --data fixed \\
      --train-size 64 --batch 8 --epochs 40 --flow none,input,combined

  # SHAC, from its published defaults (lr 1e-2, 64 envs, window 32, horizon 256)
  gradstop train --algo shac --sim cartpole --flow none,input --epochs 20

  # resume an interrupted command: run it again (same flags, or the same --out)
  gradstop train --sim pointmass --flow input --epochs 50 --out results/pm

  # rerun a saved run with one setting changed (flags override the file)
  gradstop train --config results/pm/input/config.json --lr 3e-3 --out results/pm2

  # print the whole config a command line makes, train nothing
  gradstop train --algo shac --print-config

  # then watch the trained policy
  gradstop play results/pm --out pm.gif

exit status: 0 done, 2 bad input, 3 a run stopped on a non-finite value,
130 interrupted (run the command again to resume)."""


def _sim_help() -> str:
    from sims import names

    return (f"the simulator: {', '.join(names())}; brax:<env> for a Brax environment (JAX only, e.g. brax:hopper); "
            "a name given to sims.register; or package.module:Class for your own Sim subclass, importable from the "
            "current directory (default: cartpole)")


SPECIAL_HELP = {
    "sim_params": "a simulator parameter, repeatable: --param poles=2 --param task=balance (values are Python literals, "
                  "e.g. --param target=(1,0,0); the simulator's class docstring lists its parameters)",
    "flow": "comma-separated gradient flows, one run each, e.g. none,input,combined or input+decay:0.9 (default: none)",
}


def _add_config_flags(parser: argparse.ArgumentParser, groups: dict) -> None:
    """One flag per TrainConfig field, each in its ``GROUPS`` group; only the flags given override the base config."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    grouped = [name for _, names in GROUPS.values() for name in names]
    others = [name for name in fields if name not in grouped]  # a new field without a group still gets its flag
    for title, (_, names) in [*GROUPS.items(), *([("other", (None, others))] if others else [])]:
        group = groups.get(title) or parser.add_argument_group(title)
        for name in names:
            _add_field(group, fields[name])
    parser.set_defaults(**{name: None for name in fields})  # None: not given, keep the base


def _add_field(group, f) -> None:
    flag, help_ = "--" + f.name.replace("_", "-"), f"{_help(f)} (default: {_show(f)})"
    if f.name == "sim_params":
        group.add_argument("--param", dest="sim_params", action="append", metavar="KEY=VALUE", help=SPECIAL_HELP["sim_params"])
    elif f.name == "flow":
        group.add_argument("--flow", "--stop", dest="flow", metavar="FLOWS", help=SPECIAL_HELP["flow"])
    elif f.name == "sim":
        group.add_argument(flag, dest=f.name, metavar="NAME", help=_sim_help())
    elif f.type == "bool":
        group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_)
    else:
        kind = {"int": int, "float": float, "float | None": float}.get(f.type, str)
        metavar = METAVARS.get(f.name) or ("|".join(CHOICES[f.name]) if f.name in CHOICES else
                                           {int: "N", float: "X"}.get(kind, "TEXT"))
        group.add_argument(flag, dest=f.name, type=kind, metavar=metavar, help=help_)


def _help(f) -> str:
    """A field's help without what the flag's metavar already shows (its choices, the CLI spelling)."""
    text = re.sub(r" \(CLI: [^)]*\)", "", f.metadata["help"])
    if f.name in CHOICES:
        text = text.replace(f": {' | '.join(CHOICES[f.name])}", "")
    return text


def _show(f) -> str:
    """A field's default for --help, with each algorithm's own where it differs (``ALGO_DEFAULTS``)."""
    def text(value):
        if isinstance(value, (tuple, list)):
            return ",".join(map(str, value))
        if isinstance(value, bool):
            return "on" if value else "off"
        if value is None or value == {}:
            return "none"
        return f"{value:g}" if isinstance(value, float) else str(value)

    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    others = [f"{algo}: {text(d[f.name])}" for algo, d in ALGO_DEFAULTS.items() if f.name in d and d[f.name] != default]
    return text(default) + "".join(f"; {o}" for o in others)


def add_parsers(sub) -> None:
    """Add the ``train`` subcommand to the ``gradstop`` parser."""
    train = sub.add_parser("train", help="train policies (one per flow) and write a resumable results folder",
                           usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {title: train.add_argument_group(title, description) for title, (description, _) in GROUPS.items()}
    _add_config_flags(train, groups)
    out = groups["output"]
    out.add_argument("--out", metavar="DIR", help="the results folder (resumed if it holds these runs; "
                     "default: ROOT/train-<sim>-<backend>-<hash of the configs>)")
    out.add_argument("--root", metavar="DIR", default="results", help="parent folder of the default --out (default: results)")
    out.add_argument("--config", metavar="FILE", help="start from this config.json of a run (flags override its fields)")
    out.add_argument("--print-config", action="store_true", help="print the resulting config as JSON and exit")
    out.add_argument("--tensorboard", metavar="DIR", help="also log metrics to TensorBoard in DIR (needs tensorboardX)")
    out.add_argument("--quiet", action="store_true", help="no progress bar, no per-run summary line")


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
                given[name] = tuple(int(h) for h in given[name].split(",")) if given[name].strip() else ()
            except ValueError:
                raise ValueError(f"--{name.replace('_', '-')} takes comma-separated integers without gaps (e.g. 64,64), "
                                 f"got {given[name]!r}") from None
    flows = [s.strip() for s in given.pop("flow", base.get("flow", TrainConfig.flow)).split(",") if s.strip()]
    if not flows:
        raise ValueError(f"--flow names no flow; {VALID_FORMS}")
    names = [parse_flow(f).name for f in flows]
    if len(set(names)) != len(names):
        raise ValueError(f"--flow names a flow twice: {','.join(flows)}")
    if not ns.config:  # the algorithm's published defaults under the flags (a config file is already complete)
        base = {**ALGO_DEFAULTS.get(given.get("algo", TrainConfig.algo), {}), **base}
    merged = {**base, **given}
    if "init_std" in given and merged.get("policy", TrainConfig.policy) != "gaussian":
        raise ValueError(f"--init-std is the Gaussian policy's initial σ, but the policy is "
                         f"{merged.get('policy', TrainConfig.policy)}: add --policy gaussian, or drop --init-std")
    return [TrainConfig(**{**merged, "flow": name}) for name in names]


def train(ns: argparse.Namespace) -> int:
    """Run ``gradstop train``; returns the exit code."""
    from gradstop.trainers.run import NonFiniteError, make_sim, train as run_one

    configs = configs_from(ns)
    first = configs[0]
    sim = make_sim(first)  # checks the sim, backend and parameters before anything is written or printed
    if ns.print_config:
        print(json.dumps(first.to_dict() if len(configs) == 1 else [c.to_dict() for c in configs], indent=2))
        return EXIT_OK
    if first.backend == "jax" and first.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    digest = hashlib.sha256(json.dumps([c.identity() for c in configs], sort_keys=True).encode()).hexdigest()[:8]
    label = getattr(sim, "name", None) or first.sim.replace(":", "-")
    out = Path(ns.out) if ns.out else Path(ns.root) / f"train-{label}-{first.backend}-{digest}"
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
            if s.get("skipped_updates"):
                test += f", {s['skipped_updates']} of {s['updates']} updates skipped as non-finite"
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
    if out.exists() and not out.is_dir():
        raise ValueError(f"the results folder {out} is a file, not a folder: choose another --out")
    if sweep.exists():
        stored = read_json(sweep, "restore it, or choose another --out")
        if not isinstance(stored, dict) or stored.get("command") != "gradstop train" or not isinstance(stored.get("runs"), list):
            raise ValueError(f"{out} is the folder of a gradstop sweep, not of gradstop train runs: resume it with "
                             "gradstop sweep, or give train another --out")
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
        if (out / "config.json").exists():
            raise ValueError(f"{out} is the folder of one run (config.json); gradstop train writes each flow into a "
                             f"subfolder of --out: give the parent, or another --out")
        _check_runs_without_record(out, configs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot create the results folder {out}: {err.strerror or err}") from None
    atomic_write_json(sweep, record)


def _check_runs_without_record(out: Path, configs: list[TrainConfig]) -> None:
    """``out`` holds things but no sweep.json: accept it (the record is written anew) only if each of its entries is
    the run folder of one of ``configs`` with the same config."""
    mine = {c.flow_slug: c for c in configs}
    strangers = []
    for entry in sorted(out.iterdir()):
        config_file = entry / "config.json"
        if entry.name.startswith(".") or entry.name in ("summary.csv", "loss.png"):
            continue
        try:
            theirs = TrainConfig.from_dict(read_json(config_file), source=str(config_file))
        except (OSError, ValueError):
            strangers.append(entry.name)
            continue
        if entry.name not in mine or mine[entry.name].differences(theirs):
            strangers.append(entry.name)
    if strangers:
        raise ValueError(f"results folder {out} already exists and holds things that are not these runs "
                         f"({', '.join(strangers[:3])}{' …' if len(strangers) > 3 else ''}): choose another --out")


def _compare(out: Path, configs: list[TrainConfig]) -> None:
    """Every flow side by side: summary.csv and loss.png (test loss, or train loss without evaluations)."""
    from gradstop._plot import plot_lines

    rows, lines = [], {}
    keys = {"best_test_loss_selected_on_test": "best_test_loss"}  # the column's name says what the number is
    columns = ["flow", "first_loss", "final_loss", "final_test_loss", "best_test_loss_selected_on_test",
               "final_test_success", "seconds", "compile_seconds", "steps_per_second", "skipped_updates"]
    if configs[0].validation:
        columns += ["best_val_loss", "best_val_epoch", "test_loss_at_best_val"]
    for c in configs:
        folder = out / c.flow_slug
        s = json.loads((folder / "summary.json").read_text())
        rows.append([s.get(keys.get(k, k)) if k != "flow" else c.flow for k in columns])
        evals = np.genfromtxt(folder / "eval.csv", delimiter=",", names=True, ndmin=1)
        lines[c.flow] = (np.atleast_1d(evals["update"]), np.atleast_1d(evals["test_loss"]))
    text = ",".join(columns) + "\n" + "".join(",".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
    atomic_write(out / "summary.csv", text.encode())
    c = configs[0]
    buf = io.BytesIO()
    plot_lines(buf, lines, title=f"{c.algo.upper()} on {c.sim} ({c.backend}), H={c.horizon}, batch {c.batch}, lr {c.lr:g}",
               xlabel="update", ylabel=f"test loss ({c.test_size} initial states)", legend="flow")
    atomic_write(out / "loss.png", buf.getvalue())
