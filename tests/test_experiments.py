"""The figure scripts' --quick modes: the files they write and their columns (not their pixels)."""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
from pathlib import Path

import numpy as np
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


def test_cartpole_study_quick_writes_its_tables_and_resumes(tmp_path):
    from experiments import cartpole_study
    from gradstop.study import stats

    out = tmp_path / "c"
    cartpole_study.main(["--quick", "--out", str(out)])
    assert {"final.csv", "table.csv", "pairs.csv", "improvement.csv", "profiles.csv", "curves.csv", "summary.md",
            "cartpole-study.png", "cartpole-study-pairs.png", "cartpole-study-profiles.png", "cartpole-study-curves.png",
            "settings.json", "sweep.json", "runs", "summary.csv"} <= {p.name for p in out.iterdir()}
    final = read(out / "final.csv")
    assert set(final[0]) == {"part", "setting", "obs", "poles", "flow", "flow_run", "lr", "seed", "status", "final_test_loss",
                             "best_test_loss_selected_on_test", "final_test_success", "train_seconds"}
    assert len(final) == 12 and {r["setting"] for r in final} == {"published", "value", "norm"}  # main + both clippings
    assert all(r["status"] == "done" and 0 <= float(r["final_test_loss"]) <= 2 for r in final)
    table = read(out / "table.csv")
    assert len(table) == 6 and all(r["done"] == "2" for r in table)
    assert all(float(r["min"]) <= float(r["iqm_low"]) <= float(r["iqm"]) <= float(r["iqm_high"]) <= float(r["max"]) for r in table)
    # the written tables are the stats module's numbers for final.csv's losses
    args = cartpole_study.parse(["--quick"])
    losses = {}
    for r in final:
        losses.setdefault((r["part"], r["setting"], r["flow"]), {})[int(r["seed"])] = float(r["final_test_loss"])
    for row in table:
        cell = cartpole_study._label(row["part"], row["setting"], "raw", 1, row["flow"])
        est = stats.summarize(losses[(row["part"], row["setting"], row["flow"])], cell=cell, reps=args.bootstrap_reps)
        assert [float(row[k]) for k in ("iqm", "iqm_low", "iqm_high", "median")] == \
            pytest.approx([est["iqm"].value, est["iqm"].low, est["iqm"].high, est["median"].value], rel=1e-12)
    pairs = read(out / "pairs.csv")
    assert {r["flow"] for r in pairs} == {"combined"} and len(pairs) == 3
    for row in pairs:
        ours, base = losses[(row["part"], row["setting"], "combined")], losses[(row["part"], row["setting"], "none")]
        ratio = stats.paired_log_ratio(ours, base, cell=cartpole_study._label(row["part"], row["setting"], "raw", 1, "combined"),
                                       reps=args.bootstrap_reps, floor=cartpole_study.LOSS_FLOOR)
        assert [float(row[k]) for k in ("log_ratio", "log_ratio_low", "log_ratio_high")] == \
            pytest.approx([ratio.value, ratio.low, ratio.high], rel=1e-12)
        assert row["verdict"] == stats.verdict(ratio) and row["seeds"] == "2"
    assert len(read(out / "improvement.csv")) == 3
    summary = (out / "summary.md").read_text()
    assert summary.count("over 2 paired seeds") == 3
    curves = read(out / "curves.csv")
    assert len(curves) == 12 * 3 and {r["epoch"] for r in curves} == {"0", "1", "2"}  # untrained + every epoch
    cfg = json.loads((out / "runs" / "part=main,obs=raw,poles=1,flow=none,seed=0" / "config.json").read_text())
    assert (cfg["preset"], cfg["sim_params"], cfg["shuffle"], cfg["weight_init"], cfg["adam_eps"], cfg["zero_last"]) == \
        ("literature", {"poles": 1, "observation": "raw"}, False, "glorot", 1e-7, True)  # the published run zeroes it
    settings = json.loads((out / "settings.json").read_text())
    assert settings["complete"] and settings["finished"] == settings["runs"] == 12 and settings["seeds"] == [0, 1]
    before = (out / "final.csv").read_text()
    cartpole_study.main(["--quick", "--out", str(out)])  # every run finished: nothing retrains, the tables are the same
    assert (out / "final.csv").read_text() == before
    with pytest.raises(ValueError, match="part 'zero-last' is retired: the published code zeroes the output layer"):
        cartpole_study.parse(["--parts", "zero-last"])


def test_cartpole_study_reuses_the_runs_of_its_earlier_layout(tmp_path, capsys):
    """A folder of the earlier layout: its zero-last run is a main-part run now, renamed and not retrained; a run
    whose config the study no longer has keeps its name."""
    from experiments import cartpole_study
    from gradstop.study.sweep import Run, run_sweep

    args = cartpole_study.parse(["--quick", "--parts", "main"])
    out = tmp_path / "c"
    old_name = "part=zero-last,setting=zero-last,obs=raw,poles=1,flow=none,seed=0"
    kept = "part=clipping,setting=value,obs=raw,poles=1,flow=none,seed=0"  # glorot output layer and clipping: no match
    run_sweep([Run(old_name, cartpole_study.config(args, 1, "none", 0)),
               Run(kept, cartpole_study.config(args, 1, "none", 0, zero_last=False, clip_value=1.0))], out, progress=False)
    trained = json.loads((out / "runs" / old_name / "summary.json").read_text())
    cartpole_study.main(["--quick", "--parts", "main", "--out", str(out)])
    assert "reusing 1 finished runs" in capsys.readouterr().out
    new = out / "runs" / "part=main,obs=raw,poles=1,flow=none,seed=0"
    assert not (out / "runs" / old_name).exists() and (out / "runs" / kept).exists()
    assert json.loads((new / "summary.json").read_text()) == trained  # the same run, not retrained
    assert json.loads((out / "renamed.json").read_text()) == {old_name: new.name}
    manifest = json.loads((out / "sweep.json").read_text())["runs"]
    assert old_name not in manifest and new.name in manifest and kept in manifest
    assert [r for r in read(out / "summary.csv") if r["name"] == new.name][0]["status"] == "done"


def test_cartpole_study_tunes_each_flow_on_validation_losses_of_its_own_seeds(tmp_path, capsys):
    cartpole_study = importlib.import_module("experiments.cartpole_study")
    out = tmp_path / "t"
    args = ["--quick", "--parts", "tuning", "tuned", "--out", str(out)]
    cartpole_study.main([*args, "--plot-only"])  # nothing tuned yet: the tuned part is left out, with a message
    assert "the tuned setting of flow none is missing: 0 of its 4 tuning runs have finished" in capsys.readouterr().out
    assert not (out / "tuned.csv").exists()
    cartpole_study.main(args)
    tuning, tuned = read(out / "tuning.csv"), read(out / "tuned.csv")
    assert len(tuning) == 4 and all(r["runs"] == "2" for r in tuning)  # 2 flows × 2 lrs, 2 tuning seeds each
    for flow in ("none", "combined"):  # the choice is the candidate with the lowest mean log validation loss
        best = min((r for r in tuning if r["flow"] == flow), key=lambda r: float(r["mean_log_val_loss"]))
        chosen = next(r for r in tuned if r["flow"] == flow)
        assert (chosen["tuned_flow"], chosen["lr"]) == (best["candidate"], best["lr"])
    final = read(out / "final.csv")  # the reporting seeds ran at the tuned settings; tuning runs are not reported
    assert {r["part"] for r in final} == {"tuned"} and {r["seed"] for r in final} == {"0", "1"}
    assert all(r["lr"] == next(t["lr"] for t in tuned if t["flow"] == r["flow"]) for r in final)
    summaries = [json.loads(p.read_text()) for p in (out / "runs").glob("part=tuning,*/summary.json")]
    assert len(summaries) == 8 and all(s["final_val_loss"] is not None for s in summaries)
    assert all(r["at_grid_edge"].startswith("lr ") for r in tuned)  # two lrs tried: either is an edge
    assert "on the edge of the grid tried (lr " in capsys.readouterr().out
    full = cartpole_study.parse([])
    assert cartpole_study.grid_edges(full, "decay:0.95", 3e-3) == [] and cartpole_study.grid_edges(full, "none", 1e-3) == []
    assert cartpole_study.grid_edges(full, "decay:0.98", 1e-2) == ["lr 0.01, the highest tried", "γ 0.98, the highest tried"]
    assert cartpole_study.grid_edges(full, "truncate:10", 3e-4) == ["lr 0.0003, the lowest tried", "K 10, the lowest tried"]
    with pytest.raises(ValueError, match=r"the tuning seeds \[1, 100\] overlap the reporting seeds 0…9 in \[1\]"):
        cartpole_study.parse(["--parts", "tuned", "--tune-seeds", "1", "100"])


def test_a_tuned_flow_at_its_published_setting_reuses_the_main_parts_runs(tmp_path, capsys):
    """With the published lr the only candidate, every tuned run has a main run's config: none is trained again, and
    the tuned cells report exactly the main cells' losses."""
    cartpole_study = importlib.import_module("experiments.cartpole_study")
    out = tmp_path / "t"
    cartpole_study.main(["--quick", "--parts", "main", "--out", str(out)])
    main_runs = {p.name for p in (out / "runs").iterdir()}
    cartpole_study.main(["--quick", "--parts", "main", "tuning", "tuned", "--lrs", "1e-3", "--out", str(out)])
    assert "4 tuned-part runs keep their flow's published setting and lr" in capsys.readouterr().out
    assert not any(p.name.startswith("part=tuned") for p in (out / "runs").iterdir())
    assert {p.name for p in (out / "runs").iterdir()} - main_runs == {  # only the tuning runs are new
        f"part=tuning,obs=raw,poles=1,flow={f},candidate={f},lr=0.001,seed={s}" for f in ("none", "combined") for s in (100, 101)}
    final = read(out / "final.csv")
    by_part = {p: {(r["flow"], r["seed"]): r["final_test_loss"] for r in final if r["part"] == p} for p in ("main", "tuned")}
    assert len(by_part["tuned"]) == 4 and by_part["tuned"] == by_part["main"]
    effect = read(out / "tuning_effect.csv")  # the same runs: no ratio to report, and the summary says why
    assert len(effect) == 2 and all(r["same_runs"] == "True" and r["ratio"] == "" for r in effect)
    assert "| `none` | `none`, lr 0.001 | the published setting |" in (out / "summary.md").read_text()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["complete"] and settings["finished"] == settings["runs"]


def test_training_curves_quick_writes_curves_for_both_algorithms(tmp_path):
    from experiments import training_curves

    out = tmp_path / "t"
    training_curves.main(["--quick", "--out", str(out)])
    curves = read(out / "curves.csv")
    assert set(curves[0]) == {"task", "algo", "flow", "seed", "update", "env_steps", "seconds", "test_loss", "test_reward"}
    assert {(r["algo"], r["flow"]) for r in curves} == {(a, f) for a in ("bptt", "shac") for f in ("none", "combined")}
    shac = [r for r in curves if r["algo"] == "shac" and r["update"] == "4"]
    bptt = [r for r in curves if r["algo"] == "bptt" and r["update"] == "4"]
    assert {int(r["env_steps"]) for r in shac} == {4 * 16 * 32} and {int(r["env_steps"]) for r in bptt} == {4 * 16 * 128}
    table = read(out / "table.csv")
    assert len(table) == 4 and all(float(r["q25"]) <= float(r["median"]) <= float(r["q75"]) for r in table)
    assert json.loads((out / "settings.json").read_text())["complete"]


def test_gradstop_figures_skips_current_figures_and_names_bad_input(tmp_path, capsys):
    from gradstop import cli

    out = tmp_path / "gallery"
    assert cli.main(["figures", "--quick", "--only", "gradient-norms", "--out", str(out)]) == 0
    png = out / "gradient-norms" / "gradient-norms.png"
    stamp = png.stat().st_mtime_ns
    assert cli.main(["figures", "--quick", "--only", "gradient-norms", "--out", str(out)]) == 0
    assert "gradient-norms: current, skipped" in capsys.readouterr().out and png.stat().st_mtime_ns == stamp
    assert cli.main(["figures", "--quick", "--only", "gradient-norms", "--out", str(out), "--force"]) == 0
    assert png.stat().st_mtime_ns != stamp and json.loads((out / "gradient-norms" / "settings.json").read_text())["complete"]
    assert cli.main(["figures", "--only", "gradient-norm", "--out", str(out)]) == 2
    assert "unknown figure(s) 'gradient-norm' (did you mean 'gradient-norms'?)" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    assert cli.main(["figures", "--quick", "--out", str(tmp_path / "mine")]) == 2
    assert "is not a gradstop figures folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"
    (tmp_path / "killed").mkdir()  # killed before figures.json was renamed into it: a folder like an empty one
    (tmp_path / "killed" / ".figures.json.tmp-3").write_text("{")
    assert cli.main(["figures", "--list", "--out", str(tmp_path / "killed")]) == 0
    assert not (tmp_path / "killed" / ".figures.json.tmp-3").exists()


def test_runtime_memory_quick_runs_the_benchmark_suite_and_writes_its_ratios(tmp_path):
    from experiments import runtime_memory

    out = tmp_path / "r"
    runtime_memory.main(["--quick", "--out", str(out)])
    cases = read(out / "cases.csv")
    assert set(cases[0]) == {"framework", "impl", "batch", "flow", "horizon", "ms", "memory_bytes", "compile_s"}
    assert {(c["framework"], c["impl"]) for c in cases} == {(f, i) for f in ("jax", "torch") for i in ("native", "fused")}
    assert {c["horizon"] for c in cases} == {"1", "10"} and {c["flow"] for c in cases} == {"none", "none+input"}
    assert all(float(c["ms"]) > 0 for c in cases)
    kinds = {r["kind"] for r in read(out / "ratios.csv")}
    assert kinds == {"native/fused", "torch/jax"} and len(read(out / "ratios.csv")) == 16
    again = tmp_path / "again"  # the same figure from that run's JSON, without timing anything
    runtime_memory.main(["--from-json", str(out / "benchmark.json"), "--out", str(again)])
    assert read(again / "cases.csv") == cases
    with pytest.raises(ValueError, match="--from-json .*: no such file"):
        runtime_memory.parse(["--from-json", str(tmp_path / "missing.json")])


def test_model_free_names_the_jax_it_needs_outside_the_peer_venv(tmp_path):
    from experiments import model_free

    with pytest.raises(ImportError, match="make peer-venv"):
        model_free.main(["--quick", "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()


PEER = Path(__file__).resolve().parents[1] / ".venv-peer" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(not PEER.exists(), reason="needs the peer venv with jax 0.9.2: make peer-venv")
def test_model_free_quick_in_the_peer_venv(tmp_path):
    out = tmp_path / "m"
    done = subprocess.run([str(PEER), "-m", "experiments.model_free", "--quick", "--out", str(out)], capture_output=True,
                          text=True, cwd=PEER.parents[2], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    curves = read(out / "curves.csv")
    assert {r["method"] for r in curves} == {"ppo", "sac", "bptt", "shac"}
    assert set(curves[0]) == {"method", "seed", "env_steps", "wall_s", "eval_reward"}
    assert {r["method"] for r in read(out / "final.csv")} == {"ppo", "sac", "bptt", "shac"}
    assert json.loads((out / "settings.json").read_text())["complete"]


def test_locomotion_names_the_jax_ppo_needs_and_runs_each_method_at_the_budget_fixed_beforehand(tmp_path):
    from experiments import locomotion

    with pytest.raises(ImportError, match="make peer-venv.*or leave PPO out"):
        locomotion.main(["--quick", "--out", str(tmp_path / "l")])
    assert not (tmp_path / "l").exists()
    args = locomotion.parse([])
    shac, bptt = locomotion.config(args, "shac", 1), locomotion.config(args, "bptt", 1)
    assert shac.max_seconds == bptt.max_seconds == 400.0 and shac.horizon == bptt.horizon == 1000
    # DiffRL's hopper config (examples/cfg/shac/hopper.yaml) on SHAC's published defaults; 1000 is no multiple of 32
    assert (shac.lr, shac.critic_lr, shac.hidden, shac.critic_hidden, shac.window, shac.td_dones) == (
        2e-3, 2e-4, (128, 64, 32), (64, 64), 32, "step")
    assert shac.epochs * shac.updates_per_epoch == 2000 and bptt.flow == "truncate:32"
    with pytest.raises(ValueError, match="unknown methods"):
        locomotion.parse(["--methods", "sac"])


@pytest.mark.slow
@pytest.mark.skipif(not PEER.exists(), reason="needs the peer venv with jax 0.9.2: make peer-venv")
def test_locomotion_quick_in_the_peer_venv(tmp_path):
    out = tmp_path / "l"
    done = subprocess.run([str(PEER), "-m", "experiments.locomotion", "--quick", "--out", str(out)], capture_output=True,
                          text=True, cwd=PEER.parents[2], timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    final = read(out / "final.csv")
    assert sorted((r["method"], r["seed"]) for r in final) == sorted((m, str(s)) for m in ("ppo", "shac", "bptt") for s in (0, 1))
    assert all(float(r["seconds"]) >= 30.0 for r in final)  # every run went to its budget (compile included) and stopped
    assert all(json.loads((out / "runs" / f"method={m},seed={s}" / "summary.json").read_text())["budget_reached"]
               for m in ("shac", "bptt") for s in (0, 1))
    table = read(out / "table.csv")
    assert [r["method"] for r in table] == ["ppo", "shac", "bptt"] and all(r["seeds"] == "2" for r in table)
    assert json.loads((out / "settings.json").read_text())["complete"]


def test_model_free_takes_each_algorithms_best_flow_from_the_training_curves(tmp_path):
    from experiments import model_free

    table = tmp_path / "table.csv"
    table.write_text("task,algo,flow,runs,done,nonfinite,q25,median,q75\n"
                     "reacher,bptt,none,5,5,0,1,30.0,1\nreacher,bptt,truncate:10,5,5,0,1,20.0,1\n"
                     "reacher,shac,input,5,5,0,1,10.0,1\nreacher,shac,none,5,5,0,1,12.0,1\npointmass,bptt,all,5,5,0,1,1.0,1\n")
    args = model_free.parse(["--flows-from", str(table)])
    assert (args.bptt_flow, args.shac_flow) == ("truncate:10", "input")
    with pytest.raises(ValueError, match="no finished bptt runs on hopper"):
        model_free.parse(["--flows-from", str(table), "--env", "hopper"])


def test_gradstop_figures_feeds_model_free_the_training_curves_flows(tmp_path):
    """The gallery's model-free figure takes its flows from the gallery's training curves; the record names the flows,
    not the table's path, so a fresh clone finds the committed figure current."""
    from experiments import FIGURES, model_free
    from gradstop.study.figures import args_record

    fig = FIGURES["model-free"]
    assert fig.inputs(tmp_path) == []  # no training curves yet: the script's default flows
    (tmp_path / "training-curves").mkdir()
    table = tmp_path / "training-curves" / "table.csv"
    table.write_text("task,algo,flow,runs,done,nonfinite,q25,median,q75\n"
                     "reacher,bptt,decay:0.9,5,5,0,1,3.0,1\nreacher,shac,none,5,5,0,1,2.0,1\n")
    argv = fig.inputs(tmp_path)
    assert argv == ["--flows-from", str(table)]
    record = args_record(model_free.parse(argv))
    assert "flows_from" not in record and (record["bptt_flow"], record["shac_flow"]) == ("decay:0.9", "none")
    assert args_record(model_free.parse(["--bptt-flow", "decay:0.9"])) == record


def test_the_committed_gallery_is_current():
    """docs/gallery holds every figure at its full setting, with every file its settings.json lists, so that
    `gradstop figures --out docs/gallery` in a fresh clone redraws nothing. A sweep-backed figure drawn at its
    current settings from part of its runs (settings.json: complete false) is not current, but not stale either:
    it is reported as a skip naming it, until its sweep has finished."""
    from experiments import FIGURES
    from gradstop.study.figures import args_record, figure_argv, read_settings

    root = Path(__file__).resolve().parents[1] / "docs" / "gallery"
    stale, partial = [], []
    for name, fig in FIGURES.items():
        argv, current = figure_argv(fig, root, name)
        if current:
            continue
        s = read_settings(root / name) or {}
        args = importlib.import_module(f"experiments.{fig.module}").parse(argv)
        if fig.sweep and s.get("script") == fig.module and s.get("args") == args_record(args) and not s.get("complete"):
            partial.append(f"{name} ({s.get('finished')} of {s.get('runs')} runs)")
        else:
            stale.append(name)
    assert not stale, f"figures in docs/gallery not current (a file missing, or settings changed): {stale}"
    if partial:
        pytest.skip(f"sweep-backed figures in docs/gallery drawn from part of their runs, to be finished: {partial}")


@pytest.mark.slow
def test_alpha_order_quick_writes_its_tables_with_alpha_and_budgets(tmp_path):
    import csv

    from experiments import alpha_order

    out = tmp_path / "a"
    alpha_order.main(["--quick", "--out", str(out)])
    table = list(csv.DictReader(open(out / "table.csv")))
    assert [r["flow"] for r in table] == ["none", "zero+samples:2", "alpha:auto+samples:2"]
    assert [int(r["rollouts_per_state"]) for r in table] == [1, 3, 5]
    assert all(r["final_iqm"] and r["at_equal_steps_iqm"] for r in table)
    assert table[0]["mean_alpha"] == "" and 0.0 <= float(table[2]["mean_alpha"]) <= 1.0
    pairs = list(csv.DictReader(open(out / "pairs.csv")))
    assert [r["flow"] for r in pairs] == ["zero+samples:2", "alpha:auto+samples:2"] and all(r["verdict"] for r in pairs)
    assert (out / "alpha-order.png").exists() and json.loads((out / "settings.json").read_text())["complete"]


def test_alpha_order_compares_the_hoppers_negated_rewards_by_difference_and_the_others_by_ratio():
    from experiments import alpha_order

    args = alpha_order.parse(["--tasks", "bounce-hard", "hopper", "--flows", "none", "zero", "--seeds", "3"])
    final = [dict(task=t, flow=f, seed=s, status="done", final_test_loss=v)
             for t, f, values in (("bounce-hard", "none", (0.4, 0.2, 0.8)), ("bounce-hard", "zero", (0.2, 0.1, 0.4)),
                                  ("hopper", "none", (-10.0, -12.0, -11.0)), ("hopper", "zero", (-13.0, -14.0, -12.0)))
             for s, v in enumerate(values)]
    bounce, hopper = alpha_order.pairs(args, final)
    assert bounce["ratio"] == pytest.approx(0.5) and bounce["difference"] is None and bounce["verdict"] == "lower"
    assert hopper["ratio"] is None and hopper["difference"] == pytest.approx(-2.0) and hopper["verdict"] == "lower"
    assert alpha_order.config(args, "hopper", "zero", 0).until_done
    assert not alpha_order.config(args, "bounce-hard", "zero", 0).until_done


def test_bias_variance_finds_the_impacts_of_a_rollout():
    from experiments.bias_variance import impacts

    # vx flips from + to − in step 2 (the wall), vy from − to + in step 4 (the floor); a − to + vx is no wall impact
    states = np.array([[0, 1, 1.0, -0.1], [0, 1, 1.0, -0.5], [0, 1, -1.0, -0.9], [0, 1, 1.0, -1.2], [0, 1, 1.0, 0.8]])
    assert impacts(states, 0.5) == {"wall": [2], "floor": [4]}


def test_bias_variance_runs_every_horizon_but_the_hoppers_powers_of_two_on_fewer_samples():
    from experiments.bias_variance import task_horizons, task_samples

    assert task_horizons("bounce-hard", 5) == [1, 2, 3, 4, 5]
    assert task_horizons("hopper", 16) == [1, 2, 4, 8, 16] and task_horizons("hopper", 12) == [1, 2, 4, 8]
    assert task_horizons("hopper", 1) == [1]
    assert task_samples("hopper", 4096) == 512 and task_samples("hopper", 64) == 64 and task_samples("swingup", 4096) == 4096


@pytest.mark.slow
def test_bias_variance_quick_writes_its_table(tmp_path):
    from experiments import bias_variance

    out = tmp_path / "b"
    bias_variance.main(["--quick", "--out", str(out)])
    rows = read(out / "bias.csv")
    assert [int(r["H"]) for r in rows] == [1, 2, 3, 4] and all(float(r["eps"]) > 0 for r in rows)
    assert read(out / "impacts.csv") == [{"task": "bounce-hard", "seed": "0", "surface": "wall", "step": "4"}]


@pytest.mark.slow
def test_bias_variance_runs_a_task_without_impacts_from_its_reset_state(tmp_path):
    from experiments import bias_variance

    out = tmp_path / "s"
    bias_variance.main(["--quick", "--tasks", "swingup", "--out", str(out)])
    rows = read(out / "bias.csv")
    assert [(r["task"], int(r["H"])) for r in rows] == [("swingup", h) for h in (1, 2, 3, 4)]
    assert all(float(r["var0"]) > 0 and float(r["var1"]) > 0 for r in rows) and read(out / "impacts.csv") == []
    assert json.loads((out / "settings.json").read_text())["complete"]


@pytest.mark.slow
def test_shac_cartpole_quick_writes_every_arm_and_their_pairs_and_reuses_the_earlier_layouts_runs(tmp_path, capsys):
    """The earlier layout's ``published`` arm ran windows of 30: its runs are ``published-w30`` now, renamed and not
    retrained, while ``published`` (windows of 32, as published) runs anew."""
    from experiments import shac_cartpole
    from gradstop.study.sweep import Run, run_sweep

    out = tmp_path / "s"
    args = shac_cartpole.parse(["--quick"])
    old = Run("arm=published,seed=0", shac_cartpole.config(args, "published-w30", 0))
    run_sweep([old], out, progress=False)
    trained = json.loads((out / "runs" / old.name / "summary.json").read_text())
    shac_cartpole.main(["--quick", "--out", str(out)])
    assert "reusing 1 finished runs" in capsys.readouterr().out
    assert json.loads((out / "runs" / "arm=published-w30,seed=0" / "summary.json").read_text()) == trained
    assert json.loads((out / "runs" / "arm=published,seed=0" / "config.json").read_text())["window"] == 32
    table = read(out / "table.csv")
    assert [r["arm"] for r in table] == ["published", "published-w30", "earlier"] and all(r["done"] == "2" for r in table)
    assert all(float(r["reward_iqm_low"]) <= float(r["reward_iqm"]) <= float(r["reward_iqm_high"]) < 0 for r in table)
    pairs = read(out / "pairs.csv")
    assert [(p["arm"], p["base"], p["seeds"]) for p in pairs] == [("published-w30", "earlier", "2"),
                                                                  ("published", "published-w30", "2")]
    assert all(p["verdict"] for p in pairs)
    curves = read(out / "curves.csv")
    assert {(r["arm"], int(r["env_steps"])) for r in curves if r["update"] == "2"} == {
        ("published", 2 * 8 * 32), ("published-w30", 2 * 8 * 30), ("earlier", 2 * 8 * 30)}
