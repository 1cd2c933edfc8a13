"""BPTT trainers and the ``gradstop train`` command on tiny budgets."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import gradstop as gs
from gradstop.cli import main, parse_sim_params
from sims import make


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bptt_reduces_the_loss(backend):
    sim = make("pointmass", backend=backend, dims=2)
    policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim, hidden=(32,)) if backend == "jax" else \
        gs.torch.mlp(sim.obs_dim, sim.action_dim, hidden=(32,), seed=0)
    _, hist = gs.bptt(policy, sim, stop="input", horizon=20, iters=60, lr=1e-2, batch=16)
    assert hist.loss.shape == hist.grad_norm.shape == hist.seconds.shape == (60,)
    assert np.all(np.isfinite(hist.loss))
    # `seconds` is the cumulative wall clock at each iteration (a contract on the record, no timing claim)
    assert np.all(np.diff(hist.seconds) >= 0)
    assert hist.loss[-10:].mean() < 0.5 * hist.loss[:5].mean()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bptt_clips_the_gradient(backend):
    """Adam's first step is ≈ lr·sign(g) per weight; clipping g far below Adam's ε shrinks it to almost nothing."""
    sim = make("pointmass", backend=backend)

    def first_step(clip_norm):
        policy = gs.jax.mlp(0, sim.obs_dim, sim.action_dim) if backend == "jax" else gs.torch.mlp(sim.obs_dim, sim.action_dim, seed=0)
        before = gs.get_weights(policy)
        trained, hist = gs.bptt(policy, sim, horizon=10, iters=1, lr=0.1, clip_norm=clip_norm)
        return max(np.abs(a - b).max() for a, b in zip(gs.get_weights(trained), before)), hist.grad_norm[0]

    free, norm = first_step(None)
    clipped, norm_clipped = first_step(1e-10)
    assert free > 0.05 and clipped < 0.01
    assert norm == pytest.approx(norm_clipped, rel=1e-5) and norm > 1.0  # the recorded norm is before clipping


@pytest.mark.parametrize("bad,match", [(dict(iters=0), "iters must be an integer ≥ 1"), (dict(lr=-1.0), "lr must be a positive"),
                                       (dict(batch=1.5), "batch must be an integer"), (dict(clip_norm=0.0), "clip_norm must be")])
def test_bptt_rejects_bad_hyperparameters(bad, match):
    sim = make("pointmass")
    kwargs = dict(horizon=5, iters=2) | bad
    with pytest.raises(ValueError, match=match):
        gs.bptt(gs.jax.mlp(0, sim.obs_dim, sim.action_dim), sim, **kwargs)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_command_writes_a_complete_results_folder(tmp_path, backend, capsys):
    out = tmp_path / "run"
    argv = ["train", "--sim", "cartpole", "--backend", backend, "--stop", "none,input+decay:0.9,combined", "--horizon", "8",
            "--iters", "4", "--batch", "2", "--hidden", "8", "--param", "poles=2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "loss.csv", "loss.png", "policy-combined.npz", "policy-input+decay_0.9.npz", "policy-none.npz"]
    with open(out / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["flow"] for r in rows} == {"none", "input+decay:0.9", "combined"}
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["sim"]["poles"] == 2 and config["args"]["backend"] == backend and config["versions"]["gradstop"]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = np.load(out / "policy-none.npz")
    assert [weights[k].shape for k in sorted(weights.files)] == [(8, 8), (8,), (1, 8), (1,)]
    # the same flows start from the same weights and states: the first loss is shared
    assert len({r["loss"] for r in rows if r["iter"] == "1"}) == 1

    # never overwrite: a second run into the same folder fails and leaves the first intact
    before = (out / "loss.csv").read_bytes()
    assert main(argv) == 2
    assert "already exists: choose another --out" in capsys.readouterr().err
    assert (out / "loss.csv").read_bytes() == before


def test_default_results_folders_are_unique(tmp_path):
    argv = ["train", "--sim", "pointmass", "--stop", "input", "--horizon", "3", "--iters", "2", "--hidden", "4",
            "--root", str(tmp_path), "--quiet"]
    assert main(argv) == 0 and main(argv) == 0
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("train-pointmass-jax-")]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


@pytest.mark.parametrize("argv,match", [
    (["--stop", "inputs"], "unknown flow part 'inputs'"),
    (["--stop", "input,input"], "names a flow twice"),
    (["--param", "pols=2"], "cartpole has no parameter 'pols'"),
    (["--param", "poles"], "--param takes KEY=VALUE"),
    (["--hidden", "a,b"], "--hidden takes comma-separated integers"),
    (["--backend", "tf"], "unknown backend 'tf'"),
    (["--horizon", "0"], "horizon must be ≥ 1"),
])
def test_train_command_reports_bad_arguments(tmp_path, capsys, argv, match):
    assert main(["train", "--root", str(tmp_path), "--iters", "1", "--quiet", *argv]) == 2
    assert match in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "a failed run left files behind"


def test_sim_params_are_parsed_as_python_literals():
    assert parse_sim_params(["poles=2", "task=balance", "target=(1, 0)", "dt=0.02"]) == \
        {"poles": 2, "task": "balance", "target": (1, 0), "dt": 0.02}


def test_module_entry_point_prints_help():
    done = subprocess.run([sys.executable, "-m", "gradstop", "train", "--help"], capture_output=True, text=True, check=True)
    assert "--stop" in done.stdout and "comma-separated gradient flows" in done.stdout
