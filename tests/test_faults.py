"""Faults and bad input around results folders: each case ends in a clear message that names the problem and the fix
(or in a correct result), never in a silent wrong result, a doubled log or a library traceback.

One table of CLI cases (argv after a setup → exit code and message fragment) and one of folder faults on the Python
API (a finished or interrupted run, then a fault → the error on the next call), plus the cases that need processes:
two ``gradstop train`` commands into one folder, a log deleted mid-run.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gradstop.cli import main
from gradstop.study.sweep import Run, run_sweep
from gradstop.trainers import TrainConfig, train
from gradstop.trainers.run import LOCK_FILE, NonFiniteError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(sim="pointmass", horizon=4, epochs=2, updates_per_epoch=2, hidden=(4,), checkpoint_every=1)
TINY_ARGS = ["--sim", "pointmass", "--horizon", "4", "--epochs", "2", "--updates-per-epoch", "2", "--hidden", "4",
             "--quiet"]


def config_file(tmp_path: Path, **changes) -> str:
    path = tmp_path / "given.json"
    path.write_text(json.dumps({**TrainConfig(**TINY).to_dict(), **changes}))
    return str(path)


# -- the command line: argv → exit code 2 and a message ----------------------------------------------
def _file(tmp_path):
    (tmp_path / "afile").write_text("mine")
    return tmp_path / "afile"


def _sweep_folder(tmp_path):
    run_sweep([Run("a", TrainConfig(**TINY))], tmp_path / "sw", progress=False)
    return tmp_path / "sw"


def _train_folder(tmp_path):
    assert main(["train", *TINY_ARGS, "--out", str(tmp_path / "tr")]) == 0
    return tmp_path / "tr"


CLI_CASES = [  # (id, setup(tmp_path) -> argv, message fragment)
    ("bool-as-string", lambda t: ["train", "--config", config_file(t, zero_last="no"), "--out", str(t / "o")],
     "zero_last must be true or false, got 'no'"),
    ("shuffle-as-string", lambda t: ["train", "--config", config_file(t, shuffle="false"), "--out", str(t / "o")],
     "shuffle must be true or false, got 'false'"),
    ("hidden-as-string", lambda t: ["train", "--config", config_file(t, hidden="64,64"), "--out", str(t / "o")],
     "hidden must be a list of integers, e.g. [64, 64], got '64,64'"),
    ("sim-params-as-list", lambda t: ["train", "--config", config_file(t, sim_params=[2]), "--out", str(t / "o")],
     "sim_params must be an object of simulator parameters"),
    ("lr-as-string", lambda t: ["train", "--config", config_file(t, lr="1e-3"), "--out", str(t / "o")],
     "lr must be a number, got '1e-3'"),
    ("hidden-with-a-gap", lambda t: ["train", *TINY_ARGS, "--hidden", "64,,64", "--out", str(t / "o")],
     "--hidden takes comma-separated integers without gaps (e.g. 64,64), got '64,,64'"),
    ("out-is-a-file", lambda t: ["train", *TINY_ARGS, "--out", str(_file(t))], "is a file, not a folder"),
    ("out-under-a-file", lambda t: ["train", *TINY_ARGS, "--out", str(_file(t) / "run")],
     "cannot create the results folder"),
    ("train-into-a-sweep", lambda t: ["train", *TINY_ARGS, "--out", str(_sweep_folder(t))],
     "is the folder of a gradstop sweep, not of gradstop train runs"),
    ("train-into-one-run", lambda t: ["train", *TINY_ARGS, "--out", str(_train_folder(t) / "none")],
     "is the folder of one run (config.json)"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_faults_end_in_one_line_naming_the_problem(case, tmp_path, capsys):
    _, setup, fragment = case
    argv = setup(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_sweep_into_a_train_folder_or_a_run_folder_is_refused(tmp_path):
    folder = _train_folder(tmp_path)
    with pytest.raises(ValueError, match="holds the runs of a gradstop train command, not a sweep"):
        run_sweep([Run("a", TrainConfig(**TINY))], folder, progress=False)
    with pytest.raises(ValueError, match="holds a single training run"):
        run_sweep([Run("a", TrainConfig(**TINY))], folder / "none", progress=False)


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    real = os.fsync

    def full(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".config.json.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "o"
    assert main(["train", *TINY_ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "config.json: No space left on device" in err and len(err.splitlines()) == 1, err
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "a stray temporary file"


def test_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    def refuse(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)  # root ignores chmod, so the OS's refusal is simulated
    assert main(["train", *TINY_ARGS, "--out", str(tmp_path / "ro" / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot create the results folder" in err and "Permission denied" in err and len(err.splitlines()) == 1, err


# -- faults in a run's folder, on the Python API ------------------------------------------------------
def _finished(tmp_path, backend="jax"):
    cfg = TrainConfig(**TINY, backend=backend)
    train(cfg, out=tmp_path / "run")
    return cfg, tmp_path / "run"


def _interrupted(tmp_path, backend="jax"):
    """A run whose summary is gone: the next call resumes from its last checkpoint."""
    cfg, folder = _finished(tmp_path, backend)
    (folder / "summary.json").unlink()
    return cfg, folder


def _replace(name, data):
    def fault(folder):
        (folder / name).write_bytes(data)
    return fault


def _sibling(folder):
    other = TrainConfig(**{**TINY, "flow": "input"})
    train(other, out=folder.parent / "sibling")
    (folder / "checkpoint.npz").write_bytes((folder.parent / "sibling" / "checkpoint.npz").read_bytes())


def _cut(name, keep):
    def fault(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep(len(data))])
    return fault


FOLDER_CASES = [  # (id, backend, start, fault(folder), error type, message fragment)
    ("checkpoint-truncated", "jax", _interrupted, _cut("checkpoint.npz", lambda n: n // 2), ValueError,
     "checkpoint.npz is unreadable"),
    ("checkpoint-random", "jax", _interrupted, _replace("checkpoint.npz", bytes(range(256)) * 8), ValueError,
     "checkpoint.npz is unreadable"),
    ("checkpoint-empty", "jax", _interrupted, _replace("checkpoint.npz", b""), ValueError, "checkpoint.npz is unreadable"),
    ("checkpoint-of-a-sibling", "jax", _interrupted, _sibling, ValueError, "belongs to another run"),
    ("checkpoint-pt-garbage", "torch", _interrupted, _replace("checkpoint.pt", b"garbage" * 50), ValueError,
     "checkpoint.pt is unreadable"),
    ("config-not-json", "jax", _interrupted, _replace("config.json", b'{"sim": "poin'), ValueError,
     "config.json is not valid JSON"),
    ("updates-lost", "jax", _interrupted, lambda f: (f / "updates.csv").unlink(), ValueError,
     "updates.csv is missing, but the checkpoint checkpoint.npz records its rows"),
    ("updates-lost-torch", "torch", _interrupted, lambda f: (f / "updates.csv").unlink(), ValueError,
     "updates.csv is missing, but the checkpoint checkpoint.pt records its rows"),
    ("updates-cut", "jax", _interrupted, _cut("updates.csv", lambda n: n - 40), ValueError,
     "the log was deleted or cut"),
    ("finished-log-cut", "jax", _finished, _cut("updates.csv", lambda n: n - 40), ValueError,
     "the row is cut short"),
    ("finished-log-lost", "jax", _finished, lambda f: (f / "eval.csv").unlink(), ValueError, "eval.csv is missing"),
]


@pytest.mark.parametrize("case", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_folder_faults_name_the_file_and_the_fix(case, tmp_path):
    _, backend, start, fault, kind, fragment = case
    cfg, folder = start(tmp_path, backend)
    fault(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(kind, match=fragment) as info:
        train(cfg, out=folder)
    assert "allow_pickle" not in str(info.value)
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != LOCK_FILE} == {k: v for k, v in before.items() if k != LOCK_FILE}, \
        "a refused resume changed the folder"


def test_deleting_an_unreadable_checkpoint_restarts_the_run_from_scratch(tmp_path):
    cfg, folder = _finished(tmp_path)
    expected = (folder / "updates.csv").read_text()
    (folder / "summary.json").unlink()
    (folder / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="delete .*checkpoint.npz to restart the run from scratch"):
        train(cfg, out=folder)
    (folder / "checkpoint.npz").unlink()
    train(cfg, out=folder)
    assert _numbers(folder / "updates.csv") == _numbers_text(expected)


def _numbers_text(text: str) -> list:
    return [line.split(",")[:8] for line in text.splitlines()]  # epoch … finite: everything but the clock


def _numbers(path: Path) -> list:
    return _numbers_text(path.read_text())


def test_a_log_deleted_mid_run_is_refused_on_resume_and_nothing_is_rewritten(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "epochs": 4, "checkpoint_every": 2})
    folder = tmp_path / "run"
    from gradstop.trainers.jax import bptt

    real = bptt.BPTT.run_epoch

    def dies_at_epoch_3(self, data, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, data, epoch)

    monkeypatch.setattr(bptt.BPTT, "run_epoch", dies_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=folder)
    monkeypatch.setattr(bptt.BPTT, "run_epoch", real)
    (folder / "updates.csv").unlink()
    checkpoint = (folder / "checkpoint.npz").read_bytes()
    with pytest.raises(ValueError, match=r"updates.csv is missing, but the checkpoint checkpoint.npz records its rows"):
        train(cfg, out=folder)
    assert (folder / "checkpoint.npz").read_bytes() == checkpoint
    assert not (folder / "summary.json").exists()


# -- two processes into one folder ----------------------------------------------------------------
def test_a_run_whose_folder_is_locked_is_refused_naming_the_holder(tmp_path):
    import fcntl

    cfg = TrainConfig(**TINY)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    with open(folder / LOCK_FILE, "a+") as held:
        held.write("pid 4242 on elsewhere since 2026-01-01 00:00:00")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match=r"is in use: another gradstop run \(pid 4242 on elsewhere"):
            train(cfg, out=folder)
    assert not (folder / "updates.csv").exists()
    train(cfg, out=folder)  # a lock its holder let go of (or a killed holder's) is taken over
    assert json.loads((folder / "summary.json").read_text())["updates"] == 4


def test_two_train_commands_into_one_folder_one_refuses_and_no_row_is_doubled(tmp_path):
    out = tmp_path / "o"
    argv = [sys.executable, "-m", "gradstop", "train", "--sim", "pointmass", "--horizon", "20", "--epochs", "400",
            "--updates-per-epoch", "4", "--hidden", "8", "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "none" / "updates.csv").exists():  # the first holds the run's lock from before it writes a row
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.1)
    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and "is in use: another gradstop run (pid" in second.stderr, second.stderr
    summary = json.loads((out / "none" / "summary.json").read_text())
    lines = (out / "none" / "updates.csv").read_text().splitlines()
    assert summary["updates"] == len(lines) - 1 == 1600
    assert [int(line.split(",")[1]) for line in lines[1:]] == list(range(1, 1601))


# -- a dead run under --on-nonfinite skip ----------------------------------------------------------
def test_skipping_every_update_of_an_epoch_stops_the_run(tmp_path, monkeypatch):
    from gradstop.trainers.jax import bptt

    real = bptt.BPTT.run_epoch

    def nan_from_epoch_2(self, data, epoch):
        m = real(self, data, epoch)
        if epoch >= 1:
            m = {**m, "loss": np.full_like(np.asarray(m["loss"]), np.nan), "finite": np.zeros(len(m["loss"]), bool)}
        return m

    monkeypatch.setattr(bptt.BPTT, "run_epoch", nan_from_epoch_2)
    cfg = TrainConfig(**{**TINY, "epochs": 5, "on_nonfinite": "skip"})
    with pytest.raises(NonFiniteError, match=r"every update of epoch 2 \(2\) was non-finite and skipped \(2 of 4 so far\)"):
        train(cfg, out=tmp_path / "run")


def test_a_run_that_skipped_many_updates_warns_and_the_cli_reports_the_count(tmp_path, monkeypatch, capsys):
    from gradstop.trainers.jax import bptt

    real = bptt.BPTT.run_epoch

    def one_bad_update(self, data, epoch):
        m = real(self, data, epoch)
        finite = np.ones(len(m["loss"]), bool)
        finite[0] = False
        return {**m, "finite": finite}

    monkeypatch.setattr(bptt.BPTT, "run_epoch", one_bad_update)
    with pytest.warns(RuntimeWarning, match=r"2 of 4 updates \(50%\) of flow none were non-finite and skipped"):
        assert main(["train", *[a for a in TINY_ARGS if a != "--quiet"], "--on-nonfinite", "skip",
                     "--out", str(tmp_path / "o")]) == 0
    assert "2 of 4 updates skipped as non-finite" in capsys.readouterr().out


# -- a lost manifest ------------------------------------------------------------------------------
def test_a_sweep_whose_manifest_was_deleted_is_reused_when_its_runs_match(tmp_path):
    runs = [Run("a", TrainConfig(**TINY)), Run("b", TrainConfig(**{**TINY, "flow": "input"}))]
    run_sweep(runs, tmp_path / "s", progress=False)
    (tmp_path / "s" / "sweep.json").unlink()
    with pytest.warns(RuntimeWarning, match="sweep.json was missing"):
        report = run_sweep(runs, tmp_path / "s", progress=False)
    assert report.counts()["skipped"] == 2 and (tmp_path / "s" / "sweep.json").exists()
    (tmp_path / "s" / "sweep.json").unlink()
    other = [Run("a", TrainConfig(**{**TINY, "lr": 0.01}))]
    with pytest.raises(ValueError, match=r"sweep.json is missing and .* holds runs this sweep does not name or "
                                         r"configures otherwise \(a, b\)"):
        run_sweep(other, tmp_path / "s", progress=False)


def test_a_train_folder_whose_record_was_deleted_resumes_when_its_runs_match(tmp_path, capsys):
    folder = _train_folder(tmp_path)
    (folder / "sweep.json").unlink()
    assert main(["train", *TINY_ARGS, "--out", str(folder)]) == 0
    assert (folder / "sweep.json").exists()
    (folder / "sweep.json").unlink()
    capsys.readouterr()
    assert main(["train", *TINY_ARGS, "--lr", "0.01", "--out", str(folder)]) == 2
    assert "holds things that are not these runs (none)" in capsys.readouterr().err


def test_out_of_memory_in_a_training_run_is_one_message_with_the_estimate_and_the_fixes(tmp_path, monkeypatch, capsys):
    import jax

    from gradstop.trainers.jax import bptt

    def exhausted(self, data, epoch):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2949120000 bytes.")

    monkeypatch.setattr(bptt.BPTT, "run_epoch", exhausted)
    assert main(["train", *TINY_ARGS, "--batch", "4096", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "out of memory in a rollout: its reverse sweep keeps at least" in err, err
    assert "horizon 4 × batch 4096" in err and "--memory recompute" in err and len(err.splitlines()) == 1, err
