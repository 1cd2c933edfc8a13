"""The study's figures: the folder each figure script writes, and ``gradstop figures``, which runs them all.

A figure script (``experiments/<name>.py``, listed in ``experiments.FIGURES``) writes PNG + CSV and a
``settings.json`` into its folder. ``settings.json`` records the script, its settings (``args``:
everything that changes the numbers; where the output goes and how runs are scheduled are left
out), package versions, seeds, wall-clock, the files written and whether the figure is
``complete`` (a sweep-backed figure drawn from part of its runs is not). A figure is *current*
when its folder holds a complete ``settings.json`` of the same script and settings, and every file
it lists; ``gradstop figures`` skips current figures unless ``--force``.

A figure backed by a sweep (training runs) keeps its runs in its folder (``gradstop.sweep``):
rerunning it skips finished runs and redraws; ``--force`` redraws without retraining them. Other
figures recompute everything; ``--force`` replaces their files.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

from gradstop.study.results import jsonable, write_csv
from gradstop._io import atomic_write_json, empty_but_unfinished_writes

__all__ = ["args_record", "is_current", "write_settings", "claim_folder", "run_figures", "run_script",
           "SweepOptions", "SCHEDULING_ARGS", "sweep_runs", "adopt_runs", "write_tables", "finish_sweep_figure",
           "figure_argv"]

# Arguments that decide where and how a figure runs, not what it computes (``from_json``: redraw from the data of an
# earlier run, which settings.json then names as its source; ``flows_from``: the table a script read its flows from,
# whose choice its own arguments then hold).
SCHEDULING_ARGS = ("out", "ray", "ray_cpus", "force", "plot_only", "from_json", "flows_from", "population")


@dataclasses.dataclass
class SweepOptions:
    """The options every sweep-backed figure script takes (its ``Args`` inherits them)."""

    ray: str | None = None
    """run on Ray: local, auto or HOST:PORT (default: one run after another here)"""
    ray_cpus: int | None = None
    """--ray local: CPUs of the local instance"""
    population: int = 1
    """train up to this many new JAX runs that differ only in their seed as one vmapped program per task (4 measured
    1.4–1.5× the runs per hour on 2 cores: experiments/sweep_throughput.py); each run's summary.json names its population"""
    plot_only: bool = False
    """draw from the runs finished so far, train nothing"""
    force: bool = False
    """accepted for gradstop figures: a sweep-backed figure always keeps its finished runs and redraws"""


def args_record(args) -> dict:
    """A figure's settings as plain JSON data: its arguments less ``SCHEDULING_ARGS``."""
    data = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(vars(args))
    return json.loads(json.dumps({k: v for k, v in data.items() if k not in SCHEDULING_ARGS}, default=jsonable))


def read_settings(folder: Path | str) -> dict | None:
    path = Path(folder) / "settings.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_current(folder: Path | str, script: str, args) -> bool:
    """True when ``folder`` holds a complete figure of ``script`` with these settings and all its files."""
    folder, s = Path(folder), read_settings(folder)
    return bool(s and s.get("script") == script and s.get("args") == args_record(args) and s.get("complete")
                and all((folder / f).exists() for f in s.get("files", [])))


def claim_folder(folder: Path | str, script: str, *, force: bool = False, resumable: bool = False) -> Path:
    """Make ``folder`` this figure's output folder, or refuse it.

    A new or empty folder is created. A folder holding this script's earlier output is reused when the
    figure is ``resumable`` (its sweep's runs are kept) or with ``force`` (its files are replaced); anything
    else — another script's output, a folder of other files, a non-resumable figure without ``force`` — is
    refused with FileExistsError, so nothing a user wrote is overwritten.
    """
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        s = read_settings(folder)
        ours = (s is not None and s.get("script") == script) or (resumable and (folder / "sweep.json").exists())
        if not ours:
            raise FileExistsError(f"output folder {folder} exists and does not hold {script}'s figure: choose another --out")
        if not (resumable or force):
            raise FileExistsError(f"output folder {folder} already holds {script}'s figure: pass --force to replace its "
                                  "files, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_settings(folder: Path | str, script: str, args, *, seconds: float, complete: bool, files: list[str],
                   backend: str = "jax", **extra) -> None:
    """``settings.json``, written last (atomically): what a later call reads to decide the figure is current."""
    from gradstop._io import versions

    atomic_write_json(Path(folder) / "settings.json", {
        "script": script, "args": args_record(args), "complete": bool(complete), "files": list(files),
        "seconds": float(seconds), "versions": versions(backend), "written": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


def sweep_runs(args, script: str, runs: list, what: str) -> tuple[Path, dict, object]:
    """A sweep-backed figure's training: claim ``args.out``, train the runs not finished yet (none with
    ``args.plot_only``) and read every finished one. Returns (folder, records, report or None)."""
    from gradstop.study.sweep import read_runs, run_sweep

    out = claim_folder(args.out, script, force=args.force, resumable=True)
    report = None
    if not args.plot_only:
        print(f"{what}: {len(runs)} runs in {out}", flush=True)
        report = run_sweep(runs, out, ray=args.ray, cpus=args.ray_cpus, population=getattr(args, "population", 1))
        print(report.describe(), flush=True)
    return out, read_runs(out, runs), report


def adopt_runs(root: Path | str, runs: list) -> dict:
    """Give runs that an earlier layout of a figure named otherwise the names ``runs`` use now, so they are reused.

    A run of ``root``'s sweep whose name none of ``runs`` holds (or holds for a different config now), and whose
    config has the identity of one of ``runs`` (``TrainConfig.identity``: every field that changes its numbers) that
    has no run yet, is renamed to that run's name: its folder, its failure record and its entry in ``sweep.json``. Each old name goes to at most
    one new run (the first in sorted order), nothing is copied or deleted, and every rename is added to
    ``root/renamed.json``. Returns {old name: new name} (empty where ``root`` holds no sweep or nothing matches).
    """
    from gradstop.study.sweep import _lock
    from gradstop.trainers.config import TrainConfig

    root = Path(root)
    manifest = root / "sweep.json"
    if not manifest.exists():
        return {}
    with _lock(root):
        data = json.loads(manifest.read_text())
        stored = data.get("runs", {})
        wanted = {r.name: json.dumps(r.config.identity(), sort_keys=True, default=str) for r in runs}
        earlier: dict = {}  # identity -> an old name holding a run folder or a failure record
        for name in sorted(stored):
            if not ((root / "runs" / name).is_dir() or (root / "failures" / f"{name}.json").exists()):
                continue
            key = json.dumps(TrainConfig.from_dict(stored[name], source=f"{manifest} (run {name})").identity(),
                             sort_keys=True, default=str)
            if wanted.get(name) != key:  # not wanted under this name with this config
                earlier.setdefault(key, name)
        renames = {}
        for r in runs:
            if r.name in stored or (root / "runs" / r.name).exists():  # only to a free name
                continue
            old = earlier.pop(json.dumps(r.config.identity(), sort_keys=True, default=str), None)
            if old is not None:
                renames[old] = r.name
        if not renames:
            return {}
        for old, new in renames.items():  # folders first: an interruption leaves a stale manifest entry, no lost run
            if (root / "runs" / old).is_dir():
                (root / "runs" / old).rename(root / "runs" / new)
            record = root / "failures" / f"{old}.json"
            if record.exists():
                failure = json.loads(record.read_text())
                atomic_write_json(root / "failures" / f"{new}.json", {**failure, "name": new})
                record.unlink()
        for old, new in renames.items():
            stored[new] = stored.pop(old)
        atomic_write_json(manifest, {**data, "runs": stored})
        _rename_in_summary(root / "summary.csv", renames)
        log = root / "renamed.json"
        before = json.loads(log.read_text()) if log.exists() else {}
        atomic_write_json(log, {**before, **renames})
    return renames


def _rename_in_summary(path: Path, renames: dict) -> None:
    """The sweep's summary.csv (its last call's runs) under the new names."""
    import csv
    import io

    if not path.exists():
        return
    rows = list(csv.reader(io.StringIO(path.read_text())))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([rows[0]] + [[renames.get(r[0], r[0]), *r[1:]] for r in rows[1:] if r])
    from gradstop._io import atomic_write

    atomic_write(path, buf.getvalue().encode())


def write_tables(out: Path, tables: dict) -> None:
    """Each ``{file name: rows}`` as a CSV (rows are dicts of one shape; None is written as an empty cell)."""
    for name, rows in tables.items():
        write_csv(out / name, list(rows[0]) if rows else ["run"], [["" if v is None else v for v in r.values()] for r in rows])


def finish_sweep_figure(out: Path, script: str, args, *, started: float, runs: list, records: dict, report,
                        files: list[str], **extra) -> None:
    """A sweep-backed figure's ``settings.json`` (complete when every run has finished; ``seconds`` is this call's
    wall-clock, ``run_seconds`` the training time of every finished run, whichever call ran it), then a failed
    run's error, if any."""
    run_seconds = sum(r["summary"]["seconds"] for r in records.values() if r["summary"])
    write_settings(out, script, args, seconds=time.perf_counter() - started, complete=len(records) == len(runs),
                   files=files, runs=len(runs), finished=len(records), run_seconds=run_seconds,
                   seeds=list(range(args.seeds)), **extra)
    print(f"wrote {out} ({len(records)} of {len(runs)} runs finished)")
    if report is not None and report.failed:
        report.raise_for_failures()


def run_script(main, argv=None) -> None:
    """A figure script's ``__main__``: run ``main``; bad input or a refused folder exits 2 with one line, not a traceback."""
    try:
        main(argv)
    except (ValueError, FileExistsError, ConnectionError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (finished runs are kept)", file=sys.stderr)
        raise SystemExit(130) from None


# -- gradstop figures -----------------------------------------------------------------------------
def _experiments():
    """The ``experiments`` package of gradstop's own repository (beside the ``gradstop`` folder of an editable
    install), never another package of that name in the working folder."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "experiments" / "__init__.py").exists():
        raise ImportError("gradstop figures runs the scripts in the repository's experiments/ folder, which this install "
                          f"lacks ({root}): clone the repository and pip install -e . there")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module("experiments")
    if Path(module.__file__).resolve().parent != root / "experiments" or not hasattr(module, "FIGURES"):
        raise ImportError(f"another package named experiments ({module.__file__}) shadows gradstop's ({root / 'experiments'}): "
                          "run gradstop figures from another folder")
    return module


def figure_argv(fig, root: Path, name: str, quick: bool = False) -> tuple[list[str], bool]:
    """The arguments ``gradstop figures`` runs figure ``fig`` with into ``root/name``, and whether that folder
    already holds it current."""
    root = Path(root).resolve()
    argv = (["--quick"] if quick else []) + ["--out", str(root / name)]
    if fig.inputs is not None and not quick:
        argv += fig.inputs(root)
    args = importlib.import_module(f"experiments.{fig.module}").parse(argv)
    return argv, is_current(root / name, fig.module, args)


def run_figures(*, quick: bool = False, only=None, out=None, force: bool = False, ray=None, ray_cpus=None,
                list_only: bool = False) -> int:
    """Make every figure (or ``only`` these) into ``out/<name>``; exit code 0 if all are done, 1 if any failed."""
    experiments = _experiments()
    figures = experiments.FIGURES
    unknown = [n for n in (only or []) if n not in figures]
    if unknown:
        import difflib

        hints = {u: difflib.get_close_matches(u, list(figures), n=1) for u in unknown}
        raise ValueError("unknown figure(s) " + ", ".join(f"{u!r}" + (f" (did you mean {hints[u][0]!r}?)" if hints[u] else "")
                                                       for u in unknown) + f"; the figures are: {', '.join(figures)}")
    root = Path(out or ("results/figures-quick" if quick else "results/figures"))
    if root.exists() and not (root / "figures.json").exists() and not empty_but_unfinished_writes(root):
        raise FileExistsError(f"{root} exists and is not a gradstop figures folder (no figures.json): choose another --out")
    names = list(only or figures)
    repo = Path(experiments.__file__).resolve().parents[1]
    failed, started = [], time.perf_counter()
    if not list_only:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(root / "figures.json", {"figures": list(figures), "quick": quick})
    for i, name in enumerate(names, 1):
        fig = figures[name]
        folder = root / name
        argv, current = figure_argv(fig, root, name, quick)
        if list_only:
            print(f"{name:>18}: {'current' if current else 'to make'}  {fig.title}")
            continue
        if current and not force:
            print(f"[{i}/{len(names)}] {name}: current, skipped ({folder})", flush=True)
            continue
        if fig.sweep and ray:
            argv += ["--ray", ray] + (["--ray-cpus", str(ray_cpus)] if ray_cpus else [])
        if force or (folder.exists() and not fig.sweep):
            argv.append("--force")
        print(f"[{i}/{len(names)}] {name}: {fig.title} ({'quick' if quick else 'full'}; {fig.cost})", flush=True)
        tick = time.perf_counter()
        try:
            # each figure in a process of its own: no JAX flag (64-bit mode), cache or memory carries from one to the next
            python = fig.python() if fig.python is not None else Path(sys.executable)
            done = subprocess.run([str(python), "-m", f"experiments.{fig.module}", *argv], cwd=repo)
            if done.returncode != 0:
                raise RuntimeError(f"experiments.{fig.module} exited with {done.returncode}")
        except Exception as err:  # noqa: BLE001 -- one figure's failure is reported; the others still run
            failed.append(name)
            print(f"[{i}/{len(names)}] {name}: FAILED ({type(err).__name__}: {err})", file=sys.stderr, flush=True)
            continue
        print(f"[{i}/{len(names)}] {name}: done in {time.perf_counter() - tick:.0f} s -> {folder}", flush=True)
    if not list_only:
        print(f"gradstop figures: {len(names) - len(failed)} of {len(names)} figures in {root} "
              f"({time.perf_counter() - started:.0f} s)" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
