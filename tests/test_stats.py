"""The study's statistics (gradstop.study.stats): values checked by hand, rliable's conventions, bad input, and the
cartpole study's tables against the module."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rliable")

from gradstop.study import stats  # noqa: E402

LOSSES = [0.30, 0.02, 0.11, 0.05, 1.40, 0.07, 0.09, 0.04]  # one cell: eight seeds


def test_iqm_and_median_of_a_known_table():
    # sorted: .02 .04 .05 .07 .09 .11 .30 1.40; the IQM cuts int(8/4) = 2 from each end: mean(.05, .07, .09, .11)
    s = stats.summarize(LOSSES, cell="known", reps=200)
    assert s["iqm"].value == pytest.approx(0.08) and s["median"].value == pytest.approx(0.08)
    assert s["iqm"].n == s["median"].n == 8
    assert stats.iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5) and stats.median([1.0, 2.0, 3.0, 100.0]) == 2.5
    for est in s.values():
        assert est.low <= est.value <= est.high


def test_two_seeds_give_exactly_their_range():
    # The bootstrap of two values a < b: the mean of a resample is a, (a+b)/2 or b with probabilities 1/4, 1/2, 1/4;
    # the 2.5% and 97.5% percentiles of that distribution are a and b.
    s = stats.summarize({0: 0.2, 1: 0.6}, cell="two", reps=4000)
    assert (s["iqm"].low, s["iqm"].value, s["iqm"].high) == pytest.approx((0.2, 0.4, 0.6))


def test_the_interval_is_the_percentile_bootstrap_written_out_by_hand():
    values = np.array([3.1, 0.4, 2.2, 1.7, 0.9, 5.0, 2.8, 1.1, 0.2, 4.4])
    rng = np.random.default_rng(12345)
    reps = 20000
    resamples = values[rng.integers(0, values.size, (reps, values.size))]
    cut = values.size // 4
    iqms = np.sort(resamples, axis=1)[:, cut:values.size - cut].mean(1)
    medians = np.median(resamples, axis=1)
    by_hand = {"iqm": iqms, "median": medians}
    module = stats.summarize(values, cell="by hand", reps=reps, seed=3)
    for name, dist in by_hand.items():
        # each end of the module's interval is a 2.5% / 97.5% quantile of the hand-made bootstrap distribution (the
        # median's has atoms, so compare where the distribution function crosses, with Monte Carlo slack)
        lo, hi = module[name].low, module[name].high
        assert np.mean(dist < lo) <= 0.025 + 0.006 and np.mean(dist <= lo) >= 0.025 - 0.006, name
        assert np.mean(dist < hi) <= 0.975 + 0.006 and np.mean(dist <= hi) >= 0.975 - 0.006, name
    assert module["iqm"].low == pytest.approx(np.percentile(iqms, 2.5), rel=0.05)
    assert module["iqm"].high == pytest.approx(np.percentile(iqms, 97.5), rel=0.05)


def test_estimates_are_reproducible_and_leave_numpys_generator_alone():
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    a = stats.summarize(LOSSES, cell="c", reps=300, seed=1)
    assert np.array_equal(np.random.get_state()[1], before)
    assert stats.summarize(LOSSES, cell="c", reps=300, seed=1) == a
    assert stats.summarize(LOSSES, cell="c", reps=300, seed=2)["iqm"].low != a["iqm"].low


def test_probability_below_counts_lower_losses_as_better():
    low, high = [0.01, 0.02, 0.03], [0.5, 0.6, 0.7]
    assert stats.probability_below(low, high, cell="c", reps=200).value == 1.0
    assert stats.probability_below(high, low, cell="c", reps=200).value == 0.0
    assert stats.probability_below(low, low, cell="c", reps=200).value == 0.5
    x, y = [0.1, 0.3, 0.3, 0.9], [0.2, 0.3, 0.5]
    by_hand = sum((a < b) + 0.5 * (a == b) for a in x for b in y) / (len(x) * len(y))  # ties count half
    est = stats.probability_below(x, y, cell="c", reps=500)
    assert est.value == pytest.approx(by_hand) and 0 <= est.low <= est.value <= est.high <= 1 and est.n == 3
    # the vectorised twin the bootstrap calls is rliable's metric
    from rliable import metrics

    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 4, (5, 2)).astype(float), rng.integers(0, 4, (3, 2)).astype(float)
        assert stats._probability_of_improvement(a, b) == pytest.approx(metrics.probability_of_improvement(a, b))


def test_paired_log_ratio_pairs_seeds_and_names_the_missing_ones():
    flow, base = {0: 0.01, 1: 0.04, 2: 0.02}, {0: 0.10, 1: 0.08, 2: 0.20}
    est = stats.paired_log_ratio(flow, base, cell="c", reps=1000)
    assert est.value == pytest.approx(np.mean(np.log([0.1, 0.5, 0.1]))) and est.n == 3
    assert est.high < 0 and stats.verdict(est) == "lower"
    with pytest.raises(ValueError, match=r"c: the seeds do not pair: seed\(s\) \[3\] have no base run and seed\(s\) \[2\]"):
        stats.paired_log_ratio({0: 0.1, 1: 0.2, 3: 0.3}, base, cell="c")
    with pytest.raises(ValueError, match=r"seed\(s\) \[1\] have a loss ≤ 0"):
        stats.paired_log_ratio({0: 0.1, 1: 0.0, 2: 0.3}, base, cell="c")
    floored = stats.paired_log_ratio({0: 0.1, 1: 0.0, 2: 0.3}, base, cell="c", floor=1e-6, reps=100)
    assert floored.value == pytest.approx(np.mean(np.log([1.0, 1e-6 / 0.08, 1.5])))


def test_paired_difference_pairs_seeds_and_takes_losses_of_any_sign():
    flow, base = {0: -30.0, 1: -12.0, 2: 4.0}, {0: -20.0, 1: -10.0, 2: 5.0}  # negated rewards
    est = stats.paired_difference(flow, base, cell="c", reps=1000)
    assert est.value == pytest.approx(np.mean([-10.0, -2.0, -1.0])) and est.n == 3
    # every resample of the three differences has a negative mean: the interval is below zero
    assert est.low >= -10.0 and est.high <= -1.0 and stats.verdict(est) == "lower"
    two = stats.paired_difference({0: 1.0, 1: 3.0}, {0: 0.0, 1: 0.0}, cell="c", reps=4000)
    assert (two.low, two.high) == pytest.approx((1.0, 3.0))  # two pairs: exactly their range, as for summarize
    with pytest.raises(ValueError, match=r"c: the seeds do not pair: seed\(s\) \[3\] have no base run"):
        stats.paired_difference({0: 0.1, 1: 0.2, 3: 0.3}, base, cell="c")
    with pytest.raises(ValueError, match="not finite"):
        stats.paired_difference({0: 0.1, 1: float("inf"), 2: 0.3}, base, cell="c")


def test_too_few_seeds_is_an_error_naming_the_cell_and_the_fix():
    with pytest.raises(ValueError, match=r"part=main, poles=2: 1 finished seed\(s\); an interval needs at least 2: run more seeds"):
        stats.summarize([0.1], cell="part=main, poles=2")
    with pytest.raises(ValueError, match="run more seeds"):
        stats.probability_below([0.1, 0.2], [0.3], cell="x")
    with pytest.raises(ValueError, match="not finite"):
        stats.summarize([0.1, float("nan")], cell="x")
    with pytest.raises(ValueError, match="reps must be an integer"):
        stats.summarize([0.1, 0.2], cell="x", reps=0)


def test_performance_profile_is_the_fraction_of_runs_below_each_threshold():
    table = {1: [1e-6, 1e-4, 1e-2], 2: [1e-3, 1e-1, 1.0]}
    taus = [1e-5, 1e-3, 0.5, 2.0]
    fraction, low, high = stats.performance_profile(table, taus, cell="c", reps=500)
    assert fraction.tolist() == pytest.approx([1 / 6, 2 / 6, 5 / 6, 1.0])  # strictly below τ, over all six runs
    assert np.all(low <= fraction) and np.all(fraction <= high)
    with pytest.raises(ValueError, match="same number of seeds in every pole count"):
        stats.performance_profile({1: [0.1, 0.2], 2: [0.1, 0.2, 0.3]}, taus, cell="c")


def test_a_difference_whose_interval_includes_zero_is_no_measurable_difference():
    unclear = stats.Estimate(-0.4, -1.2, 0.3, 5)
    text = stats.describe_pair("combined", "none", unclear, stats.Estimate(0.6, 0.3, 0.9, 5), where="2 poles")
    assert text.startswith("2 poles: no measurable difference between combined and none")
    assert "[-1.2, 0.3]" in text and "5 paired seeds" in text and "over 5 seeds" in text
    clear = stats.describe_pair("combined", "none", stats.Estimate(-1.0, -1.5, -0.2, 10))
    assert clear.startswith("combined ends lower than none") and "10 paired seeds" in clear and "[-1.5, -0.2]" in clear
    assert stats.verdict(stats.Estimate(0.5, 0.1, 0.9, 3)) == "higher"


# -- the cartpole study's tables against the module ------------------------------------------------------------
def _records(runs, losses):
    """Finished-run records as the sweep reads them, with given final test losses (success: 1 − loss/2)."""
    out = {}
    for r in runs:
        loss = losses[(r.config.sim_params["poles"], r.config.flow, r.config.seed)]
        out[r.name] = dict(status="done", evals=[], summary=dict(final_test_loss=loss, best_test_loss=loss,
                                                                 final_test_success=1 - loss / 2, seconds=1.0))
    return out


def test_the_cartpole_study_tables_are_the_stats_modules_numbers():
    pytest.importorskip("tyro")
    from experiments import cartpole_study as study

    args = study.parse(["--parts", "main", "--poles", "2", "3", "--flows", "none", "combined", "--observations", "raw",
                        "--seeds", "4", "--bootstrap-reps", "300"])
    runs = study.runs(args)
    rng = np.random.default_rng(0)
    losses = {(n, f, s): float(rng.uniform(0.01, 0.5)) for n in (2, 3) for f in ("none", "combined") for s in range(4)}
    losses[(3, "combined", 1)] = 0.0  # a loss that rounded to zero enters the ratio at the floor
    data = study.tables(runs, _records(runs, losses), args)
    cell = study._label("main", "published", "raw", 2, "combined")
    row = next(r for r in data["table"] if (r["poles"], r["flow"]) == (2, "combined"))
    values = {s: losses[(2, "combined", s)] for s in range(4)}
    expected = stats.summarize(values, cell=cell, reps=300, seed=0)
    assert (row["iqm"], row["iqm_low"], row["iqm_high"]) == (expected["iqm"].value, expected["iqm"].low, expected["iqm"].high)
    assert (row["median"], row["median_low"], row["median_high"]) == \
        (expected["median"].value, expected["median"].low, expected["median"].high)
    success = stats.summarize({s: 1 - v / 2 for s, v in values.items()}, cell=cell + ", success", reps=300, seed=0)
    assert row["success_iqm"] == success["iqm"].value and row["done"] == 4
    for n in (2, 3):
        pair = next(r for r in data["pairs"] if r["poles"] == n)
        ours = {s: losses[(n, "combined", s)] for s in range(4)}
        base = {s: losses[(n, "none", s)] for s in range(4)}
        cell = study._label("main", "published", "raw", n, "combined")
        ratio = stats.paired_log_ratio(ours, base, cell=cell, reps=300, seed=0, floor=study.LOSS_FLOOR)
        assert (pair["log_ratio"], pair["log_ratio_low"], pair["log_ratio_high"]) == (ratio.value, ratio.low, ratio.high)
        assert pair["ratio"] == pytest.approx(math.exp(ratio.value)) and pair["seeds"] == 4
        assert pair["verdict"] == stats.verdict(ratio) and pair["floored"] == (1 if n == 3 else 0)
        below = stats.probability_below(ours, base, cell=cell, reps=300, seed=0)
        imp = next(r for r in data["improvement"] if r["poles"] == n)
        assert (imp["p_below_none"], imp["p_below_none_low"], imp["p_below_none_high"]) == (below.value, below.low, below.high)
    profile = [r for r in data["profiles"] if r["flow"] == "none"]
    fraction, _, _ = stats.performance_profile({n: [losses[(n, "none", s)] for s in range(4)] for n in (2, 3)}, study.TAUS,
                                               cell=study._label("main", "published", "raw", flow="none"), reps=300)
    assert [r["fraction"] for r in profile] == fraction.tolist() and profile[0]["poles"] == "2-3"
    text = study.summary_text(data, args, len(runs), len(runs))
    assert text.count("paired seeds") == 2 and "4 paired seeds" in text
    # the headline table: IQM of each, the paired ratio and P(combined < none), each with its interval, for each pole count
    pair, imp = (next(r for r in data[k] if r["poles"] == 2) for k in ("pairs", "improvement"))
    none = next(r for r in data["table"] if (r["poles"], r["flow"]) == (2, "none"))
    line = next(t for t in text.splitlines() if t.startswith("| 2 | "))
    assert line == (f"| 2 | {row['iqm']:.3g} [{row['iqm_low']:.3g}, {row['iqm_high']:.3g}] (4) | {none['iqm']:.3g} "
                    f"[{none['iqm_low']:.3g}, {none['iqm_high']:.3g}] (4) | ×{pair['ratio']:.3g} [{pair['ratio_low']:.3g}, "
                    f"{pair['ratio_high']:.3g}] (4) | {imp['p_below_none']:.2f} [{imp['p_below_none_low']:.2f}, "
                    f"{imp['p_below_none_high']:.2f}] | {pair['verdict']} |")
    assert "## Does `combined` end below `none`?" in text and "## Final test loss per cell" in text


def test_the_cartpole_study_names_the_lowest_flow_and_what_tuning_changed():
    """leaders.csv: per cell the flow with the lowest IQM and each other flow's seed-paired ratio to it; tuning_effect.csv:
    each flow's tuned runs against its published-setting runs on the same seed, none for a flow tuned to the published
    setting (the same runs)."""
    pytest.importorskip("tyro")
    from experiments import cartpole_study as study

    args = study.parse(["--parts", "main", "tuned", "--poles", "2", "--flows", "none", "combined", "decay:0.9",
                        "--observations", "raw", "--seeds", "4", "--bootstrap-reps", "300"])
    chosen = {"none": dict(flow="none", lr=3e-3), "combined": dict(flow="combined", lr=1e-3),
              "decay:0.9": dict(flow="decay:0.95", lr=1e-3)}
    runs = study.runs(args, chosen=chosen)
    rng = np.random.default_rng(1)
    level = {"none": 0.2, "combined": 0.05, "decay:0.9": 0.01}  # decay ends lowest in both parts, by far
    losses = {r.name: level[study.describe(r)["flow_label"]] * float(rng.uniform(0.5, 2.0)) for r in runs}
    for r in runs:  # combined's tuned setting is the published one: its tuned runs are the main runs
        d = study.describe(r)
        if d["part"] == "tuned" and d["flow_label"] == "combined":
            losses[r.name] = losses[study.run_name("main", "published", "raw", 2, "combined", d["seed"])]
    records = {name: dict(status="done", evals=[], summary=dict(final_test_loss=v, best_test_loss=v,
                                                                final_test_success=1 - v / 2, seconds=1.0))
               for name, v in losses.items()}
    data = study.tables(runs, records, args)

    def of(part, flow):
        return {s: losses[study.run_name(part, part if part == "tuned" else "published", "raw", 2, flow, s)] for s in range(4)}

    for part in ("main", "tuned"):
        rows = [r for r in data["leaders"] if r["part"] == part]
        assert {r["lowest"] for r in rows} == {"decay:0.9"} and {r["flow"] for r in rows} == {"none", "combined"}
        for r in rows:
            cell = study._label(part, r["setting"], "raw", 2, r["flow"]) + ", against decay:0.9"
            ratio = stats.paired_log_ratio(of(part, r["flow"]), of(part, "decay:0.9"), cell=cell, reps=300,
                                           floor=study.LOSS_FLOOR)
            assert (r["log_ratio"], r["log_ratio_low"], r["log_ratio_high"]) == (ratio.value, ratio.low, ratio.high)
            assert r["verdict"] == "higher" and r["seeds"] == 4
    effect = {r["flow"]: r for r in data["tuning_effect"]}
    assert effect["combined"]["same_runs"] and effect["combined"]["ratio"] is None
    for flow, tuned_flow in (("none", "none"), ("decay:0.9", "decay:0.95")):
        cell = study._label("tuned", "tuned", "raw", 2, flow) + ", tuned against published"
        ratio = stats.paired_log_ratio(of("tuned", flow), of("main", flow), cell=cell, reps=300, floor=study.LOSS_FLOOR)
        assert effect[flow]["log_ratio"] == ratio.value and effect[flow]["tuned_flow"] == tuned_flow
        assert not effect[flow]["same_runs"] and effect[flow]["seeds"] == 4
    text = study.summary_text(data, args, len(runs), len(runs))
    assert "## Which flow ends lowest?" in text and "## What tuning changed" in text
    assert "| `combined` | `combined`, lr 0.001 | the published setting |" in text
    line = next(t for t in text.splitlines() if t.startswith("| `decay:0.9` | `decay:0.95`, lr 0.001 | "))
    e = effect["decay:0.9"]
    assert f"×{e['ratio']:.3g} [{e['ratio_low']:.3g}, {e['ratio_high']:.3g}] (4)" in line


def test_the_cartpole_study_says_which_flows_a_partial_sweep_could_not_rank():
    """A flow with fewer than 2 finished seeds in a cell is not ranked against the lowest: leaders.csv keeps a row for
    it without a ratio, and summary.md names it with its seed count instead of leaving it out; a pole count with fewer
    than two rankable flows says it is not ranked."""
    pytest.importorskip("tyro")
    from experiments import cartpole_study as study

    args = study.parse(["--parts", "main", "--poles", "2", "3", "--flows", "none", "input", "combined", "decay:0.9",
                        "--observations", "raw", "--seeds", "4", "--bootstrap-reps", "300"])
    runs = study.runs(args)
    level = {"none": 0.2, "combined": 0.05, "decay:0.9": 0.01}
    finished = {"none": 4, "decay:0.9": 2, "combined": 1, "input": 0}  # seeds 0 … n-1 finished, at 2 poles only
    records = {}
    for r in runs:
        d = study.describe(r)
        if d["poles"] == 2 and d["seed"] < finished[d["flow_label"]]:
            v = level[d["flow_label"]] * (1 + d["seed"] / 10)
            records[r.name] = dict(status="done", evals=[], summary=dict(final_test_loss=v, best_test_loss=v,
                                                                         final_test_success=0.5, seconds=1.0))
    data = study.tables(runs, records, args)
    rows = {r["flow"]: r for r in data["leaders"]}
    assert set(rows) == {"none", "combined", "input"} and {r["lowest"] for r in rows.values()} == {"decay:0.9"}
    assert rows["none"]["verdict"] == "higher" and rows["none"]["seeds"] == 2
    assert (rows["combined"]["seeds"], rows["input"]["seeds"]) == (1, 0)
    assert all(rows[f]["flow_iqm"] is None and rows[f]["ratio"] is None and rows[f]["verdict"] is None
               for f in ("combined", "input"))
    text = study.summary_text(data, args, len(runs), len(records))
    line = next(t for t in text.splitlines() if t.startswith("| 2 | `decay:0.9` "))
    assert "not ranked, fewer than 2 seeds: `input` (0), `combined` (1)" in line
    assert "| 3 | – | not ranked: fewer than two flows have 2 finished seeds | – |" in text.splitlines()


def test_iqm_curve_is_the_summary_of_each_evaluation_on_its_own():
    values = np.random.default_rng(3).lognormal(size=(6, 4))
    value, low, high = stats.iqm_curve(values, cell="c")
    for i in range(4):
        e = stats.summarize(values[:, i], cell=f"c evaluation {i}")["iqm"]
        assert (value[i], low[i], high[i]) == (e.value, e.low, e.high)
    assert np.all(low <= value) and np.all(value <= high)


def test_aligned_by_seed_cuts_every_seed_to_the_evaluations_all_reached():
    from gradstop.study.results import aligned_by_seed

    rows = [dict(seed=1, update=8), dict(seed=0, update=0), dict(seed=1, update=0), dict(seed=0, update=8),
            dict(seed=0, update=16)]
    assert aligned_by_seed(rows) == [[dict(seed=1, update=0), dict(seed=1, update=8)],
                                     [dict(seed=0, update=0), dict(seed=0, update=8)]]
    assert aligned_by_seed([]) == []
