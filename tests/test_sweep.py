"""Sweeps (gradstop.sweep, gradstop sweep): grids, resume, failure isolation, non-finite runs, Ray, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradstop import cli
from gradstop.study.sweep import Run, connect_ray, grid, load_spec, run_status, run_sweep
from gradstop.trainers import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(sim="pointmass", sim_params={"dims": 2}, horizon=6, epochs=2, updates_per_epoch=2, batch=4, hidden=[8],
            test_size=4)


def tiny_runs(**axes):
    return grid(TINY, axes or {"flow": ["none", "combined"], "seed": [0, 1]})


def test_grid_names_runs_by_their_axes_and_builds_each_config():
    runs = grid({**TINY, "algo": "bptt"}, {"sim_params.dims": [1, 2], "flow": ["input+decay:0.9"], "seed": [0, 3]})
    assert [r.name for r in runs] == ["dims=1,flow=input+decay_0.9,seed=0", "dims=1,flow=input+decay_0.9,seed=3",
                                      "dims=2,flow=input+decay_0.9,seed=0", "dims=2,flow=input+decay_0.9,seed=3"]
    assert runs[2].config.sim_params == {"dims": 2} and runs[3].config.seed == 3 and runs[0].config.hidden == (8,)
    shac = grid({**TINY, "algo": "shac", "horizon": 64, "window": 32}, {"seed": [0]})[0].config
    assert shac.algo == "shac" and shac.beta1 == 0.7  # the algorithm's published defaults under the base


@pytest.mark.parametrize("base,axes,match", [
    (TINY, {"flwo": ["none"]}, "unknown field 'flwo' \\(did you mean 'flow'\\?\\)"),
    (TINY, {"flow": []}, "axis 'flow' must be a non-empty list"),
    (TINY, {"flow": ["none", "inptu"]}, "sweep run flow=inptu: unknown flow part 'inptu'"),
    ({**TINY, "lr": -1.0}, {"seed": [0]}, "sweep run seed=0: lr must be a finite number > 0"),
])
def test_a_bad_grid_names_the_run_and_the_problem(base, axes, match):
    with pytest.raises(ValueError, match=match):
        grid(base, axes)


def test_an_unknown_simulator_is_refused_before_anything_is_written(tmp_path):
    runs = grid({**TINY, "sim": "cartpol", "sim_params": {}}, {"seed": [0]})
    with pytest.raises(ValueError, match="sweep run seed=0: unknown simulator 'cartpol'"):
        run_sweep(runs, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_a_sweep_trains_each_run_as_train_would_then_skips_finished_runs_and_finishes_the_rest(tmp_path):
    runs = tiny_runs()
    import jax

    x64 = jax.config.jax_enable_x64  # tests/conftest.py turns 64-bit mode on; a float32 run turns it off for itself only
    report = run_sweep(runs, tmp_path / "s", progress=False)
    assert report.counts() == {"done": 4, "skipped": 0, "nonfinite": 0, "failed": 0} and report.complete
    assert jax.config.jax_enable_x64 == x64
    solo = train(runs[3].config)  # in memory: the same numbers as the sweep's run
    stored = json.loads((tmp_path / "s" / "runs" / runs[3].name / "summary.json").read_text())
    assert stored["final_test_loss"] == solo.summary["final_test_loss"]
    (tmp_path / "s" / "runs" / runs[1].name / "summary.json").unlink()  # as if that run had been interrupted
    report = run_sweep(runs, tmp_path / "s", progress=False)
    assert [o.status for o in report.outcomes] == ["skipped", "done", "skipped", "skipped"]
    summary = (tmp_path / "s" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("name,status,final_test_loss") and len(summary) == 5
    assert all(",done," in line for line in summary[1:])


def test_a_failed_run_is_recorded_never_stops_the_others_and_is_retried(tmp_path, monkeypatch):
    import gradstop.trainers.run as run_module

    runs = tiny_runs()
    real = run_module.train

    def flaky(config, out, **kw):
        if config.seed == 1 and config.flow == "none":
            raise RuntimeError("disk on fire")
        return real(config, out, **kw)

    monkeypatch.setattr(run_module, "train", flaky)
    report = run_sweep(runs, tmp_path / "s", progress=False)
    assert [o.status for o in report.outcomes] == ["done", "failed", "done", "done"] and not report.complete
    record = json.loads((tmp_path / "s" / "failures" / f"{runs[1].name}.json").read_text())
    assert record["error"] == "RuntimeError: disk on fire" and "Traceback" in record["traceback"]
    assert TrainConfig.from_dict(record["config"]) == runs[1].config
    assert "FAILED flow=none,seed=1: RuntimeError: disk on fire" in report.describe()
    with pytest.raises(Exception, match="1 failed"):
        report.raise_for_failures()
    monkeypatch.setattr(run_module, "train", real)
    report = run_sweep(runs, tmp_path / "s", progress=False)
    assert [o.status for o in report.outcomes] == ["skipped", "done", "skipped", "skipped"]
    assert not (tmp_path / "s" / "failures" / f"{runs[1].name}.json").exists()


def test_a_non_finite_run_is_a_result_kept_and_not_rerun_unless_asked(tmp_path):
    runs = [Run("diverges", TrainConfig(**{**TINY, "optimizer": "sgd", "lr": 1e12}))] + tiny_runs(seed=[0])
    report = run_sweep(runs, tmp_path / "s", progress=False)
    assert [o.status for o in report.outcomes] == ["nonfinite", "done"] and report.complete
    assert "non-finite" in report.outcomes[0].error and run_status(tmp_path / "s", runs[0]) == "nonfinite"
    again = run_sweep(runs, tmp_path / "s", progress=False)
    assert [o.status for o in again.outcomes] == ["nonfinite", "skipped"]
    retried = run_sweep(runs, tmp_path / "s", progress=False, retry_nonfinite=True)
    assert [o.status for o in retried.outcomes] == ["nonfinite", "skipped"] and retried.outcomes[0].seconds > 0


def test_runs_that_differ_only_in_their_seed_train_as_one_population_with_every_file_of_a_run(tmp_path):
    from gradstop.study import sweep
    from gradstop.trainers import train_population
    from gradstop.trainers.run import UPDATE_COLUMNS

    runs = tiny_runs(flow=["none", "combined"], seed=[0, 1, 2])
    (tmp_path / "p" / "runs" / runs[4].name).mkdir(parents=True)  # a run started alone before: it resumes alone
    (tmp_path / "p" / "runs" / runs[4].name / "checkpoint.npz").write_bytes(b"")
    groups = sweep.populations(runs, tmp_path / "p", 2)
    assert [[r.name for r in g] for g in groups] == [
        ["flow=none,seed=0", "flow=none,seed=1"], ["flow=none,seed=2"], ["flow=combined,seed=0", "flow=combined,seed=2"],
        ["flow=combined,seed=1"]]
    assert [len(g) for g in sweep.populations(runs, tmp_path / "p", 1)] == [1] * 6

    report = run_sweep(runs, tmp_path / "s", progress=False, population=3)
    assert report.counts()["done"] == 6 and report.complete
    together = train_population(runs[0].config, seeds=[0, 1, 2])  # the population the sweep trained for flow none
    for r, member in zip(runs[:3], together):
        folder = tmp_path / "s" / "runs" / r.name
        assert {p.name for p in folder.iterdir()} == {"config.json", "updates.csv", "eval.csv", "policy.npz", "loss.png",
                                                      "summary.json"}
        stored = json.loads((folder / "summary.json").read_text())
        assert stored["population_seeds"] == [0, 1, 2] and stored["final_test_loss"] == member.summary["final_test_loss"]
        alone = train(r.config)  # alone: the same run to float32 rounding
        assert stored["final_test_loss"] == pytest.approx(alone.summary["final_test_loss"], rel=1e-4)
        rows = (folder / "updates.csv").read_text().splitlines()
        assert rows[0].split(",")[: len(UPDATE_COLUMNS)] == UPDATE_COLUMNS and len(rows) == 1 + 4  # 2 epochs × 2 updates
    again = run_sweep(runs, tmp_path / "s", progress=False, population=3)
    assert [o.status for o in again.outcomes] == ["skipped"] * 6
    with pytest.raises(ValueError, match="population must be an integer ≥ 1"):
        run_sweep(runs, tmp_path / "s", progress=False, population=0)


def test_a_population_with_a_diverging_member_trains_its_runs_alone_and_records_each_outcome(tmp_path):
    base = {**TINY, "optimizer": "sgd", "lr": 1e12}  # every seed diverges, alone as in the population
    runs = grid(base, {"seed": [0, 1]})
    report = run_sweep(runs, tmp_path / "s", progress=False, population=2)
    assert [o.status for o in report.outcomes] == ["nonfinite", "nonfinite"] and report.complete
    assert all(run_status(tmp_path / "s", r) == "nonfinite" for r in runs)
    assert not any((tmp_path / "s" / "runs" / r.name / "summary.json").exists() for r in runs)


def test_a_population_refuses_folders_it_cannot_start_from_scratch(tmp_path):
    from gradstop.trainers import train_population

    config = TrainConfig(**TINY)
    train(config, tmp_path / "done")
    with pytest.raises(ValueError, match="holds the finished run of seed 0: leave it out of the population"):
        train_population(config, seeds=[0, 1], out=[tmp_path / "done", tmp_path / "b"])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps(TrainConfig(**TINY, seed=1).to_dict()))
    (tmp_path / "half" / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="holds a partly trained run of seed 1 \\(checkpoint.npz\\): resume it on its own"):
        train_population(config, seeds=[0, 1], out=[tmp_path / "c", tmp_path / "half"])
    with pytest.raises(ValueError, match="out names 1 folders for 2 seeds"):
        train_population(config, seeds=[0, 1], out=[tmp_path / "d"])


def test_a_sweep_never_reuses_a_folder_for_another_config_or_another_purpose(tmp_path):
    run_sweep(tiny_runs(seed=[0]), tmp_path / "s", progress=False)
    changed = grid({**TINY, "lr": 0.5}, {"seed": [0]})
    with pytest.raises(ValueError, match="holds run seed=0 with another config \\(lr: 0.001 -> 0.5\\)"):
        run_sweep(changed, tmp_path / "s", progress=False)
    run_sweep(grid(TINY, {"seed": [5]}), tmp_path / "s", progress=False)  # a new run joins the sweep
    assert set(json.loads((tmp_path / "s" / "sweep.json").read_text())["runs"]) == {"seed=0", "seed=5"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "other" / ".sweep.json.tmp-7").write_text("{")
    with pytest.raises(ValueError, match="exists and is not a gradstop sweep"):
        run_sweep(tiny_runs(seed=[0]), tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine" and (tmp_path / "other" / ".sweep.json.tmp-7").exists()
    # killed between creating the sweep's folder and renaming sweep.json into it: the sweep starts there
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / ".sweep.json.tmp-7").write_text('{"ru')
    assert run_sweep(tiny_runs(seed=[0]), tmp_path / "killed", progress=False).complete
    assert not (tmp_path / "killed" / ".sweep.json.tmp-7").exists()
    with pytest.raises(ValueError, match="names run 'a' twice"):
        run_sweep([Run("a", TrainConfig(**TINY)), Run("a", TrainConfig(**TINY))], tmp_path / "t", progress=False)
    with pytest.raises(ValueError, match="is not a plain folder name"):
        Run("../escape", TrainConfig(**TINY))


def test_an_interrupted_sweep_loses_nothing_it_finished(tmp_path):
    """SIGKILL the sweep process after its first run finished; the rerun keeps that run and completes the rest."""
    spec = tmp_path / "grid.json"
    spec.write_text(json.dumps({"name": "kill", "base": {**TINY, "epochs": 6, "updates_per_epoch": 10, "horizon": 30},
                                "grid": {"seed": [0, 1, 2]}}))
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "gradstop", "sweep", str(spec), "--out", str(out), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "runs" / "seed=0" / "summary.json"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the first run did not finish in time"
    kept = first.read_bytes()
    assert cli.main(["sweep", str(spec), "--out", str(out), "--quiet"]) == 0
    assert first.read_bytes() == kept
    _, runs = load_spec(spec)
    assert all(run_status(out, r) == "done" for r in runs)


def test_sweep_files_and_the_command_line_give_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    for text, match in (("{", "is not valid JSON"), ('{"base": {}, "grids": {}}', "unknown key\\(s\\) \\['grids'\\]"),
                        ('[1, 2]', "must hold a JSON object")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_spec(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_spec(tmp_path / "missing.json")
    spec = tmp_path / "g.json"
    spec.write_text(json.dumps({"name": "g", "base": TINY, "grid": {"flow": ["none", "input"]}}))
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--only", "nothing"]) == 2
    assert "--only nothing matches no run" in capsys.readouterr().err
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    assert "to run  flow=input" in capsys.readouterr().out and not (tmp_path / "o").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_ray_address_that_does_not_answer_is_refused_within_seconds(tmp_path, capsys):
    tick = time.perf_counter()
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ConnectionError, match=f"--ray {address}: nothing answers at"):
        connect_ray(address)
    spec = tmp_path / "g.json"
    spec.write_text(json.dumps({"base": TINY, "grid": {"seed": [0]}}))
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--ray", address]) == 2
    assert "nothing answers" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert time.perf_counter() - tick < 15
    with pytest.raises(ValueError, match="is not an address"):
        connect_ray("head-node:notaport")


def test_a_tiny_grid_runs_on_a_local_ray_instance(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from gradstop.study import sweep

    results, record = {}, sweep._record
    monkeypatch.setattr(sweep, "_record", lambda root, run, result: (results.__setitem__(run.name, result), record(root, run, result))[1])
    runs = tiny_runs() + grid({**TINY, "backend": "torch"}, {"seed": [0]}, names={"seed": "torch_seed"})
    report = run_sweep(runs, tmp_path / "s", ray="local", cpus=2, progress=False)
    assert report.counts()["done"] == 5
    # runs side by side get one intra-op thread each: XLA's flags in the worker's environment before JAX loads, torch's set
    assert all("--xla_cpu_multi_thread_eigen=false" in r["threads"]["xla_flags"] for r in results.values()), results
    assert results["torch_seed=0"]["threads"]["torch"] == 1
    assert sweep.one_thread_env()["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")  # the user's own flags are kept
    assert sweep.one_thread_env()["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false")
    import ray

    assert not ray.is_initialized()  # the sweep shut down the instance it started
    solo = train(runs[0].config)  # a Ray worker's run has the numbers of a run in this process
    stored = json.loads((tmp_path / "s" / "runs" / runs[0].name / "summary.json").read_text())
    assert stored["final_test_loss"] == solo.summary["final_test_loss"]


@pytest.mark.slow  # a second local Ray instance (about a minute); the default run covers populations in-process
def test_populations_run_as_ray_tasks_one_thread_each(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from gradstop.study import sweep
    from gradstop.trainers import train_population

    results, record = {}, sweep._record
    monkeypatch.setattr(sweep, "_record", lambda root, run, result: (results.__setitem__(run.name, result), record(root, run, result))[1])
    runs = tiny_runs()
    report = run_sweep(runs, tmp_path / "s", ray="local", cpus=2, progress=False, population=2)
    assert report.counts()["done"] == 4
    assert all("--xla_cpu_multi_thread_eigen=false" in r["threads"]["xla_flags"] for r in results.values()), results
    stored = [json.loads((tmp_path / "s" / "runs" / r.name / "summary.json").read_text()) for r in runs[2:]]
    assert [s["population_seeds"] for s in stored] == [[0, 1], [0, 1]]
    here = train_population(runs[2].config, seeds=[0, 1])  # a Ray worker's population has this process's numbers
    assert [s["final_test_loss"] for s in stored] == [m.summary["final_test_loss"] for m in here]


@pytest.mark.slow
def test_a_sweep_runs_on_a_ray_cluster_given_its_address(tmp_path):
    """`ray start --head` in a subprocess, then `gradstop sweep --ray HOST:PORT` (token authentication included)."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    port = _closed_port()
    import tempfile

    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray")}  # short: Ray's socket paths must fit 107 bytes
    # --block keeps the head's processes in this process group, so the test stops exactly them (`ray stop` would stop
    # every Ray instance on the machine)
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
                             "--include-dashboard", "false", "--disable-usage-stats"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        spec = tmp_path / "g.json"
        spec.write_text(json.dumps({"base": TINY, "grid": {"seed": [0, 1]}}))
        done = subprocess.run([sys.executable, "-m", "gradstop", "sweep", str(spec), "--out", str(tmp_path / "o"), "--ray",
                               f"127.0.0.1:{port}", "--quiet"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "2 trained" in done.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)


def test_a_second_sweep_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    import fcntl

    runs = tiny_runs(seed=[0])
    run_sweep(runs, tmp_path / "s", progress=False)
    with open(tmp_path / "s" / ".sweep.lock", "a+") as held:  # as a running sweep holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="is in use: another gradstop sweep"):
            run_sweep(runs, tmp_path / "s", progress=False)
    assert run_sweep(runs, tmp_path / "s", progress=False).counts()["skipped"] == 1  # released: it runs again
