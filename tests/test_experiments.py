"""The figure scripts' --quick modes: the files they write and their columns (not their pixels)."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import gradient_norms, precision_drift


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_precision_drift_quick(tmp_path):
    out = tmp_path / "p"
    precision_drift.main(["--quick", "--sims", "pointmass", "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"drift.csv", "first_below.csv", "table.md", "drift.png", "settings.json"}
    rows = read(out / "drift.csv")
    assert set(rows[0]) == {"sim", "scale", "seed", "flow", "horizon", "rel_error", "cosine", "norm64"}
    assert {r["sim"] for r in rows} == {"pointmass"} and len(rows) == 3 * 10  # flows × horizons
    assert all(float(r["cosine"]) > 0.99 and 0 < float(r["rel_error"]) < 1e-3 for r in rows)
    assert set(read(out / "first_below.csv")[0]) == {"sim", "scale", "seed", "flow", "first_below_099", "first_below_09",
                                                     "max_rel_error"}
    settings = json.loads((out / "settings.json").read_text())
    assert settings["args"]["quick"] and settings["versions"]["jax"] and settings["seconds"] > 0
    with pytest.raises(FileExistsError):  # never over an existing folder
        precision_drift.main(["--quick", "--sims", "pointmass", "--out", str(out)])


def test_gradient_norms_quick(tmp_path):
    out = tmp_path / "g"
    gradient_norms.main(["--quick", "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"norms.csv", "summary.csv", "gradient-norms.png", "settings.json"}
    rows = read(out / "norms.csv")
    assert set(rows[0]) == {"sim", "seed", "state", "flow", "horizon", "norm", "cos_input_none"}
    assert len(rows) == 2 * 2 * 3 * 10  # sims × states × flows × horizons
    summary = read(out / "summary.csv")
    assert len(summary) == 2 * 3 * 10 and all(int(r["samples"]) == 2 for r in summary)
    one = [r for r in summary if r["sim"] == "pointmass" and r["horizon"] == "1"]
    assert all(abs(float(r["cos_median"]) - 1) < 1e-9 for r in one)  # at H = 1 the two flows coincide on pointmass
    assert float(one[0]["norm_q25"]) <= float(one[0]["norm_median"]) <= float(one[0]["norm_q75"])
