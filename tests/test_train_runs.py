"""Results folders of the trainers: exact resume after SIGKILL, config files, bad input, the CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gradstop.cli import main, parse_sim_params
from gradstop.trainers import TrainConfig, train

BACKENDS = ["jax", "torch"]
ROOT = Path(__file__).resolve().parents[1]
NUMBERS = ["epoch", "update", "loss", "grad_norm", "grad_norm_clipped", "cos_input_none", "lr", "finite"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def numbers(path: Path, keys=NUMBERS) -> list[tuple]:
    return [tuple(r[k] for k in keys) for r in rows(path)]


def command(backend: str, out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "gradstop", "train", "--sim", "cartpole", "--param", "poles=2", "--backend", backend,
            "--flow", "none,combined", "--horizon", "25", "--data", "fixed", "--train-size", "64", "--batch", "8",
            "--epochs", str(epochs), "--hidden", "16", "--schedule", "linear", "--out", str(out), "--quiet"]


# torch in the default run, JAX (30 s of compiles in three processes) in make test-slow
@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_a_run_killed_with_sigkill_resumes_to_exactly_the_uninterrupted_numbers(backend, tmp_path):
    epochs = 40 if backend == "jax" else 8  # torch's eager epochs are slow enough to be caught mid-run
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command(backend, straight, epochs), check=True, env=env, cwd=ROOT, capture_output=True)

    proc = subprocess.Popen(command(backend, killed, epochs), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_eval = killed / "none" / "eval.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill mid-run, a little after the first checkpoints
        if first_eval.exists() and len(first_eval.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "none" / "summary.json").exists(), "the run finished before it was killed: the test saw no resume"
    done_before = len(rows(killed / "none" / "updates.csv"))

    again = subprocess.run(command(backend, killed, epochs), env=env, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    for flow in ("none", "combined"):
        assert numbers(killed / flow / "updates.csv") == numbers(straight / flow / "updates.csv")
        assert numbers(killed / flow / "eval.csv", ["epoch", "update", "test_loss", "test_success"]) == \
            numbers(straight / flow / "eval.csv", ["epoch", "update", "test_loss", "test_success"])
        a, b = np.load(killed / flow / "policy.npz"), np.load(straight / flow / "policy.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert 0 < done_before < epochs * 8
    assert len(rows(killed / "none" / "updates.csv")) == epochs * 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_in_process_matches_and_a_complete_run_is_not_touched(backend, tmp_path, monkeypatch):
    import importlib

    cfg = TrainConfig(sim="pointmass", backend=backend, horizon=8, epochs=4, updates_per_epoch=3, hidden=(8,), checkpoint_every=2)
    whole = train(cfg, out=tmp_path / "whole")
    # a run cut in its third epoch, after the checkpoint of epoch 2
    program = importlib.import_module(f"gradstop.trainers.{backend}.bptt").BPTT
    real = program.run_epoch

    def cut_in_epoch_3(self, data, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, data, epoch)

    monkeypatch.setattr(program, "run_epoch", cut_in_epoch_3)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut)
    monkeypatch.setattr(program, "run_epoch", real)
    assert len(rows(cut / "updates.csv")) == 6 and not (cut / "summary.json").exists()
    with open(cut / "updates.csv", "ab") as f:
        f.write(b"3,7,0.5,0.1,0.1,na")  # a torn row of an update that was never checkpointed
    resumed = train(cfg, out=cut)
    assert numbers(cut / "updates.csv") == numbers(tmp_path / "whole" / "updates.csv")
    assert [r["update"] for r in resumed.updates] == [r["update"] for r in whole.updates]
    before = (tmp_path / "whole" / "updates.csv").read_bytes()
    again = train(cfg, out=tmp_path / "whole")  # complete: nothing is recomputed or rewritten
    assert (tmp_path / "whole" / "updates.csv").read_bytes() == before and again.summary == whole.summary


def test_a_folder_with_another_config_or_another_frameworks_checkpoint_is_refused(tmp_path):
    cfg = TrainConfig(sim="pointmass", horizon=4, epochs=1, updates_per_epoch=2, hidden=(4,))
    train(cfg, out=tmp_path / "run")
    with pytest.raises(ValueError, match=r"holds a run with a different config \(lr: 0.001 -> 0.01\)"):
        train(TrainConfig(**{**cfg.to_dict(), "lr": 0.01}), out=tmp_path / "run")
    # a RUN_ONLY field may differ (it changes no number)
    train(TrainConfig(**{**cfg.to_dict(), "checkpoint_every": 5}), out=tmp_path / "run")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(cfg.to_dict()))
    (other / "checkpoint.pt").write_bytes(b"torch bytes")
    with pytest.raises(ValueError, match="holds a torch checkpoint .* but this run is jax: resume it with --backend torch"):
        train(cfg, out=other)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a gradstop run"):
        train(cfg, out=stranger)
    assert (stranger / "notes.txt").read_text() == "mine"
    (stranger / ".config.json.tmp-123").write_text("{")  # a leftover does not make a stranger's folder a run
    with pytest.raises(ValueError, match="is not a gradstop run"):
        train(cfg, out=stranger)
    assert (stranger / "notes.txt").read_text() == "mine"
    # killed between creating the run's folder and renaming config.json into it: only that temporary file is
    # there, and the run starts in that folder
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".config.json.tmp-4242").write_text('{"sim": "poin')
    train(cfg, out=killed)
    assert (killed / "summary.json").exists() and not (killed / ".config.json.tmp-4242").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wall_clock_budget_ends_the_run_after_the_first_epoch_that_reaches_it_evaluated(backend, tmp_path):
    cfg = TrainConfig(sim="pointmass", backend=backend, horizon=8, epochs=100_000, updates_per_epoch=2, batch=4,
                      hidden=(8,), max_seconds=1.0, eval_every=50)
    result = train(cfg, out=tmp_path / "r")
    summary, updates = result.summary, result.updates
    assert summary["budget_reached"] and 0 < summary["updates"] < cfg.epochs * 2 and len(updates) % 2 == 0
    spent = [summary["compile_seconds"] + float(u["seconds"]) for u in updates[1::2]]  # after each epoch's training
    assert spent[-1] >= 1.0 and (len(spent) == 1 or spent[-2] < 1.0)  # the first epoch that reached it, and no later one
    assert int(result.evals[-1]["update"]) == summary["updates"]  # evaluated where it stopped, off the eval_every grid
    again = train(cfg, out=tmp_path / "r")  # finished: nothing more runs
    assert again.summary == summary and len(again.updates) == len(updates)
    assert "budget_reached" not in train(TrainConfig(sim="pointmass", horizon=8, epochs=1, batch=4, hidden=(8,))).summary
    assert TrainConfig(max_seconds=None).digest() == TrainConfig().digest()  # configs without a budget keep their hash
    from gradstop.trainers import train_population

    with pytest.raises(ValueError, match="a population trains its members in one program, so a wall-clock budget"):
        train_population(cfg, seeds=[0, 1])


def test_config_round_trips_and_bad_fields_are_named():
    cfg = TrainConfig(sim="cartpole", sim_params={"poles": 3}, hidden=(100, 100), flow="combined", data="fixed", zero_last=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    d = cfg.to_dict()
    d["learning_rate"] = d.pop("lr")
    with pytest.raises(ValueError, match=r"unknown field\(s\) 'learning_rate'.*lacks|unknown field\(s\) 'learning_rate'"):
        TrainConfig.from_dict(d)
    d = cfg.to_dict()
    d["optimiser"] = d.pop("optimizer")
    with pytest.raises(ValueError, match=r"'optimiser' \(did you mean 'optimizer'\?\)"):
        TrainConfig.from_dict(d)
    d = cfg.to_dict()
    del d["seed"]
    with pytest.raises(ValueError, match=r"lacks field\(s\) 'seed'"):
        TrainConfig.from_dict(d)


@pytest.mark.parametrize("field,value,match", [
    ("algo", "ppo", "unknown algo 'ppo'; choose one of bptt"),
    ("optimizer", "adamx", r"unknown optimizer 'adamx'; choose one of adam, adamw, sgd \(did you mean 'adam'"),
    ("schedule", "cosin", r"unknown schedule 'cosin'.*did you mean 'cosine'"),
    ("activation", "gelu", "unknown activation 'gelu'"),
    ("data", "replay", "unknown data 'replay'"),
    ("on_nonfinite", "ignore", "unknown on_nonfinite 'ignore'"),
    ("flow", "inputs", "unknown flow part 'inputs'"),
    ("lr_final", 2.0, "lr_final must be a finite number ≥ 0.0 and ≤ 1.0"),
    ("train_size", 4, r"train_size \(4\) is smaller than batch \(8\)"),
    ("max_seconds", 0, "max_seconds must be a finite number > 0.0, got 0"),
])
def test_bad_config_values_get_errors_that_name_them(field, value, match):
    kwargs = {"data": "fixed"} if field == "train_size" else {}
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**kwargs, field: value})


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_command_writes_a_complete_results_folder(tmp_path, backend, capsys):
    out = tmp_path / "run"
    argv = ["train", "--sim", "cartpole", "--backend", backend, "--stop", "none,input+decay:0.9,combined", "--horizon", "8",
            "--epochs", "2", "--updates-per-epoch", "2", "--batch", "2", "--hidden", "8", "--param", "poles=2",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["combined", "input+decay_0.9", "loss.png", "none", "summary.csv", "sweep.json"]
    run = out / "none"
    assert sorted(p.name for p in run.iterdir()) == sorted(["config.json", "eval.csv", "loss.png", "policy.npz", "summary.json",
                                                            "updates.csv", "checkpoint.npz" if backend == "jax" else "checkpoint.pt"])
    summary = rows(out / "summary.csv")
    assert [r["flow"] for r in summary] == ["none", "input+decay:0.9", "combined"]
    assert len({r["first_loss"] for r in summary}) == 1  # same initial weights and data for every flow
    updates = rows(run / "updates.csv")
    assert len(updates) == 4 and all(np.isfinite(float(r["loss"])) for r in updates)
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert config.sim_params == {"poles": 2} and config.backend == backend and config.flow == "none"
    assert json.loads((out / "sweep.json").read_text())["versions"]["gradstop"]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = np.load(run / "policy.npz")
    assert [weights[k].shape for k in sorted(weights.files)] == [(8, 8), (8,), (1, 8), (1,)]

    # the same command again finds the runs complete; another config is refused and changes nothing
    before = (run / "updates.csv").read_bytes()
    assert main(argv) == 0
    assert main(argv + ["--lr", "0.5"]) == 2
    assert "holds runs with a different config (lr: 0.001 -> 0.5)" in capsys.readouterr().err
    assert (run / "updates.csv").read_bytes() == before


def test_a_saved_config_reruns_and_flags_override_it(tmp_path, capsys):
    assert main(["train", "--sim", "pointmass", "--flow", "input", "--horizon", "3", "--epochs", "1", "--updates-per-epoch", "2",
                 "--hidden", "4", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    saved = tmp_path / "a" / "input" / "config.json"
    capsys.readouterr()
    assert main(["train", "--config", str(saved), "--print-config", "--lr", "0.01"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 0.01 and printed["horizon"] == 3 and printed["flow"] == "input"
    assert main(["train", "--config", str(saved), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert numbers(tmp_path / "b" / "input" / "updates.csv") == numbers(tmp_path / "a" / "input" / "updates.csv")


def test_default_results_folder_is_named_by_the_config_so_the_same_command_resumes(tmp_path):
    argv = ["train", "--sim", "pointmass", "--stop", "input", "--horizon", "3", "--epochs", "1", "--updates-per-epoch", "2",
            "--hidden", "4", "--root", str(tmp_path), "--quiet"]
    assert main(argv) == 0 and main(argv) == 0
    assert len(list(tmp_path.iterdir())) == 1
    assert main(argv + ["--seed", "1"]) == 0
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("train-pointmass-jax-")]) == 2
    assert not [p for p in tmp_path.rglob(".*")], "a temporary file was left behind"


@pytest.mark.parametrize("argv,match", [
    (["--stop", "inputs"], "unknown flow part 'inputs'"),
    (["--stop", "input,input"], "names a flow twice"),
    (["--param", "pols=2"], "cartpole has no parameter 'pols'"),
    (["--param", "poles"], "--param takes KEY=VALUE"),
    (["--hidden", "a,b"], "--hidden takes comma-separated integers"),
    (["--backend", "tf"], "unknown backend 'tf'"),
    (["--horizon", "0"], "horizon must be ≥ 1"),
    (["--algo", "sac"], "unknown algo 'sac'"),
    (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["--schedule", "step"], "unknown schedule 'step'"),
    (["--activation", "gelu"], "unknown activation 'gelu'"),
    (["--config", "nowhere.json"], "--config nowhere.json: no such file"),
    (["--init-std", "0.3"], "--init-std is the Gaussian policy's initial σ, but the policy is deterministic: add --policy gaussian"),
    (["--algo", "shac", "--policy", "deterministic", "--init-std", "0.3"], "but the policy is deterministic"),
])
def test_train_command_reports_bad_arguments(tmp_path, capsys, argv, match):
    assert main(["train", "--root", str(tmp_path), "--epochs", "1", "--quiet", *argv]) == 2
    assert match in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "a failed run left files behind"


def test_a_config_file_with_a_misspelt_field_is_refused(tmp_path, capsys):
    path = tmp_path / "config.json"
    d = TrainConfig().to_dict()
    d["hiden"] = d.pop("hidden")
    path.write_text(json.dumps(d))
    assert main(["train", "--config", str(path), "--root", str(tmp_path / "r")]) == 2
    assert "unknown field(s) 'hiden' (did you mean 'hidden'?)" in capsys.readouterr().err


def test_sim_params_are_parsed_as_python_literals():
    assert parse_sim_params(["poles=2", "task=balance", "target=(1, 0)", "dt=0.02"]) == \
        {"poles": 2, "task": "balance", "target": (1, 0), "dt": 0.02}


def test_module_entry_point_prints_help():
    done = subprocess.run([sys.executable, "-m", "gradstop", "train", "--help"], capture_output=True, text=True, check=True)
    assert "--flow FLOWS, --stop FLOWS" in done.stdout and "--on-nonfinite" in done.stdout and "--clip-value" in done.stdout


def test_tensorboard_logs_scalars(tmp_path):
    pytest.importorskip("tensorboardX")
    assert main(["train", "--sim", "pointmass", "--flow", "input", "--horizon", "3", "--epochs", "2", "--updates-per-epoch", "2",
                 "--hidden", "4", "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path / "tb"), "--quiet"]) == 0
    events = list((tmp_path / "tb" / "input").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_the_apg_peer_script_names_the_jax_it_needs_when_run_with_another(tmp_path):
    import jax

    if hasattr(jax, "device_put_replicated"):
        pytest.skip("this jax still has device_put_replicated: the peer would run here")
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "apg_peer.py"), "--quick", "--out", str(tmp_path / "p")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0 and "run it with jax 0.9.2 (`make peer`" in done.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_the_trainer_speed_script_runs_on_a_tiny_budget(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "trainer_speed.py"), "--quick", "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    report = json.loads((tmp_path / "s.json").read_text())
    assert {"epoch", "population", "update"} <= set(report) and "torch/JAX" in done.stdout
