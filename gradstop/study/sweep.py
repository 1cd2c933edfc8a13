"""Sweeps: a grid of independent training runs, in-process or on a Ray cluster, resumable run by run.

A figure of the study is a grid of runs (task × flow × seed × setting). A sweep names each run and
trains it with :func:`gradstop.trainers.train` in its own folder, so everything the trainer
guarantees holds per run (atomic files, exact resume from the last checkpoint)::

    ROOT/sweep.json                every run's name and config (the union of every call so far)
    ROOT/runs/<name>/              the run's trainer folder: config.json, eval.csv, summary.json, ...
    ROOT/failures/<name>.json      a run that failed: its config, the error and its traceback
    ROOT/summary.csv               one row per run of the last call: status and final numbers

Calling it again skips finished runs, resumes interrupted ones from their checkpoints and retries
failed ones; a failure is recorded and reported, and never stops the other runs. A run that went
non-finite (``NonFiniteError``) is a result, not a crash: it is recorded as ``nonfinite`` and not
retried (it would diverge again, deterministically) unless ``retry_nonfinite=True``.

Runs execute one after another in this process, or as Ray tasks (``ray="local"``, ``"auto"`` or a
cluster's ``host:port``): Ray is the scheduler; each task trains one run and writes its folder
directly, so on a cluster ROOT must be a path every node mounts (a worker that cannot see it says
so). An address that does not answer is refused within seconds.

    runs = grid({"sim": "cartpole", "preset": "literature", "epochs": 50}, {"flow": ["none", "combined"], "seed": [0, 1, 2]})
    report = run_sweep(runs, "results/my-sweep", ray="local")
    report.raise_for_failures()
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import re
import os
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

from gradstop.trainers.config import TrainConfig
from gradstop._io import atomic_write, atomic_write_json, empty_but_unfinished_writes, hold_lock, is_unfinished_write, read_json

__all__ = ["Run", "Outcome", "SweepReport", "grid", "load_spec", "run_sweep", "connect_ray", "run_status", "read_runs", "check_runs",
           "SweepError", "populations", "execute_population", "default_compilation_cache"]

STATUSES = ("done", "skipped", "nonfinite", "failed")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+\-]*$")
SPEC_KEYS = ("name", "base", "grid")
CONNECT_TIMEOUT = 3.0  # seconds to wait for a Ray address to accept a connection before refusing it
PROBE_TIMEOUT = 20.0  # seconds for a Ray driver to connect to it (a child process, so a silent server cannot hang us)


class SweepError(RuntimeError):
    """Some runs of a sweep failed (their records are in ``ROOT/failures``)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: a folder name (letters, digits and ``_ . = , + -``) and its config."""

    name: str
    config: TrainConfig

    def __post_init__(self):
        if not isinstance(self.name, str) or not _SAFE_NAME.match(self.name) or ".." in self.name:
            raise ValueError(f"run name {self.name!r} is not a plain folder name: use letters, digits and _ . = , + - "
                             "(no '/', no leading '.', no '..')")
        if not isinstance(self.config, TrainConfig):
            raise TypeError(f"run {self.name}: config must be a TrainConfig, got {type(self.config).__name__}")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one run in this call: ``status`` is one of ``STATUSES`` (``skipped``: finished before)."""

    name: str
    status: str
    seconds: float = 0.0
    summary: dict | None = None
    error: str | None = None


@dataclasses.dataclass
class SweepReport:
    """Every run's outcome, in the order given."""

    root: Path
    outcomes: list

    def by_status(self, status: str) -> list:
        return [o for o in self.outcomes if o.status == status]

    @property
    def failed(self) -> list:
        return self.by_status("failed")

    @property
    def complete(self) -> bool:
        """True when every run has a result (done, finished before, or non-finite); failures are not results."""
        return not self.failed

    def counts(self) -> dict:
        return {s: len(self.by_status(s)) for s in STATUSES}

    def describe(self) -> str:
        c = self.counts()
        text = (f"{len(self.outcomes)} runs in {self.root}: {c['done']} trained, {c['skipped']} finished before, "
                f"{c['nonfinite']} stopped non-finite, {c['failed']} failed")
        for o in self.failed:
            text += f"\n  FAILED {o.name}: {o.error} (record: {self.root / 'failures' / (o.name + '.json')})"
        return text

    def raise_for_failures(self) -> None:
        if self.failed:
            raise SweepError(self.describe())


# -- building the runs ----------------------------------------------------------------------------
def _set(fields: dict, key: str, value) -> None:
    """``fields[key] = value``, where ``sim_params.<p>`` (or ``param.<p>``) sets one simulator parameter."""
    head, dot, param = key.partition(".")
    if dot and head in ("sim_params", "param"):
        fields["sim_params"] = {**fields.get("sim_params", {}), param: value}
    else:
        fields[key] = value


def _check_keys(keys, where: str) -> None:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in keys:
        head, dot, param = key.partition(".")
        if dot and head in ("sim_params", "param") and param:
            continue
        if key not in names:
            import difflib

            hint = difflib.get_close_matches(key, names, n=1)
            raise ValueError(f"{where}: unknown field {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + "; use a TrainConfig field (gradstop train --help) or sim_params.<parameter>")


def _value_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(map(_value_text, value))
    return str(value).replace(":", "_").replace("/", "_").replace(" ", "")


def grid(base: dict, axes: dict, *, names: dict | None = None) -> list[Run]:
    """Every combination of ``axes`` over ``base``: one :class:`Run` each, named ``key=value,key=value``.

    Args:
      base: TrainConfig fields shared by every run (``algo`` selects that algorithm's published defaults).
      axes: field -> list of values; ``sim_params.<p>`` sets one simulator parameter. The first axis varies slowest.
      names: optional field -> short name used in run names (default: the field, ``sim_params.`` dropped).

    Raises:
      ValueError: an unknown field, an empty axis, or a combination that is not a valid config (the message
        names the combination and the problem, e.g. an unknown flow).
    """
    if not isinstance(base, dict) or not isinstance(axes, dict):
        raise ValueError("a sweep needs a dict of base fields and a dict of axes (field -> list of values)")
    _check_keys(base, "sweep base")
    _check_keys(axes, "sweep grid")
    for key, values in axes.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"sweep grid: axis {key!r} must be a non-empty list of values, got {values!r}")
    names = names or {}
    runs = []
    for combo in itertools.product(*axes.values()):
        fields = json.loads(json.dumps(base))  # a deep copy of plain data
        for key, value in zip(axes, combo):
            _set(fields, key, value)
        label = ",".join(f"{names.get(k, k.partition('.')[2] or k)}={_value_text(v)}" for k, v in zip(axes, combo))
        try:
            config = TrainConfig.for_algo(fields.pop("algo", "bptt"), **fields)
        except (ValueError, TypeError) as err:
            raise ValueError(f"sweep run {label or '(base)'}: {err}") from None
        runs.append(Run(label or "base", config))
    return runs


def load_spec(path: Path | str) -> tuple[str, list[Run]]:
    """A sweep file: JSON ``{"name": ..., "base": {fields}, "grid": {field: [values]}}`` -> (name, runs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {path} does not exist (write a JSON object with 'base' and 'grid')")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"sweep file {path} is not valid JSON: {err}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"sweep file {path} must hold a JSON object with 'base' and 'grid'")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"sweep file {path}: unknown key(s) {unknown}; it takes {list(SPEC_KEYS)}")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ValueError(f"sweep file {path}: name {name!r} must be a plain word (letters, digits, _ . -)")
    return name, grid(spec.get("base", {}), spec.get("grid", {}))


def check_runs(runs: list[Run]) -> None:
    """Refuse duplicate names, and a simulator that cannot be built, before anything runs."""
    seen = set()
    for r in runs:
        if r.name in seen:
            raise ValueError(f"the sweep names run {r.name!r} twice: give every run its own name")
        seen.add(r.name)
    from gradstop.trainers.run import make_sim

    checked = set()
    for r in runs:
        key = json.dumps([r.config.sim, r.config.backend, r.config.preset, r.config.sim_params], sort_keys=True, default=str)
        if key in checked:
            continue
        try:
            make_sim(r.config)
        except (ValueError, TypeError, ImportError) as err:
            raise ValueError(f"sweep run {r.name}: {err}") from None
        checked.add(key)


def _check_importable(runs: list[Run]) -> None:
    """Ray workers are other processes: a simulator registered in this one (``sims.register``) is unknown there."""
    import sims

    for r in runs:
        if r.config.sim in sims.names() and r.config.sim not in sims.BUILTINS:
            factory = sims._REGISTRY[r.config.sim]
            module, qualname = getattr(factory, "__module__", "__main__"), getattr(factory, "__qualname__", "MySim")
            where = (f"sim={module + ':' + qualname!r}" if module != "__main__" else
                     f"move {qualname} into a module file (e.g. mysims.py) and use sim='mysims:{qualname}'")
            raise ValueError(f"sweep run {r.name}: simulator {r.config.sim!r} was registered in this process "
                             f"(sims.register), and Ray workers do not see it: name it by where it lives, {where} "
                             "(importable from the current directory or PYTHONPATH on every node)")


# -- the folder -----------------------------------------------------------------------------------
def _claim(root: Path, runs: list[Run]) -> None:
    """Record the runs in ``root/sweep.json`` (creating ``root``), refusing a name configured differently before."""
    manifest = root / "sweep.json"
    stored = {}
    if root.exists() and not root.is_dir():
        raise ValueError(f"the sweep folder {root} is a file, not a folder: choose another --out")
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
            stored = data["runs"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ValueError(f"{manifest} is not a gradstop sweep manifest: choose another --out") from None
        if isinstance(data, dict) and data.get("command") == "gradstop train":
            raise ValueError(f"{root} holds the runs of a gradstop train command, not a sweep: give the sweep another --out")
        if not isinstance(stored, dict):
            raise ValueError(f"{manifest} is not a gradstop sweep manifest: choose another --out")
        for r in runs:
            if r.name in stored:
                old = TrainConfig.from_dict(stored[r.name], source=f"{manifest} (run {r.name})")
                diffs = r.config.differences(old)
                if diffs:
                    raise ValueError(f"{root} holds run {r.name} with another config ({'; '.join(diffs)}): a sweep "
                                     "never overwrites a run; choose another --out")
    elif root.exists() and not empty_but_unfinished_writes(root):
        if (root / "config.json").exists():
            raise ValueError(f"{root} holds a single training run (config.json), not a sweep: give the sweep another --out")
        if (root / "runs").is_dir():
            _check_orphans(root, runs)  # a sweep whose manifest was lost: its runs are checked, then it is rewritten
        elif not (root / "settings.json").exists():  # settings.json alone: a figure drawn before any run
            raise ValueError(f"{root} exists and is not a gradstop sweep (no sweep.json): choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    merged = {**stored, **{r.name: r.config.to_dict() for r in runs}}
    from gradstop._io import versions

    atomic_write_json(manifest, {"runs": merged, "versions": versions(runs[0].config.backend) if runs else {}})


def _check_orphans(root: Path, runs: list[Run]) -> None:
    """``root`` holds run folders but no sweep.json: accept it only if every run folder is one of ``runs`` with the
    same config (then the manifest is written anew); refuse it, naming the strangers, otherwise."""
    by_name = {r.name: r for r in runs}
    strangers = []
    for folder in sorted(p for p in (root / "runs").iterdir() if not is_unfinished_write(p)):
        run, config_file = by_name.get(folder.name), folder / "config.json"
        if run is None or not config_file.exists():
            strangers.append(folder.name)
            continue
        try:
            stored = TrainConfig.from_dict(read_json(config_file), source=str(config_file))
        except ValueError:
            strangers.append(folder.name)
            continue
        if run.config.differences(stored):
            strangers.append(folder.name)
    if strangers:
        shown = ", ".join(strangers[:3]) + (f" and {len(strangers) - 3} more" if len(strangers) > 3 else "")
        raise ValueError(f"{root / 'sweep.json'} is missing and {root / 'runs'} holds runs this sweep does not name or "
                         f"configures otherwise ({shown}): restore sweep.json, or choose another --out")
    warnings.warn(f"{root / 'sweep.json'} was missing; every run in {root / 'runs'} is one of this sweep's with the same "
                  "config, so it is written anew and they are reused", RuntimeWarning, stacklevel=4)


def run_status(root: Path | str, run: Run) -> str | None:
    """``done`` (summary.json of this config), ``nonfinite`` (recorded so), ``failed`` (recorded), or None (to run)."""
    root = Path(root)
    folder, record = root / "runs" / run.name, root / "failures" / f"{run.name}.json"
    if (folder / "summary.json").exists() and (folder / "config.json").exists():
        stored = TrainConfig.from_dict(read_json(folder / "config.json"), source=str(folder / "config.json"))
        if not run.config.differences(stored):
            return "done"
    if record.exists():
        return read_json(record).get("status", "failed")
    return None


# -- one run (in this process or in a Ray worker) -------------------------------------------------
def execute(name: str, config: dict, root: str, path: str | None = None) -> dict:
    """Train one run into ``root/runs/name``; never raises: returns ``{status, seconds, summary | error}``.

    ``path``: a folder to put first on ``sys.path`` (the driver's current directory, so that a ``"module:Class"``
    simulator imports in a Ray worker as it does where the sweep was started)."""
    tick = time.perf_counter()
    root_path = _worker_root(root, path)
    if root_path is None:
        return dict(status="failed", seconds=0.0, error=f"the sweep folder {root} is not visible on {socket.gethostname()}: "
                    "Ray workers write their runs directly, so put --out on a filesystem every node mounts at the same path")
    try:
        from gradstop.trainers.run import NonFiniteError, train

        cfg = TrainConfig.from_dict(config, source=f"run {name}")
        with _jax_setup(cfg, root_path):
            result = train(cfg, root_path / "runs" / name)
        return dict(status="done", seconds=time.perf_counter() - tick, summary=result.summary)
    except NonFiniteError as err:
        return dict(status="nonfinite", seconds=time.perf_counter() - tick, error=str(err))
    except Exception as err:  # noqa: BLE001 -- a failed run is recorded and reported; it never stops the sweep
        return dict(status="failed", seconds=time.perf_counter() - tick, error=f"{type(err).__name__}: {err}",
                    traceback=traceback.format_exc())


def execute_population(names: list[str], configs: list[dict], root: str, path: str | None = None) -> list[dict]:
    """Train runs that differ only in their seed as one population (``train_population(..., out=folders)``); never
    raises: a result per run, as :func:`execute` gives. A population that fails (a member went non-finite, or anything
    else) is trained again run by run, so each run gets the outcome it has alone and nothing is recorded twice."""
    tick = time.perf_counter()
    root_path = _worker_root(root, path)
    if root_path is None:  # not visible on this node: each run's result says so
        return [execute(n, c, root, path) for n, c in zip(names, configs)]
    try:
        from gradstop.trainers import train_population

        cfgs = [TrainConfig.from_dict(c, source=f"run {n}") for n, c in zip(names, configs)]
        with _jax_setup(cfgs[0], root_path):
            results = train_population(cfgs[0], [c.seed for c in cfgs], out=[root_path / "runs" / n for n in names])
    except Exception:  # noqa: BLE001 -- each run alone says what happened to it
        return [execute(n, c, root, path) for n, c in zip(names, configs)]
    seconds = (time.perf_counter() - tick) / len(names)  # the population's wall-clock, shared out
    return [dict(status="done", seconds=seconds, summary=r.summary) for r in results]


def populations(pending: list[Run], root: Path, size: int) -> list[list[Run]]:
    """``pending`` cut into the groups that train together: up to ``size`` runs whose configs differ only in their seed
    (JAX, no wall-clock budget, their folders new or holding only config.json), in order of their first run; every
    other run alone."""
    if size < 1:
        raise ValueError(f"population must be ≥ 1 runs per task, got {size}")
    groups: dict[str, list[Run]] = {}
    out: list[list[Run]] = []
    for r in pending:
        folder = root / "runs" / r.name
        fresh = not folder.exists() or {p.name for p in folder.iterdir()} <= {"config.json"}
        if size == 1 or r.config.backend != "jax" or r.config.max_seconds is not None or not fresh:
            out.append([r])
            continue
        key = json.dumps({k: v for k, v in r.config.identity().items() if k != "seed"}, sort_keys=True, default=str)
        group = groups.get(key)
        if group is None or len(group) == size:
            group = groups[key] = []
            out.append(group)
        group.append(r)
    return out


def _worker_root(root: str, path: str | None) -> Path | None:
    """A worker's view of the sweep: ``path`` put first on ``sys.path``; the sweep folder, None where this node
    cannot see it."""
    if path and os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)
    root_path = Path(root)
    return root_path if (root_path / "sweep.json").exists() else None


def default_compilation_cache(folder: Path | str) -> str | None:
    """Keep JAX's compiled programs in ``folder`` across processes, unless the user set a cache (its environment
    variable or config); the setting found before, to put back where a caller wants to."""
    import jax

    before = jax.config.jax_compilation_cache_dir
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR") and not before:
        jax.config.update("jax_compilation_cache_dir", str(folder))
    return before


@contextlib.contextmanager
def _jax_setup(config: TrainConfig, root: Path):
    """For a JAX run: JAX's 64-bit mode on exactly for float64 runs — so a run's numbers do not depend on what ran
    before it in this process, nor on whether it ran here or in a Ray worker — and a persistent compilation cache in
    ``root/.jax-cache`` (unless the user set one): runs that differ only in their seed compile the same programs,
    which Brax tasks take 30–60 s each to compile. The 64-bit mode is restored on leaving; a torch run: nothing."""
    if config.backend != "jax":
        yield
        return
    import jax

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", config.dtype == "float64")
    default_compilation_cache(root / ".jax-cache")
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def _record(root: Path, run: Run, result: dict) -> Outcome:
    """Write (or clear) the run's failure record; the run's Outcome."""
    record = root / "failures" / f"{run.name}.json"
    if result["status"] == "done":
        if record.exists():
            record.unlink()
    else:
        record.parent.mkdir(exist_ok=True)
        atomic_write_json(record, {"name": run.name, "status": result["status"], "error": result.get("error"),
                                   "traceback": result.get("traceback"), "config": run.config.to_dict(),
                                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return Outcome(run.name, result["status"], result.get("seconds", 0.0), result.get("summary"), result.get("error"))


# -- Ray ------------------------------------------------------------------------------------------
def connect_ray(address: str, *, cpus: int | None = None):
    """Connect to Ray: ``local`` (start an instance here with ``cpus``), ``auto`` (the cluster this machine
    runs) or ``host:port`` / ``ray://host:port``. Returns True when this call started Ray (and should stop it).

    Raises:
      ImportError: Ray is not installed. ConnectionError: nothing answers at the address (within seconds).
    """
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs the ray package: pip install 'gradstop[sweep]' (or pip install ray)") from None
    if ray.is_initialized():
        return False
    quiet = dict(logging_level="ERROR", log_to_driver=False)
    if address == "local":  # a new instance of our own, even where `ray start` left a cluster to find
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
        return True
    if address == "auto":
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:
            raise ConnectionError("--ray auto: no Ray cluster runs on this machine; start one (`ray start --head`), give "
                                  "its address (--ray HOST:PORT), or use --ray local") from None
        return True
    host, port = _host_port(address)
    hint = "check the address of the cluster's head node (`ray status` there), or use --ray local"
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        raise ConnectionError(f"--ray {address}: nothing answers at {host}:{port} within {CONNECT_TIMEOUT:g} s ({err}); {hint}") from None
    # Something listens; Ray itself would retry a non-Ray or silent server for minutes, so a child process with a
    # deadline connects first. Clusters started by `ray start` use token authentication, and a driver whose
    # RAY_AUTH_MODE is unset does not send the token it has (~/.ray/auth_token, RAY_AUTH_TOKEN): a refused probe is
    # retried in token mode, which this process then takes too.
    modes = [None]
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").exists()):
        modes.append("token")
    for mode in modes:
        why = _probe_ray(address, mode)
        if why is None:
            break
    else:
        raise ConnectionError(f"--ray {address}: no Ray cluster answers at {host}:{port} ({why}); {hint} (a cluster with "
                              "token authentication needs its token in RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    if mode is not None:
        os.environ["RAY_AUTH_MODE"] = mode
        from ray._raylet import Config  # re-read the mode, as Ray does itself after setting it

        Config.initialize("")
    ray.init(address=address, **quiet)
    return True


def _probe_ray(address: str, auth_mode: str | None) -> str | None:
    """Connect a Ray driver to ``address`` in a child process with a deadline; None if it connected, else why not."""
    probe = "import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); ray.shutdown()" % address
    env = {**os.environ, "RAY_NUM_REDIS_GET_RETRIES": os.environ.get("RAY_NUM_REDIS_GET_RETRIES", "3")}
    if auth_mode is not None:
        env["RAY_AUTH_MODE"] = auth_mode
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"it accepts connections but no Ray driver connected within {PROBE_TIMEOUT:g} s"
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or ["no message"])[-1]


def _host_port(address: str) -> tuple[str, int]:
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "10001" if address.startswith("ray://") else "6379"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise ValueError(f"--ray {address!r} is not an address: give local, auto, HOST:PORT or ray://HOST:PORT")
    return host, number


# -- the sweep ------------------------------------------------------------------------------------
def run_sweep(runs: list[Run], root: Path | str, *, ray: str | None = None, cpus: int | None = None,
              cpus_per_run: float = 1.0, retry_nonfinite: bool = False, progress: bool = True,
              population: int = 1) -> SweepReport:
    """Train every run not finished yet in ``root/runs/<name>``; a report of every run's outcome.

    Args:
      runs: the sweep's runs (:func:`grid`, :func:`load_spec`, or built by an experiment script).
      root: the sweep folder (created; reused if it holds this sweep; refused if it holds anything else).
      ray: None to run in this process one after another; ``local``, ``auto`` or an address to run as Ray tasks.
      cpus: ``ray="local"``: CPUs of the local instance (default: all).
      cpus_per_run: CPUs Ray reserves for each run.
      retry_nonfinite: also rerun runs recorded as non-finite.
      progress: a progress bar and one line per finished run.
      population: train up to this many new JAX runs that differ only in their seed as one vmapped program per task
        (``gradstop.trainers.train_population``); each run's ``summary.json`` names its population
        (``population_seeds``). On 2 cores, 4 per task measured 1.4–1.5× the runs per hour of one run per task
        (``experiments/sweep_throughput.py``). A run started before (a checkpoint) resumes alone.
    """
    runs = list(runs)
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ValueError(f"population must be an integer ≥ 1 (runs trained together per task), got {population!r}")
    if not runs:
        raise ValueError("the sweep has no runs")
    root = Path(root)
    check_runs(runs)
    if ray is not None:
        _check_importable(runs)
    started = connect_ray(ray, cpus=cpus) if ray is not None else False  # a bad address fails before any file is written
    try:
        return _sweep(runs, root, ray, cpus_per_run, retry_nonfinite, progress, population)
    finally:
        if started:
            import ray as ray_module

            ray_module.shutdown()


def _sweep(runs, root, ray, cpus_per_run, retry_nonfinite, progress, population=1) -> SweepReport:
    _claim(root, runs)
    with _lock(root):
        return _run_pending(runs, root, ray, cpus_per_run, retry_nonfinite, progress, population)


def _lock(root: Path):
    """Hold ``root/.sweep.lock`` for the sweep: a second sweep process on the same folder would train the same runs
    into the same folders, so it is refused."""
    return hold_lock(root / ".sweep.lock", "another gradstop sweep")


def _run_pending(runs, root, ray, cpus_per_run, retry_nonfinite, progress, population=1) -> SweepReport:
    outcomes: dict[str, Outcome] = {}
    pending = []
    for r in runs:
        status = run_status(root, r)
        if status == "done":
            summary = read_json(root / "runs" / r.name / "summary.json")
            outcomes[r.name] = Outcome(r.name, "skipped", summary=summary)
        elif status == "nonfinite" and not retry_nonfinite:
            error = read_json(root / "failures" / f"{r.name}.json").get("error")
            outcomes[r.name] = Outcome(r.name, "nonfinite", error=error)
        else:
            pending.append(r)
    bar = _bar(progress, len(runs), len(runs) - len(pending))

    def finished(r, result):
        outcomes[r.name] = o = _record(root, r, result)
        if bar is not None:
            bar.update(1)
            bar.write(_line(o))
    try:
        batches = populations(pending, root, population)
        if ray is None:
            for batch in batches:
                for r, result in zip(batch, _execute_batch(batch, str(root))):
                    finished(r, result)
        elif pending:
            _run_on_ray(batches, root, cpus_per_run, finished)
    finally:
        if bar is not None:
            bar.close()
        report = SweepReport(root, [outcomes[r.name] for r in runs if r.name in outcomes])
        _write_summary(root, runs, outcomes)
    return report


ONE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def one_thread_env() -> dict:
    """The environment of a Ray worker, where several runs share the machine: one intra-op thread per run. XLA reads
    its flags when JAX is imported, so they go into the worker's environment before it starts (after any XLA_FLAGS
    of the driver's); OpenMP's and MKL's thread counts likewise."""
    flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), ONE_THREAD_XLA_FLAGS) if f)
    return {"XLA_FLAGS": flags, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _execute_batch(batch: list[Run], root: str, path: str | None = None) -> list[dict]:
    """A result per run of ``batch``: one run alone (:func:`execute`), several as a population."""
    if len(batch) == 1:
        return [execute(batch[0].name, batch[0].config.to_dict(), root, path)]
    return execute_population([r.name for r in batch], [r.config.to_dict() for r in batch], root, path)


def _execute_one_thread(batch: list[Run], root: str, *rest) -> list[dict]:
    """:func:`_execute_batch` in a Ray worker with one intra-op thread: torch is told here (XLA by ``one_thread_env``);
    each result says what the worker ran with (``threads``)."""
    torch_threads = None
    if batch[0].config.backend == "torch":
        import torch

        torch.set_num_threads(1)
        torch_threads = torch.get_num_threads()
    results = _execute_batch(batch, root, *rest)
    for result in results:
        result["threads"] = dict(xla_flags=os.environ.get("XLA_FLAGS"), torch=torch_threads)
    return results


def _run_on_ray(batches, root, cpus_per_run, finished) -> None:
    """One Ray task per batch (a run, or a population: :func:`populations`), connected by :func:`connect_ray`; each
    run's outcome as its task ends."""
    import ray

    task = ray.remote(_execute_one_thread).options(num_cpus=cpus_per_run, max_retries=0,
                                                   runtime_env={"env_vars": one_thread_env()})
    futures = {task.remote(batch, str(root.resolve()), os.getcwd()): batch for batch in batches}
    try:
        while futures:
            done, _ = ray.wait(list(futures), num_returns=1)
            batch = futures.pop(done[0])
            try:
                results = ray.get(done[0])
            except (ray.exceptions.LocalRayletDiedError, ray.exceptions.NodeDiedError):
                # the local Ray node went (Ctrl-C shuts it down before the driver sees the interrupt, or it was killed):
                # every run still pending would "fail" the same way; they are unfinished, not failed
                unfinished = len(batch) + sum(len(b) for b in futures.values())
                raise RuntimeError(f"the local Ray node stopped with {unfinished} runs unfinished; nothing was recorded "
                                   "for them: run the same command again to resume (each run from its checkpoint)") from None
            except Exception as err:  # noqa: BLE001 -- a worker that died (OOM, node lost) is its runs' failure
                error = dict(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
                results = [error] * len(batch)
            for r, result in zip(batch, results):
                finished(r, result)
    finally:
        for f in futures:  # interrupted: stop the runs still going (each resumes from its checkpoint next time)
            ray.cancel(f, force=True)


def _line(o: Outcome) -> str:
    if o.status == "done":
        s = o.summary or {}
        test = s.get("final_test_loss")
        return f"  done {o.name}: final test loss {test:.4g} ({o.seconds:.0f} s)" if test is not None else f"  done {o.name}"
    return f"  {o.status.upper()} {o.name}: {o.error}"


def _bar(progress: bool, total: int, done: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="sweep", unit="run", file=sys.stderr)


SUMMARY_FIELDS = ("final_test_loss", "best_test_loss", "final_test_success", "final_test_reward", "final_loss", "seconds",
                  "compile_seconds")


def _write_summary(root: Path, runs: list[Run], outcomes: dict) -> None:
    """``root/summary.csv``: one row per run of this call (status and the final numbers of finished runs)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "status", *SUMMARY_FIELDS, "error"])
    for r in runs:
        o = outcomes.get(r.name, Outcome(r.name, "pending"))
        s = o.summary or {}
        writer.writerow([r.name, "done" if o.status == "skipped" else o.status,
                         *("" if s.get(k) is None else s[k] for k in SUMMARY_FIELDS), o.error or ""])
    atomic_write(root / "summary.csv", buf.getvalue().encode())


def read_runs(root: Path | str, runs: list[Run]) -> dict:
    """The finished runs' records: name -> {"config", "summary", "evals"} (evals: eval.csv's rows as numbers);
    a run recorded non-finite has summary None and its evaluations so far."""
    from gradstop.trainers.files import MetricsLog
    from gradstop.trainers.run import eval_columns

    root, out = Path(root), {}
    for r in runs:
        status = run_status(root, r)
        if status not in ("done", "nonfinite"):
            continue
        folder = root / "runs" / r.name
        evals = MetricsLog(folder / "eval.csv", eval_columns(r.config)).read() if (folder / "eval.csv").exists() else []
        summary = read_json(folder / "summary.json") if status == "done" else None
        out[r.name] = {"config": r.config, "summary": summary, "evals": evals, "status": status}
    return out
