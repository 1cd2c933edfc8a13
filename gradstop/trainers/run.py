"""The training loop of every trainer and framework: epochs, evaluation, metrics, checkpoints, resume.

``train(config, out=DIR)`` runs one config in a results folder::

    DIR/config.json        the TrainConfig (written first; reloadable)
    DIR/updates.csv        one row per update: loss, gradient norm before/after clipping, cosine
                           input/none (combining flows), learning rate, finite, critic loss (SHAC),
                           seconds, environment steps/s
    DIR/eval.csv           one row per evaluation (the untrained policy first): test loss, test success,
                           episode reward (simulators with a reward, e.g. Brax); with validation=True
                           also the validation set's loss and success
    DIR/checkpoint.npz|pt  the whole state every ``checkpoint_every`` epochs (atomic)
    DIR/policy.npz         final weights (either framework's ``set_weights`` loads them)
    DIR/summary.json       written last: its presence marks the run complete. ``final_test_loss`` is
                           the last evaluation's; ``best_test_loss`` the lowest over evaluations, chosen
                           on the test set itself (optimistic: compare runs by final values); with
                           validation=True ``final_val_loss`` is the last evaluation's validation loss and
                           ``test_loss_at_best_val`` the test loss of the evaluation with the lowest
                           validation loss (``best_val_loss``, ``best_val_epoch``)
    DIR/loss.png           train and test loss against updates

Run the same command again after a crash or SIGKILL and it resumes from the last checkpoint
(losing at most ``checkpoint_every`` epochs) and produces exactly the numbers of an
uninterrupted run: the data streams are keyed by (seed, epoch) (``gradstop.trainers.data``), the
checkpoint holds parameters, optimizer and schedule state, and the metrics logs are cut back to
the checkpoint's record of them. A folder holding a run with a different config is refused, a
complete run is not touched. Wall-clock columns (``seconds``) continue from the checkpoint's
clock; compile time (JAX) is reported once in ``summary.json`` and not counted in ``seconds``.

``train(config)`` without ``out`` runs in memory (no files) and returns the same records.
"""

from __future__ import annotations

import importlib
import io
import json
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gradstop._checks import check_protocol, explained, kept
from gradstop.flows import parse_flow
from gradstop.mixing import STAT_NAMES
from gradstop.trainers.config import TrainConfig
from gradstop.trainers.data import Data
from gradstop._io import hold_lock, read_json
from gradstop.trainers.files import MetricsLog, atomic_write, atomic_write_json, empty_but_unfinished_writes

__all__ = ["train", "RunResult", "NonFiniteError", "UPDATE_COLUMNS", "EVAL_COLUMNS", "eval_columns", "update_columns", "make_sim", "program_for", "check_task",
           "CHECKPOINT_FILES", "summarise", "check_rebuilds", "write_finished"]

METRICS = ["loss", "grad_norm", "grad_norm_clipped", "cos_input_none", "lr", "finite", "critic_loss"]  # per update, from a program
UPDATE_COLUMNS = ["epoch", "update", *METRICS, "seconds", "steps_per_second"]
# updates.csv's last columns for a zeroth-/α-order flow (gradstop.mixing.STAT_NAMES): α, ‖ĝ1 − ĝ0‖, ε, σ0², σ1²
MIXING_COLUMNS = list(STAT_NAMES)


def update_columns(config: TrainConfig) -> list[str]:
    """updates.csv's header for ``config``: ``UPDATE_COLUMNS``, then ``MIXING_COLUMNS`` for a zeroth-/α-order flow."""
    return UPDATE_COLUMNS + (MIXING_COLUMNS if parse_flow(config.flow).mixed else [])
EVAL_COLUMNS = ["epoch", "update", "test_loss", "test_success", "test_reward", "seconds"]
VALIDATION_COLUMNS = ["val_loss", "val_success"]  # eval.csv's last columns with validation=True


def eval_columns(config: TrainConfig) -> list[str]:
    """eval.csv's header for ``config``: ``EVAL_COLUMNS``, then ``VALIDATION_COLUMNS`` with a validation set."""
    return EVAL_COLUMNS + (VALIDATION_COLUMNS if config.validation else [])
CHECKPOINT_FILES = {"jax": "checkpoint.npz", "torch": "checkpoint.pt"}
LOCK_FILE = ".train.lock"  # held while a process trains into the folder


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient stopped a run (``on_nonfinite='stop'``)."""

    def __init__(self, message: str, *, update: int, epoch: int, flow: str, metrics: dict | None = None):
        super().__init__(message)
        self.update, self.epoch, self.flow = update, epoch, flow
        self.metrics = metrics  # the stopped epoch's per-update metrics up to the stopping update, where known


class RunResult(NamedTuple):
    """What :func:`train` returns.

    Attributes:
      policy: the trained policy (JAX: a new module; torch: the module, trained in place).
      updates: one dict per update (``UPDATE_COLUMNS``); from the files when the run has a folder.
      evals: one dict per evaluation (``EVAL_COLUMNS``).
      summary: final numbers (as in ``summary.json``).
      folder: the results folder, or None for an in-memory run.
    """

    policy: Any
    updates: list
    evals: list
    summary: dict
    folder: Path | None


def make_sim(config: TrainConfig):
    """The config's simulator: ``sims.make(config.sim, ...)`` (a built-in or registered name, ``brax:<env>``,
    or ``"package.module:Class"``)."""
    from sims import make

    return make(config.sim, backend=config.backend, preset=config.preset, **config.sim_params)


def check_rebuilds(config: TrainConfig, sim) -> None:
    """Refuse ``sim`` for a run with a results folder unless ``make_sim(config)`` builds the same simulator (a
    resumed run rebuilds it from config.json): built by ``sims.make`` with the config's arguments, or of the
    same class with the same ``describe()``."""
    import sims

    made = sims.origin(sim)
    if made == {"name": config.sim, "backend": config.backend, "preset": config.preset, "params": config.sim_params}:
        return
    kind = type(sim).__name__
    fix = (f"set TrainConfig(sim=...) to the name you gave sims.register, or to '{type(sim).__module__}:{kind}', with its "
           "parameters in sim_params — or run in memory (out=None)")
    try:
        rebuilt = make_sim(config)
    except (ValueError, TypeError, ImportError) as err:
        raise ValueError(f"a run with a results folder rebuilds its simulator from the config when it resumes, but the "
                         f"config's sim {config.sim!r} does not build: {err}; {fix}") from None
    if type(rebuilt) is type(sim) and hasattr(sim, "describe"):
        same = json.dumps(rebuilt.describe(), sort_keys=True, default=repr) == json.dumps(sim.describe(), sort_keys=True, default=repr)
        if same:
            return
        raise ValueError(f"sim= is {sim!r}, but the config builds {rebuilt!r} (sim {config.sim!r}, preset {config.preset!r}, "
                         f"sim_params {config.sim_params}), and a resumed run would rebuild that: put the simulator's "
                         "parameters in the config's sim_params (and preset)")
    if type(rebuilt) is type(sim):  # no describe() to compare
        raise ValueError(f"sim= is a {kind} without describe(), so it cannot be compared with the one the config builds; "
                         f"build it with sims.make({config.sim!r}, ...) and the config's backend, preset and sim_params, "
                         "or pass no sim= (the run builds its own)")
    raise ValueError(f"sim= is a {kind}, but the config's sim {config.sim!r} builds a {type(rebuilt).__name__}; a run with a "
                     f"results folder rebuilds its simulator from the config when it resumes: {fix}")


def check_task(sim, seed: int = 0) -> None:
    """Refuse a task whose running cost cannot carry a gradient: a simulator with an env reward (Brax) whose
    cost is the same for random actions from random states (e.g. a constant reward)."""
    if not getattr(sim, "pytree_state", False) or not hasattr(sim, "reward"):
        return
    import jax

    x = sim.reset(seed, 4)
    actions = jax.random.uniform(jax.random.key(seed), (4, sim.action_dim), minval=-1.0, maxval=1.0)
    cost = np.asarray(sim.cost(sim.step(x, actions), actions))
    if np.ptp(cost) == 0.0:
        name = sim.describe()["name"]
        raise ValueError(f"{name}'s cost is {cost[0]:g} whatever the state and action (its reward is constant), so no "
                         f"gradient can train on it: give it a state-dependent cost in sims.brax.COSTS "
                         f"(as inverted_pendulum has), or pick a task with a shaped reward (reacher, hopper, halfcheetah)")


def program_for(config: TrainConfig, sim, policy=None):
    """The backend's trainer object for ``config`` (``gradstop.trainers.<backend>.<algo>``).

    With ``world_model`` it first fits the model (``gradstop.trainers.world_model``) and trains through it
    (``model_use='chain'``) or through the simulator with the model's step derivatives (``'surrogate'``).
    """
    module = importlib.import_module(f"gradstop.trainers.{config.backend}.{config.algo}")
    model = None
    if config.world_model:
        from gradstop.trainers import world_model

        model = world_model.fit(config, sim)  # deterministic: a resumed run refits the same model
        if config.model_use == "surrogate":  # the true forward, the model's step derivatives
            from sims.surrogate import Surrogate

            model = Surrogate(sim, model)
    return getattr(module, config.algo.upper())(config, sim, policy, model=model)


class _Memory:
    """In-memory stand-in for a MetricsLog."""

    def __init__(self):
        self.rows = []

    def append(self, rows):
        self.rows += rows

    def read(self):
        return self.rows


def train(config: TrainConfig, out: Path | str | None = None, *, policy=None, sim=None, progress: bool = False,
          tensorboard: Path | str | None = None) -> RunResult:
    """Run ``config`` to completion, in the folder ``out`` (resuming it if it holds this run) or in memory.

    Args:
      config: the run's settings.
      out: results folder; None runs in memory (no files, no checkpoints).
      policy: start from this policy instead of the config's freshly initialised MLP (in-memory runs).
      sim: use this simulator instead of building the config's; with ``out`` only one the config rebuilds
        (``sims.make(config.sim, ...)`` of a registered name or ``"module:Class"``), since a resumed run rebuilds it.
      progress: show a progress bar with the loss and environment steps per second.
      tensorboard: also log scalars to this TensorBoard folder (needs ``tensorboardX``).

    Raises:
      NonFiniteError: a non-finite loss or gradient with ``on_nonfinite='stop'`` (the last good
        checkpoint stays in ``out``).
      ValueError: ``out`` holds another run or something else; a checkpoint does not fit.
    """
    if out is not None and policy is not None:
        raise ValueError("a run with a results folder is built from its config alone (resume needs that); "
                         "pass policy= only to in-memory runs (out=None)")
    if out is not None and sim is not None:
        check_rebuilds(config, sim)
    sim = make_sim(config) if sim is None else sim
    check_protocol(sim, needs_reset=False)  # the trainers draw initial states from init_bounds (gradstop.trainers.data)
    check_task(sim, config.seed)
    data = Data.from_config(sim, config)
    program = program_for(config, sim, policy)
    if out is None:
        updates, evals = _Memory(), _Memory()
        return _loop(config, program, data, updates, evals, None, progress, tensorboard)

    folder = Path(out)
    _prepare(folder, config)
    with hold_lock(folder / LOCK_FILE, "another gradstop run"):  # two processes would write every row twice
        if (folder / "summary.json").exists():
            return _complete(folder, config, program)
        _check_logs_kept(folder, config)
        updates, evals = MetricsLog(folder / "updates.csv", update_columns(config)), MetricsLog(folder / "eval.csv", eval_columns(config))
        return _loop(config, program, data, updates, evals, folder, progress, tensorboard)


def _check_logs_kept(folder: Path, config: TrainConfig) -> None:
    """Before a resume re-creates a missing log: a checkpoint records rows of both logs, so a lost one is refused."""
    checkpoint = folder / CHECKPOINT_FILES[config.backend]
    for name in ("updates.csv", "eval.csv"):
        if checkpoint.exists() and not (folder / name).exists():
            raise ValueError(f"{folder / name} is missing, but the checkpoint {checkpoint.name} records its rows up to "
                             f"its epoch, so resuming would lose them: restore it, or delete {checkpoint} to restart the "
                             "run from scratch")


def _complete(folder: Path, config: TrainConfig, program) -> RunResult:
    """A finished run's records, read back (its weights loaded into ``program``)."""
    summary = _read_json(folder / "summary.json")
    path = folder / "policy.npz"
    try:
        with np.load(path) as z:
            weights = [z[k] for k in z.files]
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is unreadable ({_short(err)}); delete {folder / 'summary.json'} and run the same "
                         "command again to rewrite it from the last checkpoint") from None
    program.load_weights(weights)
    return RunResult(program.policy, _read_log(folder / "updates.csv", update_columns(config)),
                     _read_log(folder / "eval.csv", eval_columns(config)), summary, folder)


def _prepare(folder: Path, config: TrainConfig) -> bool:
    """Create ``folder`` for ``config`` or check that it holds this run; True if the run is complete."""
    config_file = folder / "config.json"
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the results folder {folder} is a file, not a folder: choose another --out")
    if folder.is_dir() and not config_file.exists():
        if (folder / "sweep.json").exists() or (folder / "runs").is_dir():
            raise ValueError(f"{folder} is a sweep's folder (its runs are in {folder / 'runs'}/<name>): resume the sweep "
                             "with gradstop sweep, or give train another --out")
        if not empty_but_unfinished_writes(folder):
            raise ValueError(f"{folder} exists and is not a gradstop run (no config.json): choose another --out")
    if config_file.exists():
        stored = TrainConfig.from_dict(_read_json(config_file), source=str(config_file))
        diffs = config.differences(stored)
        if diffs:
            raise ValueError(f"{folder} holds a run with a different config ({'; '.join(diffs)}): resume it with its "
                             f"own settings (gradstop train --config {config_file}) or choose another --out")
        return (folder / "summary.json").exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot create the results folder {folder}: {err.strerror or err}") from None
    atomic_write_json(config_file, config.to_dict())
    return False


def _short(err: Exception) -> str:
    """The first line of ``err``, without NumPy's advice to unpickle an unreadable file (harmful for a checkpoint)."""
    lines = str(err).strip().splitlines()
    text = "not a NumPy .npz archive" if "pickle" in str(err) else (lines[0] if lines else "")
    return f"{type(err).__name__}: {text}"[:200]


def _read_json(path: Path):
    """A run's JSON file, or a ValueError naming it."""
    return read_json(path, f"restore it, or move the folder {path.parent} away and run again to start over")


def _read_log(path: Path, header: list[str]) -> list[dict]:
    """A finished run's metrics log (not re-created when it is missing)."""
    if not path.exists():
        raise ValueError(f"{path} is missing: the finished run's log was deleted or moved; restore it (the run's other "
                         f"files cannot rebuild it), or move the folder {path.parent} away and run again to start over")
    return MetricsLog(path, header).read()


def _resume(folder: Path | None, config: TrainConfig, program, updates, evals) -> dict:
    """Load the folder's checkpoint into ``program`` and cut the logs back to it; the checkpoint's meta."""
    fresh = {"epoch": 0, "seconds": 0.0, "skipped": 0, "compile_seconds": 0.0}
    if folder is None:
        return fresh
    other = {f: n for f, n in CHECKPOINT_FILES.items() if f != program.framework and (folder / n).exists()}
    if other:
        raise ValueError(f"{folder} holds a {next(iter(other))} checkpoint ({next(iter(other.values()))}), but this run is "
                         f"{program.framework}: resume it with --backend {next(iter(other))} or choose another --out")
    path = folder / CHECKPOINT_FILES[program.framework]
    if not path.exists():  # killed before the first checkpoint (or the checkpoint deleted): start over
        updates.clear()
        evals.clear()
        return fresh
    raw = path.read_bytes()
    restart = f"delete {path} to restart the run from scratch (its logs are cut back to match)"
    try:
        meta = program.read_meta(raw)
    except Exception as err:  # noqa: BLE001 -- whatever the bytes are, the message is the same
        raise ValueError(f"the checkpoint {path} is unreadable ({_short(err)}): it was cut short or overwritten; "
                         f"{restart}") from None
    if not isinstance(meta, dict) or not {"framework", "epoch", "updates_bytes", "eval_bytes"} <= set(meta):
        raise ValueError(f"the checkpoint {path} holds no gradstop run state; {restart}")
    if meta.get("framework") != program.framework:
        raise ValueError(f"{path} was written by {meta.get('framework')}, this run is {program.framework}")
    digest = meta.get("digest")
    if digest is not None and digest != config.digest():
        raise ValueError(f"the checkpoint {path} belongs to another run (config digest {digest}, this run's is "
                         f"{config.digest()}): it was copied from another folder; put it back, or {restart}")
    try:
        program.load_state(raw)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"the checkpoint {path} is unreadable ({_short(err)}); {restart}") from None
    for log, key in ((updates, "updates_bytes"), (evals, "eval_bytes")):
        if log.size() < meta[key]:
            raise ValueError(f"{log.path} holds {log.size()} bytes but the checkpoint {path.name} was written when it held "
                             f"{meta[key]}: the log was deleted or cut, so resuming would lose its rows; restore it, or "
                             f"{restart}")
    updates.truncate(meta["updates_bytes"])
    evals.truncate(meta["eval_bytes"])
    return meta


def _loop(config, program, data, updates, evals, folder, progress, tensorboard) -> RunResult:
    with _memory_explained(config, program):
        return _epochs(config, program, data, updates, evals, folder, progress, tensorboard)


def _memory_explained(config, program):
    """The frameworks' out-of-memory errors inside a run become one message with the estimate and the fixes."""
    sim = program.sim
    itemsize = 8 if config.dtype == "float64" else 4
    state = int(getattr(sim, "state_dim", 0) or 0)
    return explained(sim, config.horizon, lambda: (config.batch, state, int(sim.action_dim), itemsize),
                     kept(config.impl, config.memory, config.compile))


def _epochs(config, program, data, updates, evals, folder, progress, tensorboard) -> RunResult:
    meta = _resume(folder, config, program, updates, evals)
    start, clock, skipped = meta["epoch"], meta["seconds"], meta["skipped"]
    steps = data.updates
    flow = config.flow
    compile_seconds = meta["compile_seconds"]
    budget = config.max_seconds
    spent = budget is not None and start > 0 and compile_seconds + clock >= budget  # resumed after its last epoch
    if start < config.epochs and not spent:
        compile_seconds += program.compile(data, start)
    writer = _tensorboard(tensorboard, config, start * steps)
    bar = _bar(progress, config, start * steps)
    if start == 0:  # the untrained policy: the test curve's first point
        ev = _evaluate(program, data)
        evals.append([dict(epoch=0, update=0, seconds=0.0, **ev)])
        _log(writer, [], ev, 0)
    try:
        for epoch in range(start, config.epochs if not spent else start):
            tick = time.perf_counter()
            try:
                m = program.run_epoch(data, epoch)
            except NonFiniteError as stop:  # SHAC's guards: the epoch's updates up to the stop are logged, then it stops
                if stop.metrics is not None:
                    took = time.perf_counter() - tick
                    n = len(stop.metrics["loss"])
                    updates.append(_rows(stop.metrics, epoch, steps, clock + took, n * program.env_steps_per_update / took))
                raise
            took = time.perf_counter() - tick
            clock += took
            n = len(m["loss"])
            rate = n * program.env_steps_per_update / took
            rows = _rows(m, epoch, steps, clock, rate)
            bad = [r for r in rows if not r["finite"]]
            if bad and config.on_nonfinite == "stop":
                updates.append(rows[: rows.index(bad[0]) + 1])
                where = _locate(program, data, epoch, rows.index(bad[0]))
                raise NonFiniteError(_nonfinite_message(bad[0], config, folder, meta, where), update=bad[0]["update"],
                                     epoch=epoch + 1, flow=flow)
            skipped += len(bad)
            updates.append(rows)
            if bad and len(bad) == n:
                raise NonFiniteError(f"every update of epoch {epoch + 1} ({n}) was non-finite and skipped "
                                     f"({skipped} of {(epoch + 1) * steps} so far), flow {flow}: the run has "
                                     "stopped training. Lower the learning rate, clip the gradient (--clip-norm), or "
                                     "shorten the horizon", update=rows[-1]["update"], epoch=epoch + 1, flow=flow)
            # the wall-clock budget: measured before this epoch's evaluation, so that every run ends evaluated
            out_of_time = budget is not None and compile_seconds + clock >= budget
            last = epoch + 1 == config.epochs or out_of_time
            ev = None
            if (epoch + 1) % config.eval_every == 0 or last:
                tick = time.perf_counter()
                ev = _evaluate(program, data)
                clock += time.perf_counter() - tick
                evals.append([dict(epoch=epoch + 1, update=(epoch + 1) * steps, seconds=clock, **ev)])
            _log(writer, rows, ev, (epoch + 1) * steps)
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{np.mean(m['loss']):.4g}", **({"test": f"{ev['test_loss']:.4g}"} if ev else {}),
                                steps_s=f"{rate:.3g}", refresh=False)
            if folder is not None and ((epoch + 1) % config.checkpoint_every == 0 or last):
                meta = {"framework": program.framework, "algo": config.algo, "digest": config.digest(), "epoch": epoch + 1,
                        "update": (epoch + 1) * steps, "seconds": clock, "skipped": skipped,
                        "compile_seconds": compile_seconds, "updates_bytes": updates.size(), "eval_bytes": evals.size()}
                atomic_write(folder / CHECKPOINT_FILES[program.framework], program.state_bytes(meta))
            if out_of_time:
                break
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    result = summarise(config, program, updates.read(), evals.read(), folder, skipped, compile_seconds)
    _warn_skipped(config, skipped, result.summary["updates"])
    return result


SKIPPED_WARNING = 0.05  # warn when more than this share of a run's updates were skipped as non-finite


def _warn_skipped(config, skipped: int, total: int) -> None:
    if total and skipped / total > SKIPPED_WARNING:
        warnings.warn(f"{skipped} of {total} updates ({100 * skipped / total:.0f}%) of flow {config.flow} were non-finite "
                      "and skipped (--on-nonfinite skip): its numbers come from the remaining updates; lower the learning "
                      "rate or clip the gradient (--clip-norm)", RuntimeWarning, stacklevel=3)


def _evaluate(program, data) -> dict:
    """One evaluation: the test set's numbers, and the validation set's loss and success where there is one."""
    ev = program.evaluate(data.test)
    if data.validation is not None:
        val = program.evaluate(data.validation)
        ev.update(val_loss=val["test_loss"], val_success=val["test_success"])
    return ev


def _locate(program, data, epoch: int, index: int) -> str | None:
    """Where the update went non-finite (``gradstop.diagnose``'s locator, replaying it), if the program can say.

    BPTT and SHAC programs can (SHAC: the actor's window); populations cannot yet (None). A failure of the locator itself is
    reported in the message rather than raised, so it never hides the non-finite stop."""
    locate = getattr(program, "locate_nonfinite", None)
    if locate is None:
        return None
    try:
        return locate(data, epoch, index)
    except Exception as err:  # noqa: BLE001 -- the stop's message must survive any failure here
        return f"the locator could not replay this update ({type(err).__name__}: {err})"


def _nonfinite_message(row, config, folder, meta, where: str | None = None) -> str:
    what = " and ".join(n for n, v in (("loss", row["loss"]), ("gradient", row["grad_norm"])) if not np.isfinite(v))
    kept = (f"; the last good checkpoint (epoch {meta['epoch']}, update {meta.get('update', 0)}) is kept in {folder}"
            if folder is not None and meta["epoch"] else "")
    located = f"{where}; " if where else ""
    return (f"non-finite {what} at update {row['update']} (epoch {row['epoch']}), flow {config.flow}: {located}"
            f"loss {row['loss']:.4g}, gradient norm {row['grad_norm']:.4g}{kept}. Lower the learning rate, clip the "
            "gradient (--clip-norm), shorten the horizon, or pass --on-nonfinite skip to skip such updates and count them")


def summarise(config, program, updates, evals, folder, skipped, compile_seconds) -> RunResult:
    """The run's summary; with a folder, also its final files (``summary.json`` last)."""
    def col(rows, key):
        return np.asarray([float(r[key]) for r in rows]) if rows else np.asarray([])

    loss, test = col(updates, "loss"), col(evals, "test_loss")
    last_epoch = loss[-config.steps_per_epoch:]
    summary = {
        "flow": config.flow, "algo": config.algo, "backend": config.backend, "sim": config.sim, "seed": config.seed,
        "epochs": config.epochs, "updates": len(updates), "skipped_updates": int(skipped),
        "first_loss": float(loss[0]) if loss.size else None,
        "final_loss": float(np.mean(last_epoch)) if loss.size else None,
        "final_test_loss": float(test[-1]) if test.size else None,
        "best_test_loss": float(np.nanmin(test)) if test.size and not np.isnan(test).all() else None,  # on the test set
        "final_test_success": float(col(evals, "test_success")[-1]) if evals else None,
        "final_test_reward": float(col(evals, "test_reward")[-1]) if evals else None,
        "seconds": float(col(updates, "seconds")[-1]) if updates else 0.0,
        "compile_seconds": float(compile_seconds),
        "steps_per_second": float(np.median(col(updates, "steps_per_second"))) if updates else None,
    }
    if config.max_seconds is not None:  # where the wall-clock budget ended the run
        summary["budget_reached"] = len(updates) < config.epochs * config.steps_per_epoch
    val = col(evals, "val_loss") if config.validation else np.asarray([])
    if val.size and not np.isnan(val).all():  # the evaluation chosen on the validation set, and its test numbers
        best = int(np.nanargmin(val))
        summary.update(final_val_loss=float(val[-1]), best_val_loss=float(val[best]),
                       best_val_epoch=int(evals[best]["epoch"]), test_loss_at_best_val=float(test[best]))
    if updates and "alpha" in updates[0]:  # a zeroth-/α-order flow: the α its updates took, kept with the record
        alpha = col(updates, "alpha")
        if np.isfinite(alpha).any():
            summary.update(mean_alpha=float(np.nanmean(alpha)), min_alpha=float(np.nanmin(alpha)),
                           max_alpha=float(np.nanmax(alpha)))
    summary = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()}  # strict JSON
    if folder is not None:
        buf = _npz_bytes(program.weights())
        atomic_write(folder / "policy.npz", buf)
        _plot(folder / "loss.png", config, loss, evals)
        atomic_write_json(folder / "summary.json", summary)  # last: marks the run complete
    return RunResult(program.policy, updates, evals, summary, folder)


def write_finished(folder: Path, config: TrainConfig, result: RunResult, extra: dict | None = None) -> RunResult:
    """Write a run trained in memory (a population's member) into ``folder``, prepared for ``config`` and held by the
    caller's lock, as :func:`train` leaves a finished run: ``updates.csv``, ``eval.csv``, ``policy.npz``, ``loss.png``
    and, last, ``summary.json`` (``result.summary`` and ``extra``). Any log already there is replaced."""
    from gradstop._policy import get_weights

    for name, header, rows in (("updates.csv", update_columns(config), result.updates),
                               ("eval.csv", eval_columns(config), result.evals)):
        log = MetricsLog(folder / name, header)
        log.clear()
        log.append(rows)
    atomic_write(folder / "policy.npz", _npz_bytes(get_weights(result.policy)))
    _plot(folder / "loss.png", config, np.asarray([float(r["loss"]) for r in result.updates]), result.evals)
    summary = {**result.summary, **(extra or {})}
    atomic_write_json(folder / "summary.json", summary)  # last: marks the run complete
    return result._replace(summary=summary, folder=folder)


def _npz_bytes(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *arrays)
    return buf.getvalue()


def _plot(path: Path, config, loss, evals) -> None:
    from gradstop._plot import plot_lines

    lines = {"train (per update)": (np.arange(1, loss.size + 1), loss)}
    if evals:
        lines["test"] = (np.asarray([float(e["update"]) for e in evals]), np.asarray([float(e["test_loss"]) for e in evals]))
    title = f"{config.algo.upper()} {config.flow} on {config.sim} ({config.backend}), H={config.horizon}, batch {config.batch}"
    buf = io.BytesIO()
    plot_lines(buf, lines, title=title, xlabel="update", ylabel="loss")
    atomic_write(path, buf.getvalue())


def _bar(progress, config, done):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.total_updates, initial=done, desc=f"{config.algo}[{config.flow}]", unit="upd", leave=False)


def _tensorboard(folder, config, purge_step):
    if folder is None:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("--tensorboard needs the tensorboardX package: pip install tensorboardX "
                          "(or install gradstop with the 'dev' extra)") from None
    # purge_step drops events past the checkpoint that a resumed run is about to write again
    return SummaryWriter(str(Path(folder) / config.flow_slug), purge_step=purge_step or None)


def _rows(m: dict, epoch: int, steps: int, clock: float, rate: float) -> list[dict]:
    """``updates.csv``'s rows for the per-update arrays ``m`` of epoch ``epoch`` (0-based)."""
    return [dict(epoch=epoch + 1, update=epoch * steps + i + 1, seconds=clock, steps_per_second=rate,
                 **{k: (bool(m[k][i]) if k == "finite" else m[k][i]) for k in METRICS + MIXING_COLUMNS if k in m})
            for i in range(len(m["loss"]))]


def _log(writer, rows, ev, step) -> None:
    if writer is None:
        return
    for r in rows:
        for key in ("loss", "grad_norm", "grad_norm_clipped", "cos_input_none", "lr", "critic_loss", "steps_per_second",
                    *MIXING_COLUMNS):
            if key in r and np.isfinite(r[key]):
                writer.add_scalar(f"train/{key}", float(r[key]), r["update"])
    if ev is not None:
        for key, value in ev.items():
            if np.isfinite(value):
                writer.add_scalar(f"eval/{key}", value, step)
    writer.flush()
