"""gradstop diagnose / gradstop check: the files they write, their columns, and their errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import sims
from gradstop import cli
from test_check import WrongJacobian


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_diagnose_writes_figure_csvs_and_settings(tmp_path, capsys):
    out = tmp_path / "d"
    code = cli.main(["diagnose", "--sim", "cartpole", "--preset", "literature", "--param", "poles=2", "--flows", "none,input,combined",
                     "--horizon", "12", "--batch", "3", "--hidden", "8,8", "--backend", "torch", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"diagnose.png", "trace.csv", "pairs.csv", "precision.csv", "summary.json"}
    trace = read(out / "trace.csv")
    assert len(trace) == 2 * 13 and set(trace[0]) == {"flow", "t", "lam_mean", "lam_max", "mu_mean", "mu_max", "contribution"}
    assert {r["flow"] for r in trace} == {"none", "input"}  # combined is traced through its components
    assert len(read(out / "pairs.csv")) == 12
    precision = read(out / "precision.csv")
    assert {r["flow"] for r in precision} == {"none", "input", "combined"} and len(precision) == 3 * 12
    assert all(0.99 < float(r["cosine"]) <= 1.0 + 1e-12 for r in precision)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["horizon"] == 12 and summary["dtype"] == "float32" and summary["nonfinite"] == []
    assert summary["float32_first_below"]["0.99"] == {"none": None, "input": None, "combined": None}
    assert summary["versions"]["torch"] and "sign_agreement" in summary
    assert (out / "diagnose.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


def test_diagnose_torch_without_precision_and_contributions(tmp_path):
    out = tmp_path / "t"
    assert cli.main(["diagnose", "--sim", "pointmass", "--backend", "torch", "--flows", "input", "--horizon", "5",
                     "--batch", "2", "--no-precision", "--no-contributions", "--out", str(out)]) == 0
    assert not (out / "precision.csv").exists() and read(out / "pairs.csv") == []
    assert all(np.isnan(float(r["contribution"])) for r in read(out / "trace.csv"))


def test_diagnose_reads_trained_weights_and_refuses_a_wrong_architecture(tmp_path, capsys):
    import gradstop as gs

    policy = gs.torch.mlp(6, 3, hidden=(8,), seed=3)
    np.savez(tmp_path / "policy.npz", *gs.get_weights(policy))
    args = ["diagnose", "--sim", "pointmass", "--backend", "torch", "--horizon", "4", "--batch", "2",
            "--weights", str(tmp_path / "policy.npz"), "--no-precision"]
    assert cli.main(args + ["--hidden", "8", "--out", str(tmp_path / "a")]) == 0
    trace = read(tmp_path / "a" / "trace.csv")
    reference = gs.diagnose(policy, sims.make("pointmass", backend="torch"), flows=["none", "input"], horizon=4,
                            x0=sims.make("pointmass", backend="torch").reset(0, 2, dtype=__import__("torch").float32))
    assert float(trace[0]["lam_mean"]) == pytest.approx(reference.lam_mean["none"][0], rel=1e-6)  # the loaded weights were used
    assert cli.main(args + ["--hidden", "16", "--out", str(tmp_path / "b")]) == 2
    assert "holds an MLP with hidden widths 8, not --hidden 16: pass --hidden 8" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("args, message", [
    (["--flows", "none,sideways"], "unknown flow part 'sideways'"),
    (["--horizon", "0"], "horizon must be ≥ 1"),
    (["--sim", "cartpole", "--param", "poles"], "--param takes KEY=VALUE"),
    (["--sim", "nosuchsim"], "unknown simulator 'nosuchsim'"),
])
def test_diagnose_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    base = {"--sim": "pointmass", "--horizon": "4", "--out": str(tmp_path / "x")}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    assert cli.main(["diagnose"] + [a for kv in base.items() for a in kv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_an_existing_output_folder_is_refused_and_left_alone(tmp_path, capsys):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("results")
    for command in ("diagnose", "check"):
        assert cli.main([command, "--sim", "pointmass", "--horizon", "3", "--out", str(tmp_path / "keep")]) == 2
        assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "keep").iterdir()] == ["mine.txt"]


def test_check_passes_and_writes_its_table(tmp_path, capsys):
    out = tmp_path / "c"
    assert cli.main(["check", "--sim", "cartpole", "--param", "poles=2", "--backend", "torch", "--flows", "none,combined",
                     "--out", str(out)]) == 0
    rows = read(out / "check.csv")
    assert [r["check"] for r in rows][:2] == ["∂g/∂x", "∂g/∂a"] and all(r["passed"] == "True" for r in rows)
    assert json.loads((out / "summary.json").read_text())["passed"] is True and (out / "check.png").exists()
    assert "gradient check of cartpole: passed" in capsys.readouterr().out


def test_check_exits_1_naming_the_wrong_block(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sims._REGISTRY, "wrongjac", WrongJacobian)
    out = tmp_path / "w"
    assert cli.main(["check", "--sim", "wrongjac", "--param", "dims=2", "--backend", "torch", "--flows", "none",
                     "--out", str(out)]) == 1
    assert "FAIL ∂g/∂x" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["failures"] == ["∂g/∂x", "flow none: native vs finite differences"]
