"""The multi-pole cartpole study: final test loss per gradient flow for 1–4 poles, in the published setting.

    python -m experiments.cartpole_study [--quick] [--parts main glorot clipping shuffled tuning tuned] [--seeds 10]
                                         [--variant-seeds 5] [--poles 1 2 3 4] [--observations raw sincos]
                                         [--out DIR] [--ray local|auto|HOST:PORT] [--plot-only]

The setting in which the combined update was proposed (Schnell & Thuerey, "Stabilizing
Backpropagation Through Time to Learn Complex Physics", ICLR 2024), as their published code runs it
(CartPole/Runs/01/01.sh and CartPole/Simulations/01/*.py; docs/results.md has the line-by-line
fidelity table), every detail an option below:

- dynamics ``make("cartpole", preset="literature", poles=N)``: g 9.8, m 0.1, M 1.1, l 0.5, F = a,
  T = 1 s in H = 100 steps of semi-implicit Euler; loss 1 − mean_i cos θ_i at the final step;
- the published initial states (the preset's ``init="published"``): x, ẋ, θ̇_i ∈ U(−1, 1),
  θ_i = π + U(−1, 1)·π/6; 256 training and 256 test states drawn once per seed; batches of 8 in a
  fixed order (32 updates an epoch); 1000 epochs;
- MLP 2×100 tanh with biases and a linear output, Keras' default initialisation (``weight_init="glorot"``:
  glorot-uniform weights, zero biases) **with the output layer's kernel zeroed** (``zero_last=True``):
  the run script passes ``--zero False``, which its ``type=bool`` option reads as True (``bool("False")``),
  so every published run starts from the zero policy a = 0;
- Adam, lr 1e-3, ε 1e-7 (Keras'; its ε is added to the un-corrected √v, ours to the corrected one);
  clipping none, by value (each component to ±1) or by global norm (to 1);
- the policy observes the raw state object by object, (x, ẋ, θ_1, θ̇_1, …) as the published code
  feeds it (``observation="raw"``), or gradstop's (x, sin θ, cos θ, ẋ, θ̇) (``"sincos"``);
- the published code ran one seed (42) per setting; we run ``--seeds`` seeds of the main part and
  ``--variant-seeds`` of each variant, each seed its own initial weights, training and test states (all
  flows of one seed share them, as all flows of the published grid shared seed 42's).

Flows: the published none (F), input (P), combined (C), all (S), and ours: directional,
decay:0.9, truncate:10. Parts (a grid each; ``--parts`` picks):

    main        the published setting: every flow × observation (raw, sincos) × poles, no clipping (the
                published script also runs every cell clipped by value and by norm: the clipping part)
    glorot      the same grid with the output layer left at its Glorot draw (not zeroed)
    clipping    the published flows × clip by value / by norm, raw observation
    shuffled    the published flows, training set reshuffled every epoch, raw observation
    tuning      per flow, every lr of --lrs (and γ of --gammas for decay, K of --ks for truncate) at
                --tune-poles on --tune-seeds (disjoint from the reporting seeds), each run with a
                validation set; per flow the setting with the lowest mean log final validation loss
                is chosen (tuning.csv, tuned.csv) — the test set is never looked at
    tuned       the main part's grid on the reporting seeds, each flow at its tuned setting (runs the
                tuning part first; its finished runs are reused); a flow whose tuned setting and lr are the
                published ones has the main part's configs, so the main part's runs serve it (not trained twice)

Statistics (``gradstop.study.stats``, rliable): per cell (part, observation, poles, flow) the IQM and
median of the final test loss and of the success (share of poles within 12° of upright at the end),
each with a 95% percentile-bootstrap interval over seeds; per flow against ``none`` of the same cell the
seed-paired log-ratio log(loss_flow / loss_none) with its interval (resampling seeds) and the probability
that a run of the flow ends below a run of ``none`` (rliable's probability of improvement on −loss);
performance profiles over the pole counts (the fraction of runs whose final loss is below τ).
``--bootstrap-reps`` and ``--bootstrap-seed`` fix the resampling, so the tables are reproducible.

Every run is a ``gradstop.trainers`` run in ``OUT/runs/<name>`` of a sweep (``gradstop.study.sweep``):
rerun the command to resume (finished runs are skipped), ``--ray`` to spread the runs over Ray
workers, ``--plot-only`` to draw from the runs finished so far; a folder written by the earlier layout of
this study (whose ``zero-last`` part holds main-part runs) has its finished runs renamed to the names
used now wherever their configs are identical, so they are reused. Writes ``final.csv`` (a row per run),
``table.csv`` (IQM, median and intervals per cell), ``pairs.csv`` (the paired log-ratio to ``none``),
``improvement.csv`` (the probability of ending below ``none``), ``profiles.csv``, ``curves.csv`` (test loss
per evaluation), ``summary.md`` (every comparison with ``none`` in words, with its interval and seed count),
``cartpole-study.png`` (IQM and interval per flow and pole count, a dot per seed),
``cartpole-study-pairs.png``, ``cartpole-study-profiles.png``, ``cartpole-study-curves.png`` and
``settings.json``. ``--quick`` (1 pole, 2 flows, 2 seeds, 2 epochs on 16 states) runs in well under a minute.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import tyro

from gradstop.study import stats
from gradstop.study.figures import (SweepOptions, adopt_runs, finish_sweep_figure, read_settings, run_script,
                                    sweep_runs, write_tables)
from gradstop.study.results import flow_color, save_figure
from gradstop.study.sweep import Run
from gradstop.trainers.config import TrainConfig

SCRIPT = "cartpole_study"
PUBLISHED_FLOWS = ("none", "input", "combined", "all")
PARTS = ("main", "glorot", "clipping", "shuffled", "tuning", "tuned")
DEFAULT_PARTS = ("main", "tuning", "tuned", "glorot", "clipping", "shuffled")  # the order they run in
RETIRED_PARTS = {"zero-last": "the published code zeroes the output layer in every run, so those runs are the main part "
                              "now (--parts main); the Glorot output layer is --parts glorot"}
SETTING = {"main": "published", "glorot": "glorot", "shuffled": "shuffled", "tuning": "tuning",
           "tuned": "tuned"}  # clipping: value or norm
LOSS_FLOOR = 2.0**-24  # float32 resolution of 1 − mean cos θ near 0: a final loss of 0 means "below this"
TAUS = np.logspace(-7, math.log10(2.0), 50)  # performance-profile thresholds on the final test loss (0 … 2)


@dataclasses.dataclass
class Args(SweepOptions):
    parts: tuple[str, ...] = DEFAULT_PARTS
    """which grids to run: main, glorot, clipping, shuffled, tuning, tuned (see the module docstring)"""
    poles: tuple[int, ...] = (1, 2, 3, 4)
    """pole counts N"""
    flows: tuple[str, ...] = ("none", "input", "combined", "all", "directional", "decay:0.9", "truncate:10")
    """flows of the main and glorot parts (clipping and shuffled run the published ones among them)"""
    observations: tuple[str, ...] = ("raw", "sincos")
    """observations of the main and glorot parts (clipping and shuffled use raw, the published one)"""
    seeds: int = 10
    """seeds of the main part (0, 1, …): initial weights, training and test states"""
    variant_seeds: int = 5
    """seeds of each variant part (glorot, clipping, shuffled)"""
    epochs: int = 1000
    """epochs of 256 // 8 = 32 updates"""
    train_size: int = 256
    """training initial states, drawn once"""
    test_size: int = 256
    """test initial states, drawn once"""
    batch: int = 8
    """initial states per update"""
    horizon: int = 100
    """steps per rollout (T = 1 s)"""
    hidden: tuple[int, ...] = (100, 100)
    """hidden widths of the tanh MLP"""
    weight_init: str = "glorot"
    """initial weights: glorot (Keras' default, as published) or torch"""
    lr: float = 1e-3
    """Adam's learning rate"""
    adam_eps: float = 1e-7
    """Adam's ε (Keras' default)"""
    tune_seeds: tuple[int, ...] = (100, 101, 102)
    """seeds of the tuning part (disjoint from the reporting seeds 0 … seeds−1)"""
    tune_poles: tuple[int, ...] = (2, 4)
    """pole counts the tuning part runs at"""
    tune_observations: tuple[str, ...] = ("raw",)
    """observations the tuning part runs with (the tuned settings serve both)"""
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)
    """learning rates the tuning part tries for every flow (1e-2 was added when every flow but all chose 3e-3, the
    first grid's edge)"""
    gammas: tuple[float, ...] = (0.8, 0.9, 0.95, 0.98)
    """γ the tuning part tries for decay"""
    ks: tuple[int, ...] = (10, 25, 50)
    """K the tuning part tries for truncate"""
    clip: float = 1.0
    """the clipping part's bound (the published cnum): ±clip per component, or global norm clip"""
    impl: str = "fused"
    """rollout implementation (the same gradients; fused is 1.4–2.3× faster here)"""
    eval_every: int = 10
    """evaluate the test loss every this many epochs (and after the last)"""
    bootstrap_reps: int = stats.REPS
    """bootstrap resamples per interval"""
    bootstrap_seed: int = 0
    """seed of the bootstrap resampling (each estimate draws its own stream from it)"""
    quick: bool = False
    """a smoke run: 1 pole, flows none and combined, 2 seeds, 2 epochs on 16 states, lrs 1e-3 and 3e-3 unless --lrs is
    given, 200 resamples (tests); the main and clipping parts unless --parts names tuning or tuned"""
    out: str = "results/cartpole-study"
    """the study's folder (resumed if it holds this study)"""


def parse(argv=None) -> Args:
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    retired = [p for p in args.parts if p in RETIRED_PARTS]
    if retired:
        raise ValueError(f"part {retired[0]!r} is retired: {RETIRED_PARTS[retired[0]]}")
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose from {PARTS}")
    if args.quick:
        quick_parts = ("main", "clipping") if args.parts == DEFAULT_PARTS else ("main", "clipping", "tuning", "tuned")
        args = dataclasses.replace(args, parts=tuple(p for p in args.parts if p in quick_parts),
                                   poles=(1,), flows=("none", "combined"), observations=("raw",), seeds=2, variant_seeds=2,
                                   epochs=2, train_size=16, test_size=16, eval_every=1, tune_poles=(1,), tune_seeds=(100, 101),
                                   lrs=(1e-3, 3e-3) if args.lrs == Args.lrs else args.lrs,  # --lrs given: kept
                                   bootstrap_reps=min(args.bootstrap_reps, 200))
    overlap = sorted(set(args.tune_seeds) & set(range(max(args.seeds, args.variant_seeds))))
    if overlap and {"tuning", "tuned"} & set(args.parts):
        raise ValueError(f"the tuning seeds {list(args.tune_seeds)} overlap the reporting seeds 0…"
                         f"{max(args.seeds, args.variant_seeds) - 1} in {overlap}: a setting chosen on the seeds it is "
                         "reported on is tuned to them; pick --tune-seeds outside them (e.g. 100 101 102)")
    for name in ("seeds", "variant_seeds", "bootstrap_reps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    return args


# -- the grid ---------------------------------------------------------------------------------------
def config(args: Args, poles: int, flow: str, seed: int, observation: str = "raw", **changes) -> TrainConfig:
    """One run of the study: the published setting as it executes (output layer zeroed), then ``changes``
    (zero_last, clip_value, clip_norm, shuffle)."""
    base = dict(sim="cartpole", preset="literature", sim_params={"poles": poles, "observation": observation},
                horizon=args.horizon, flow=flow, impl=args.impl, data="fixed", train_size=args.train_size,
                test_size=args.test_size, batch=args.batch, shuffle=False, epochs=args.epochs, eval_every=args.eval_every,
                hidden=args.hidden, activation="tanh", zero_last=True, weight_init=args.weight_init, optimizer="adam",
                lr=args.lr, adam_eps=args.adam_eps, seed=seed, dtype="float32", checkpoint_every=50)
    return TrainConfig(**{**base, **changes})


def flow_candidates(args: Args, flow: str) -> list[str]:
    """The settings of ``flow`` the tuning part tries besides the learning rate: decay's γ, truncate's K."""
    family = flow.split(":")[0]
    if family == "decay":
        return [f"decay:{g:g}" for g in args.gammas]
    if family == "truncate":
        return [f"truncate:{k}" for k in args.ks]
    return [flow]


def tuning_runs(args: Args) -> list[Run]:
    """The tuning part: every flow's candidates × learning rates × tuning poles and observations × tuning seeds, with
    a validation set (the choice never looks at the test set)."""
    out = []
    for seed in args.tune_seeds:
        for obs in args.tune_observations:
            for poles in args.tune_poles:
                for flow in args.flows:
                    for candidate in flow_candidates(args, flow):
                        for lr in args.lrs:
                            name = (f"part=tuning,obs={obs},poles={poles},flow={flow.replace(':', '_')},"
                                    f"candidate={candidate.replace(':', '_')},lr={lr:g},seed={seed}")
                            out.append(Run(name, config(args, poles, candidate, seed, obs, lr=lr, validation=True)))
    return out


def choose_tuned(args: Args, runs: list[Run], records: dict) -> dict:
    """Per flow, the (flow setting, lr) with the lowest mean log final validation loss over the tuning runs (poles,
    observations and seeds pooled); {flow: {"flow", "lr", "score", "runs"}} and one row per candidate. A flow whose
    tuning runs are not all finished is an error naming it and the fix."""
    table, chosen = [], {}
    for flow in args.flows:
        mine = [r for r in runs if describe(r)["flow_label"] == flow]
        done = [r for r in mine if r.name in records and (records[r.name]["summary"] or {}).get("final_val_loss") is not None]
        if len(done) < len(mine):
            raise ValueError(f"the tuned setting of flow {flow} is missing: {len(done)} of its {len(mine)} tuning runs "
                             "have finished; run --parts tuning first (it resumes), then --parts tuned")
        best = None
        for candidate in flow_candidates(args, flow):
            for lr in args.lrs:
                vals = [records[r.name]["summary"]["final_val_loss"] for r in done
                        if r.config.flow == candidate and r.config.lr == lr]
                score = float(np.mean(np.log(np.maximum(vals, LOSS_FLOOR))))
                table.append(dict(flow=flow, candidate=candidate, lr=lr, runs=len(vals), mean_log_val_loss=score,
                                  geometric_mean_val_loss=math.exp(score)))
                if best is None or score < best["score"]:
                    best = dict(flow=candidate, lr=lr, score=score, runs=len(vals))
        chosen[flow] = dict(best, edge=grid_edges(args, best["flow"], best["lr"]))
    return {"chosen": chosen, "table": table}


def grid_edges(args: Args, flow: str, lr: float) -> list[str]:
    """Which of a tuned setting's values lie on the edge of the grid tried (the best value may lie beyond it):
    e.g. ["lr 0.01, the highest tried"]. (Beyond the largest γ and K lies ``none``: decay:1 and truncate:horizon.)"""
    out = []
    if len(args.lrs) > 1 and lr in (min(args.lrs), max(args.lrs)):
        out.append(f"lr {lr:g}, the {'lowest' if lr == min(args.lrs) else 'highest'} tried")
    family, _, value = flow.partition(":")
    values = {"decay": args.gammas, "truncate": args.ks}.get(family)
    if values and len(values) > 1:
        v = float(value)
        if v in (min(values), max(values)):
            name = "γ" if family == "decay" else "K"
            out.append(f"{name} {value}, the {'lowest' if v == min(values) else 'highest'} tried")
    return out


def tuned_runs(args: Args, chosen: dict) -> list[Run]:
    """The tuned part: the main part's grid on the reporting seeds, each flow at its tuned setting and lr."""
    out = []
    for seed in range(args.seeds):
        for obs in args.observations:
            for poles in args.poles:
                for flow in args.flows:
                    c = chosen[flow]
                    out.append(Run(run_name("tuned", "tuned", obs, poles, flow, seed),
                                   config(args, poles, c["flow"], seed, obs, lr=c["lr"])))
    return out


def shared_with_main(args: Args, wanted: list[Run]) -> tuple[list[Run], dict]:
    """The runs to train, each config once: a tuned-part run whose flow kept its published setting and lr has the
    config of the main-part run of its cell and seed, so that run serves both parts. Returns (the runs to train, in
    order, without repeats; {tuned run name: main run name})."""
    main = {json.dumps(r.config.identity(), sort_keys=True, default=str): r for r in runs(args, ["main"])}
    aliases, out, seen = {}, [], set()
    for r in wanted:
        twin = main.get(json.dumps(r.config.identity(), sort_keys=True, default=str)) if describe(r)["part"] == "tuned" else None
        if twin is not None:
            aliases[r.name] = twin.name
            r = twin
        if r.name not in seen:
            seen.add(r.name)
            out.append(r)
    return out, aliases


def run_name(part: str, setting: str, obs: str, poles: int, flow: str, seed: int) -> str:
    """``part=…[,clip=…],obs=…,poles=…,flow=…,seed=…`` (the earlier layout's names all hold ``setting=``, so the two
    never collide)."""
    clip = f"clip={setting}," if part == "clipping" else ""
    return f"part={part},{clip}obs={obs},poles={poles},flow={flow.replace(':', '_')},seed={seed}"


def runs(args: Args, parts=None, chosen: dict | None = None) -> list[Run]:
    """Every run of ``parts`` (default: the chosen ones) in their order, and within a part seed 0 of every cell first,
    then seed 1, …; the tuned part only with ``chosen`` (:func:`choose_tuned`'s choice)."""
    parts = args.parts if parts is None else parts
    published = [f for f in args.flows if f in PUBLISHED_FLOWS]
    variant = args.variant_seeds
    grids = {  # part -> [(setting, observations, flows, seeds, changes)]
        "main": [("published", args.observations, args.flows, args.seeds, {})],
        "glorot": [("glorot", args.observations, args.flows, variant, dict(zero_last=False))],
        "clipping": [("value", ("raw",), published, variant, dict(clip_value=args.clip)),
                     ("norm", ("raw",), published, variant, dict(clip_norm=args.clip))],
        "shuffled": [("shuffled", ("raw",), published, variant, dict(shuffle=True))],
    }
    out = []
    for part in parts:  # seed-major within a part: a sweep stopped part-way leaves every cell with the same seeds
        if part == "tuning":
            out += tuning_runs(args)
            continue
        if part == "tuned":
            out += tuned_runs(args, chosen) if chosen is not None else []
            continue
        for seed in range(max(g[3] for g in grids[part])):
            for setting, observations, flows, seeds, changes in grids[part]:
                if seed >= seeds:
                    continue
                for obs in observations:
                    for poles in args.poles:
                        for flow in flows:
                            out.append(Run(run_name(part, setting, obs, poles, flow, seed),
                                           config(args, poles, flow, seed, obs, **changes)))
    return out


def describe(run: Run) -> dict:
    """The grid coordinates of a run, read back from its name: part, setting, obs, poles, seed, and flow_label (the
    flow as the grid names it: in the tuned part the flow whose tuned setting the run uses)."""
    d = dict(kv.split("=", 1) for kv in run.name.split(","))
    return dict(part=d["part"], setting=d.get("clip", SETTING.get(d["part"])), obs=d["obs"], poles=int(d["poles"]),
                seed=int(d["seed"]), flow_label=d["flow"].replace("_", ":"))


# -- the tables ------------------------------------------------------------------------------------
PANELS = [("main", "published", "raw", "published setting, raw observation"),
          ("main", "published", "sincos", "published setting, sin/cos observation"),
          ("glorot", "glorot", "raw", "output layer not zeroed (Glorot), raw"),
          ("glorot", "glorot", "sincos", "output layer not zeroed (Glorot), sin/cos"),
          ("clipping", "value", "raw", "raw, clip by value ±1"), ("clipping", "norm", "raw", "raw, clip by global norm 1"),
          ("shuffled", "shuffled", "raw", "raw, reshuffled every epoch"),
          ("tuned", "tuned", "raw", "each flow at its tuned lr (γ, K), raw"),
          ("tuned", "tuned", "sincos", "each flow at its tuned lr (γ, K), sin/cos")]
TITLES = {p[:3]: p[3] for p in PANELS}


def _label(part, setting, obs, poles=None, flow=None) -> str:
    text = f"part={part}, setting={setting}, obs={obs}"
    return text + (f", poles={poles}" if poles is not None else "") + (f", flow={flow}" if flow is not None else "")


def _finished(rows, key="final_test_loss") -> dict:
    """seed -> value of the finished runs among ``rows`` with a finite ``key``."""
    return {r["seed"]: float(r[key]) for r in rows
            if r["status"] == "done" and r[key] is not None and math.isfinite(float(r[key]))}


def _estimate_columns(prefix: str, est) -> dict:
    if est is None:
        return {prefix: None, f"{prefix}_low": None, f"{prefix}_high": None}
    return {prefix: est.value, f"{prefix}_low": est.low, f"{prefix}_high": est.high}


def tables(all_runs: list[Run], records: dict, args: Args) -> dict:
    """final (a row per run), table (per cell), pairs (paired log-ratio to none), improvement (P below none),
    profiles (per panel and flow, over the pole counts) and curves (per evaluation), as lists of dicts."""
    reps, seed = args.bootstrap_reps, args.bootstrap_seed
    final, curves = [], []
    for r in all_runs:
        d, rec = describe(r), records.get(r.name)
        if d["part"] == "tuning":
            continue  # its runs choose the tuned part's settings (tuning.csv), they are not reported
        s = (rec or {}).get("summary") or {}
        status = rec["status"] if rec else "pending"
        final.append(dict(part=d["part"], setting=d["setting"], obs=d["obs"], poles=d["poles"], flow=d["flow_label"],
                          flow_run=r.config.flow, lr=r.config.lr, seed=d["seed"], status=status, final_test_loss=s.get("final_test_loss"),
                          best_test_loss_selected_on_test=s.get("best_test_loss"), final_test_success=s.get("final_test_success"),
                          train_seconds=s.get("seconds")))
        for e in (rec or {}).get("evals", []):
            curves.append(dict(part=d["part"], setting=d["setting"], obs=d["obs"], poles=d["poles"], flow=d["flow_label"],
                               seed=d["seed"], epoch=e["epoch"], test_loss=e["test_loss"], test_success=e["test_success"]))
    flow_order = {f: i for i, f in enumerate(args.flows)}
    final.sort(key=lambda r: (PARTS.index(r["part"]), str(r["setting"]), r["obs"], r["poles"], flow_order.get(r["flow"], 99),
                              r["seed"]))
    groups: dict = {}
    for row in final:
        groups.setdefault((row["part"], row["setting"], row["obs"], row["poles"], row["flow"]), []).append(row)

    table = []
    for (part, setting, obs, poles, flow), rows in groups.items():
        loss, success = _finished(rows), _finished(rows, "final_test_success")
        cell = _label(part, setting, obs, poles, flow)
        est = stats.summarize(loss, cell=cell, reps=reps, seed=seed) if len(loss) >= stats.MIN_SEEDS else {}
        good = stats.summarize(success, cell=cell + ", success", reps=reps, seed=seed) \
            if len(success) >= stats.MIN_SEEDS else {}
        values = np.asarray(list(loss.values()))
        table.append(dict(part=part, setting=setting, obs=obs, poles=poles, flow=flow, runs=len(rows), done=len(loss),
                          nonfinite=sum(r["status"] == "nonfinite" for r in rows),
                          **_estimate_columns("iqm", est.get("iqm")), **_estimate_columns("median", est.get("median")),
                          **_estimate_columns("success_iqm", good.get("iqm")),
                          **_estimate_columns("success_median", good.get("median")),
                          mean=float(values.mean()) if values.size else None, std=float(values.std()) if values.size else None,
                          min=float(values.min()) if values.size else None, max=float(values.max()) if values.size else None))

    pairs, improvement = [], []
    for (part, setting, obs, poles, flow), rows in groups.items():
        if flow == "none" or (part, setting, obs, poles, "none") not in groups:
            continue
        cell = _label(part, setting, obs, poles, flow)
        ours, base = _finished(rows), _finished(groups[(part, setting, obs, poles, "none")])
        common = sorted(set(ours) & set(base))
        ratio, _ = _paired_ratio(ours, base, cell, reps, seed)
        pairs.append(dict(part=part, setting=setting, obs=obs, poles=poles, flow=flow, seeds=len(common),
                          lower_than_none=sum(ours[s] < base[s] for s in common),
                          floored=sum(v < LOSS_FLOOR for s in common for v in (ours[s], base[s])),
                          **_ratio_columns(ratio)))
        enough = len(ours) >= stats.MIN_SEEDS and len(base) >= stats.MIN_SEEDS
        below = stats.probability_below(ours, base, cell=cell, reps=reps, seed=seed) if enough else None
        improvement.append(dict(part=part, setting=setting, obs=obs, poles=poles, flow=flow, seeds=len(ours),
                                none_seeds=len(base), **_estimate_columns("p_below_none", below)))

    leaders = _leaders(groups, table, reps, seed)
    tuning_effect = _tuning_effect(groups, args, reps, seed)

    profiles = []
    panels: dict = {}
    for (part, setting, obs, poles, flow), rows in groups.items():
        panels.setdefault((part, setting, obs, flow), {})[poles] = _finished(rows)
    for (part, setting, obs, flow), by_poles in panels.items():
        usable = {n: v for n, v in sorted(by_poles.items()) if len(v) >= stats.MIN_SEEDS}
        common = sorted(set.intersection(*(set(v) for v in usable.values()))) if usable else []
        if len(common) < stats.MIN_SEEDS:
            continue
        fraction, low, high = stats.performance_profile({n: [v[s] for s in common] for n, v in usable.items()}, TAUS,
                                                        cell=_label(part, setting, obs, flow=flow), reps=reps, seed=seed)
        for tau, f, lo, hi in zip(TAUS, fraction, low, high):
            profiles.append(dict(part=part, setting=setting, obs=obs, flow=flow, poles="-".join(map(str, usable)),
                                 seeds=len(common), tau=float(tau), fraction=float(f), low=float(lo), high=float(hi)))
    return dict(final=final, table=table, pairs=pairs, improvement=improvement, leaders=leaders,
                tuning_effect=tuning_effect, profiles=profiles, curves=curves)


def _paired_ratio(ours: dict, base: dict, cell: str, reps: int, seed: int):
    """(the seed-paired log-ratio of ``ours`` to ``base`` on the seeds both have, or None below ``stats.MIN_SEEDS``
    of them; how many they share)."""
    common = sorted(set(ours) & set(base))
    if len(common) < stats.MIN_SEEDS:
        return None, len(common)
    return stats.paired_log_ratio({s: ours[s] for s in common}, {s: base[s] for s in common}, cell=cell, reps=reps,
                                  seed=seed, floor=LOSS_FLOOR), len(common)


def _ratio_columns(ratio) -> dict:
    """A paired log-ratio's columns: the log-ratio and the ratio, each with its interval, and the verdict."""
    return {**_estimate_columns("log_ratio", ratio), "ratio": math.exp(ratio.value) if ratio else None,
            "ratio_low": math.exp(ratio.low) if ratio else None, "ratio_high": math.exp(ratio.high) if ratio else None,
            "verdict": stats.verdict(ratio, "lower", "higher") if ratio else None}


def _leaders(groups: dict, table: list, reps: int, seed: int) -> list:
    """Which flow ends lowest: per panel and pole count, the flow with the lowest IQM of the final test loss (of those
    with ≥ 2 finished seeds), and every other flow against it, the seed-paired log-ratio on the seeds both have.
    A flow whose ratio's interval includes 1 shows no measurable difference from the lowest. A flow with fewer than
    2 finished seeds has a row without a ratio (``flow_iqm`` empty, ``seeds`` its finished runs): it was not ranked.
    A cell with fewer than two such flows has no rows."""
    iqm = {(r["part"], r["setting"], r["obs"], r["poles"], r["flow"]): r["iqm"] for r in table}
    cells: dict = {}
    for key, rows in groups.items():
        cells.setdefault(key[:4], {})[key[4]] = _finished(rows)
    out = []
    for (part, setting, obs, poles), by_flow in cells.items():
        ranked = sorted((f for f in by_flow if iqm.get((part, setting, obs, poles, f)) is not None),
                        key=lambda f: iqm[(part, setting, obs, poles, f)])
        if len(ranked) < 2:
            continue  # nothing to rank against: leaders_text says so
        best = ranked[0]
        head = dict(part=part, setting=setting, obs=obs, poles=poles, lowest=best,
                    lowest_iqm=iqm[(part, setting, obs, poles, best)], lowest_seeds=len(by_flow[best]))
        for flow in (f for f in by_flow if f not in ranked):
            out.append(dict(head, flow=flow, flow_iqm=None, seeds=len(by_flow[flow]), **_ratio_columns(None)))
        for flow in ranked[1:]:
            ratio, seeds = _paired_ratio(by_flow[flow], by_flow[best], _label(part, setting, obs, poles, flow)
                                         + f", against {best}", reps, seed)
            out.append(dict(head, flow=flow, flow_iqm=iqm[(part, setting, obs, poles, flow)], seeds=seeds,
                            **_ratio_columns(ratio)))
    return out


def _tuning_effect(groups: dict, args: Args, reps: int, seed: int) -> list:
    """What tuning changed: per observation, pole count and flow, the tuned part's final test loss against the main
    part's (the published lr and setting) on the same seed. A flow whose tuned setting is the published one shares
    the main part's runs (``same_runs``): its ratio is 1 by construction."""
    out = []
    for (part, setting, obs, poles, flow), rows in groups.items():
        published = groups.get(("main", "published", obs, poles, flow))
        if part != "tuned" or published is None:
            continue
        same = rows[0]["flow_run"] == flow and rows[0]["lr"] == args.lr
        tuned, base = _finished(rows), _finished(published)
        ratio, seeds = (None, len(set(tuned) & set(base))) if same else \
            _paired_ratio(tuned, base, _label(part, setting, obs, poles, flow) + ", tuned against published", reps, seed)
        out.append(dict(obs=obs, poles=poles, flow=flow, tuned_flow=rows[0]["flow_run"], tuned_lr=rows[0]["lr"],
                        same_runs=same, seeds=seeds, **_ratio_columns(ratio)))
    return out


def summary_text(out: dict, args: Args, finished: int, total: int) -> str:
    """summary.md: every comparison with ``none`` in words, each with its interval and seed count."""
    level = f"{round(100 * stats.CONFIDENCE)}%"
    lines = ["# The multi-pole cartpole study: each flow against `none`", "",
             f"Written by `experiments/cartpole_study.py` from {finished} of {total} runs finished. Each comparison is "
             "the seed-paired log-ratio of final test losses, log(loss flow / loss none) on the same seed (same initial "
             f"weights and data), its mean over seeds with a {level} percentile-bootstrap interval over seeds "
             f"({args.bootstrap_reps} resamples, seed {args.bootstrap_seed}), and P(a run of the flow ends below a run of "
             "none) (rliable's probability of improvement) with its interval. A log-ratio whose interval includes 0 is "
             f"written \"{stats.NO_DIFFERENCE}\". Final losses below 2⁻²⁴ (float32's resolution of 1 − cos θ; some "
             "runs end at exactly 0) enter the ratio as 2⁻²⁴. With few seeds a percentile interval is too narrow "
             "(with 2 seeds it is their range): read these with their seed counts.", ""]
    improvement = {(r["part"], r["setting"], r["obs"]) + (r["poles"], r["flow"]): r for r in out["improvement"]}
    lines += (headline_text(out, args, improvement) + leaders_text(out, args) + tuning_effect_text(out, args)
              + iqm_tables_text(out, args))
    lines += ["## Every flow against `none`, in words", ""]
    for part, setting, obs, title in PANELS:
        rows = [r for r in out["pairs"] if (r["part"], r["setting"], r["obs"]) == (part, setting, obs)]
        if not rows:
            continue
        lines += [f"### {title} (part `{part}`)", ""]
        for r in sorted(rows, key=lambda r: (r["poles"], list(args.flows).index(r["flow"]) if r["flow"] in args.flows else 0)):
            where = f"{r['poles']} pole{'s' if r['poles'] > 1 else ''}"
            if r["log_ratio"] is None and r["seeds"] == 0:
                continue  # nothing of this flow (or of none) has finished yet
            if r["log_ratio"] is None:
                lines.append(f"- {where}: {r['flow']} against none: not enough paired seeds yet ({r['seeds']} of the "
                             f"{stats.MIN_SEEDS} an interval needs).")
                continue
            ratio = stats.Estimate(r["log_ratio"], r["log_ratio_low"], r["log_ratio_high"], r["seeds"])
            imp = improvement.get((part, setting, obs, r["poles"], r["flow"]))
            below = (stats.Estimate(imp["p_below_none"], imp["p_below_none_low"], imp["p_below_none_high"],
                                    min(imp["seeds"], imp["none_seeds"])) if imp and imp["p_below_none"] is not None else None)
            lines.append("- " + stats.describe_pair(r["flow"], "none", ratio, below, where=where))
        lines.append("")
    return "\n".join(lines)


def _estimate(row: dict | None, key: str, n: int) -> stats.Estimate | None:
    if row is None or row.get(key) is None:
        return None
    return stats.Estimate(row[key], row[f"{key}_low"], row[f"{key}_high"], n)


def headline_text(out: dict, args: Args, improvement: dict, flow: str = "combined") -> list[str]:
    """The study's question in one table: does ``flow`` end below ``none``, per observation and pole count of the
    main and tuned parts (IQM of each, the seed-paired ratio and P(flow ends below none), each with its interval)."""
    cells = {(r["part"], r["setting"], r["obs"], r["poles"], r["flow"]): r for r in out["table"]}
    pairs = {(r["part"], r["setting"], r["obs"], r["poles"], r["flow"]): r for r in out["pairs"]}
    lines = []
    for part, setting, obs, title in PANELS:
        if part not in ("main", "tuned") or not any(k[:3] == (part, setting, obs) for k in pairs):
            continue
        if not lines:
            lines = [f"## Does `{flow}` end below `none`?", "",
                     "Final test loss, IQM [95% interval] (seeds); the seed-paired ratio loss " + flow + " / loss none "
                     "(geometric mean over seeds) and P(a run of " + flow + " ends below a run of none), each with its "
                     "interval; the verdict is the ratio's.", ""]
        lines += [f"**{title}** (part `{part}`)", "",
                  f"| poles | {flow} | none | ratio {flow} / none | P({flow} < none) | verdict |", "|---|---|---|---|---|---|"]
        for poles in args.poles:
            key = (part, setting, obs, poles)
            ours, base, pair = cells.get(key + (flow,)), cells.get(key + ("none",)), pairs.get(key + (flow,))
            if ours is None or base is None or pair is None:
                continue
            iqm = [(_estimate(c, "iqm", c["done"]), c["done"]) for c in (ours, base)]
            ratio, imp = _estimate(pair, "ratio", pair["seeds"]), improvement.get(key + (flow,))
            below = _estimate(imp, "p_below_none", min(imp["seeds"], imp["none_seeds"])) if imp else None
            lines.append(" | ".join([f"| {poles}", *(f"{e.text()} ({n})" if e else f"– ({n})" for e, n in iqm),
                                     f"×{ratio.text()} ({pair['seeds']})" if ratio else f"– ({pair['seeds']})",
                                     below.text("{:.2f}") if below else "–", pair["verdict"] or "too few seeds"]) + " |")
        lines.append("")
    return lines


def leaders_text(out: dict, args: Args) -> list[str]:
    """Which flow ends lowest, per panel and pole count: the lowest IQM, the flows with no measurable difference from
    it (their seed-paired ratio's interval includes 1) and those measurably above it (``leaders.csv`` in words)."""
    lines = []
    for part, setting, obs, title in PANELS:
        rows = [r for r in out["leaders"] if (r["part"], r["setting"], r["obs"]) == (part, setting, obs)]
        if not rows:
            continue
        if not lines:
            lines = ["## Which flow ends lowest?", "",
                     "Per pole count, the flow with the lowest IQM of the final test loss, then every other flow against "
                     "it: the seed-paired ratio loss flow / loss lowest with its interval (seeds). \"Tied\": the interval "
                     "includes 1 — no measurable difference from the lowest. The IQM and the ratio (a geometric mean "
                     "over seeds) weigh seeds differently, so a tied flow's ratio can be below 1; one whose whole "
                     "interval is below 1 is listed there too, marked **lower**.", ""]
        lines += [f"**{title}** (part `{part}`)", "", "| poles | lowest IQM | tied with it | above it |", "|---|---|---|---|"]
        for poles in args.poles:
            mine = [r for r in rows if r["poles"] == poles]
            if not mine:
                lines.append(f"| {poles} | – | not ranked: fewer than two flows have 2 finished seeds | – |")
                continue
            head = mine[0]
            tied = [r for r in mine if r["verdict"] == stats.NO_DIFFERENCE or r["verdict"] == "lower"]
            above = [r for r in mine if r["verdict"] == "higher"]
            unpaired = [r for r in mine if r["verdict"] is None and r["flow_iqm"] is not None]
            unranked = [r for r in mine if r["flow_iqm"] is None]

            def listed(group):
                return ", ".join(f"`{r['flow']}` ×{r['ratio']:.3g} [{r['ratio_low']:.3g}, {r['ratio_high']:.3g}] ({r['seeds']})"
                                 + (" **lower**" if r["verdict"] == "lower" else "")
                                 for r in sorted(group, key=lambda r: r["ratio"])) or "–"
            names = ", ".join("`" + r["flow"] + "`" for r in unpaired)
            extra = f"; too few paired seeds: {names}" if unpaired else ""
            if unranked:
                extra += "; not ranked, fewer than 2 seeds: " + ", ".join(f"`{r['flow']}` ({r['seeds']})" for r in unranked)
            lines.append(f"| {poles} | `{head['lowest']}` {head['lowest_iqm']:.3g} ({head['lowest_seeds']}) | {listed(tied)}{extra} "
                         f"| {listed(above)} |")
        lines.append("")
    return lines


def tuning_effect_text(out: dict, args: Args) -> list[str]:
    """What tuning changed: per observation, a row per flow (its tuned setting) and a column per pole count, the
    seed-paired ratio of the tuned part's final test loss to the main part's (``tuning_effect.csv`` as Markdown)."""
    rows = out["tuning_effect"]
    if not rows:
        return []
    lines = ["## What tuning changed", "",
             f"Each flow at its tuned setting against the same flow at the published one (the main part's: lr {args.lr:g} "
             "and the flow as named) on the same seeds: the ratio loss tuned / loss published with its interval (seeds); below 1, "
             "tuning lowered the final test loss. A flow whose tuned setting is the published one shares the main part's "
             "runs.", ""]
    for obs in args.observations:
        mine = {(r["poles"], r["flow"]): r for r in rows if r["obs"] == obs}
        if not mine:
            continue
        lines += [f"**{obs}**", "", "| flow | tuned setting | " + " | ".join(f"{n} pole{'s' if n > 1 else ''}" for n in args.poles)
                  + " |", "|---|---" + "|---" * len(args.poles) + "|"]
        for flow in args.flows:
            cells = [mine.get((n, flow)) for n in args.poles]
            first = next((c for c in cells if c), None)
            if first is None:
                continue
            setting = f"`{first['tuned_flow']}`, lr {first['tuned_lr']:g}"

            def cell(c):
                if c is None:
                    return "–"
                if c["same_runs"]:
                    return "the published setting"
                if c["ratio"] is None:
                    return f"– ({c['seeds']})"
                word = "" if c["verdict"] == stats.NO_DIFFERENCE else f" **{c['verdict']}**"
                return f"×{c['ratio']:.3g} [{c['ratio_low']:.3g}, {c['ratio_high']:.3g}] ({c['seeds']}){word}"
            lines.append(f"| `{flow}` | {setting} | " + " | ".join(cell(c) for c in cells) + " |")
        lines.append("")
    return lines


def iqm_tables_text(out: dict, args: Args) -> list[str]:
    """Per panel, the IQM of the final test loss with its interval and seed count, a row per pole count and a column
    per flow (``table.csv`` as Markdown)."""
    cells = {(r["part"], r["setting"], r["obs"], r["poles"], r["flow"]): r for r in out["table"]}
    lines = []
    for part, setting, obs, title in PANELS:
        if not any(k[:3] == (part, setting, obs) and r["done"] for k, r in cells.items()):
            continue
        if not lines:
            lines = ["## Final test loss per cell", "",
                     "IQM of the final test loss (1 − mean cos θ at the last step; 0: every pole upright) with its 95% "
                     "stratified-bootstrap interval and (finished seeds); `table.csv` has the median and the success too.", ""]
        flows = [f for f in args.flows if any(k[:3] == (part, setting, obs) and k[4] == f for k in cells)]
        lines += [f"**{title}** (part `{part}`)", "", "| poles | " + " | ".join(flows) + " |",
                  "|---" * (len(flows) + 1) + "|"]
        for poles in args.poles:
            row = [cells.get((part, setting, obs, poles, f)) for f in flows]
            if not any(row):
                continue
            text = [f"{_estimate(c, 'iqm', c['done']).text()} ({c['done']})" if c and c["iqm"] is not None
                    else f"– ({c['done'] if c else 0})" for c in row]
            lines.append(f"| {poles} | " + " | ".join(text) + " |")
        lines.append("")
    return lines


# -- the figures ------------------------------------------------------------------------------------
def _panels(rows: list) -> list:
    """The panels with something to draw (a finished run, or a row of a table)."""
    return [p for p in PANELS if any((r["part"], r["setting"], r["obs"]) == p[:3] and r.get("status", "done") in ("done", "nonfinite")
                                     for r in rows)]


def _legend(fig, flows: list, rows: int, title: str, marker: str = "o") -> None:
    """One legend above the panels: every flow drawn, in its colour."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=flow_color(f), marker=marker, linestyle="-" if marker is None else "none", label=f)
               for f in flows]
    fig.legend(handles=handles, loc="upper center", ncol=len(flows), fontsize=8, title=title, title_fontsize=8,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.28 / rows))


def _grid(n: int, width: float = 6.2, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=120, squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes, rows


def plot_cells(path, final: list, table: list, flows: list, poles: list) -> None:
    """Per panel: the IQM of the final test loss per pole count and flow with its 95% interval (error bar), a dot
    per seed, × per non-finite run; a log axis where the values span more than a decade."""
    panels = _panels(final)
    if not panels:
        return
    fig, axes, rows = _grid(len(panels))
    width = 0.8 / len(flows)
    cells = {(r["part"], r["setting"], r["obs"], r["poles"], r["flow"]): r for r in table}
    for ax, (part, setting, obs, title) in zip(axes.flat, panels):
        sel = [r for r in final if (r["part"], r["setting"], r["obs"]) == (part, setting, obs)]
        for j, flow in enumerate(flows):
            for i, n in enumerate(poles):
                x = i + (j - (len(flows) - 1) / 2) * width
                vals = [r["final_test_loss"] for r in sel if r["poles"] == n and r["flow"] == flow and r["status"] == "done"]
                if vals:
                    ax.scatter([x] * len(vals), vals, s=6, color="0.35", zorder=2, linewidths=0)
                c = cells.get((part, setting, obs, n, flow))
                if c and c["iqm"] is not None:
                    ax.errorbar([x], [c["iqm"]], yerr=[[c["iqm"] - c["iqm_low"]], [c["iqm_high"] - c["iqm"]]], fmt="o",
                                ms=4.5, color=flow_color(flow), ecolor=flow_color(flow), elinewidth=1.6, capsize=2.5, zorder=3)
                diverged = sum(r["status"] == "nonfinite" for r in sel if r["poles"] == n and r["flow"] == flow)
                if diverged:
                    ax.annotate("×" * diverged, (x, 0.02), ha="center", fontsize=7, color="red", xycoords=("data", "axes fraction"))
        ax.set_xticks(range(len(poles)), [f"{n} pole{'s' if n > 1 else ''}" for n in poles])
        ax.set_ylabel("final test loss, 1 − mean cos θ")
        positive = [v for v in (r["final_test_loss"] for r in sel if r["status"] == "done") if v is not None and v > 0]
        if positive and max(positive) > 10 * min(positive):
            ax.set_yscale("log")
            ax.set_ylim(bottom=min(positive) / 3, top=max(positive) * 3)
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    drawn = [f for f in flows if any(r["flow"] == f and r["status"] == "done" for r in final)]
    _legend(fig, drawn, rows, "flow (marker: IQM over seeds, bar: 95% bootstrap interval; grey dot: one seed; ×: non-finite)")
    save_figure(fig, path)


def plot_pairs(path, pairs: list, flows: list, poles: list) -> None:
    """Per panel: the seed-paired log-ratio log(loss flow / loss none) per pole count and flow, its mean over seeds
    with the 95% interval; below 0 the flow ends lower than none."""
    panels = _panels(pairs)
    if not panels:
        return
    fig, axes, rows = _grid(len(panels))
    others = [f for f in flows if f != "none"]
    width = 0.8 / max(1, len(others))
    for ax, (part, setting, obs, title) in zip(axes.flat, panels):
        sel = {(r["poles"], r["flow"]): r for r in pairs if (r["part"], r["setting"], r["obs"]) == (part, setting, obs)}
        for j, flow in enumerate(others):
            for i, n in enumerate(poles):
                r = sel.get((n, flow))
                if not r or r["log_ratio"] is None:
                    continue
                x = i + (j - (len(others) - 1) / 2) * width
                ax.errorbar([x], [r["log_ratio"]], yerr=[[r["log_ratio"] - r["log_ratio_low"]], [r["log_ratio_high"] - r["log_ratio"]]],
                            fmt="o", ms=4.5, color=flow_color(flow), elinewidth=1.6, capsize=2.5)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(poles)), [f"{n} pole{'s' if n > 1 else ''}" for n in poles])
        ax.set_ylabel("log(loss flow / loss none), same seed")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    drawn = [f for f in others if any(r["flow"] == f and r["log_ratio"] is not None for r in pairs)]
    _legend(fig, drawn, rows, "flow (mean over seeds of the paired log-ratio, 95% bootstrap interval; < 0: lower than none)")
    save_figure(fig, path)


def plot_profiles(path, profiles: list, flows: list) -> None:
    """Per panel: performance profiles over the pole counts, the fraction of runs whose final test loss is below τ,
    with 95% bands (rliable's plot_utils)."""
    panels = _panels(profiles)
    if not panels:
        return
    fig, axes, rows = _grid(len(panels), height=3.2)
    from rliable import plot_utils

    for ax, (part, setting, obs, title) in zip(axes.flat, panels):
        sel = [r for r in profiles if (r["part"], r["setting"], r["obs"]) == (part, setting, obs)]
        present = [f for f in flows if any(r["flow"] == f for r in sel)]
        curves, bands = {}, {}
        for flow in present:
            rows_f = [r for r in sel if r["flow"] == flow]
            curves[flow] = np.array([r["fraction"] for r in rows_f])
            bands[flow] = np.array([[r["low"] for r in rows_f], [r["high"] for r in rows_f]])
        taus = np.array([r["tau"] for r in sel if r["flow"] == present[0]])
        plot_utils.plot_performance_profiles(curves, taus, bands, ax=ax, colors={f: flow_color(f) for f in present},
                                             xlabel="final test loss τ", ylabel="fraction of runs below τ",
                                             labelsize="small", ticklabelsize="small", linewidth=1.4)
        ax.set_xscale("log")
        n_seeds = sel[0]["seeds"]
        ax.set_title(f"{title} (poles {sel[0]['poles']}, {n_seeds} seeds each)", fontsize=9)
    drawn = [f for f in flows if any(r["flow"] == f for r in profiles)]
    _legend(fig, drawn, rows, "flow (runs of every pole count pooled; band: 95% bootstrap interval)", marker=None)
    save_figure(fig, path)


def plot_curves(path, curves: list, flows: list, poles: list, observations: list) -> None:
    """Test loss against epoch, main part: a panel per observation and pole count, median over seeds and
    interquartile band."""
    if not any(c["part"] == "main" for c in curves):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(observations), len(poles), figsize=(3.4 * len(poles), 2.9 * len(observations)), dpi=120,
                             squeeze=False, sharex=True)
    for a, obs in enumerate(observations):
        for b, n in enumerate(poles):
            ax = axes[a, b]
            for flow in flows:
                sel = [c for c in curves if c["part"] == "main" and c["obs"] == obs and c["poles"] == n and c["flow"] == flow]
                by_seed: dict = {}
                for c in sel:
                    by_seed.setdefault(c["seed"], {})[c["epoch"]] = c["test_loss"]
                if not by_seed:
                    continue
                epochs = sorted(set.intersection(*(set(v) for v in by_seed.values())))
                if not epochs:
                    continue
                y = np.asarray([[v[e] for e in epochs] for v in by_seed.values()], dtype=float)
                ax.plot(epochs, np.median(y, 0), color=flow_color(flow), label=flow, linewidth=1.2)
                ax.fill_between(epochs, np.percentile(y, 25, 0), np.percentile(y, 75, 0), color=flow_color(flow), alpha=0.12)
            ax.set_yscale("log")
            ax.set_title(f"{n} pole{'s' if n > 1 else ''}, {obs} observation", fontsize=9)
            ax.grid(alpha=0.3)
            if b == 0:
                ax.set_ylabel("test loss, 1 − mean cos θ")
            if a == len(observations) - 1:
                ax.set_xlabel("epoch (32 updates)")
    axes[0, 0].legend(fontsize=7, title="flow (median, interquartile band over seeds)", title_fontsize=7)
    fig.suptitle("main part: the published setting", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


TABLE_FILES = {"final.csv": "final", "table.csv": "table", "pairs.csv": "pairs", "improvement.csv": "improvement",
               "leaders.csv": "leaders", "tuning_effect.csv": "tuning_effect", "profiles.csv": "profiles",
               "curves.csv": "curves"}
FILES = [*TABLE_FILES, "summary.md", "cartpole-study.png", "cartpole-study-pairs.png", "cartpole-study-profiles.png",
         "cartpole-study-curves.png"]


def main(argv=None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    all_runs = runs(args)
    earlier = read_settings(args.out)
    adopted = adopt_runs(args.out, all_runs) if earlier is None or earlier.get("script") == SCRIPT else {}
    if adopted:
        print(f"reusing {len(adopted)} finished runs of this folder's earlier layout under the names used now "
              f"(e.g. {next(iter(adopted))} -> {next(iter(adopted.values()))}; the list: renamed.json)", flush=True)
    tuning = None
    if "tuned" in args.parts:  # the parts before it, and the tuning part, first: the tuned configs come from its choice
        before = list(args.parts[: args.parts.index("tuned")])
        first = runs(args, before + ([] if "tuning" in before else ["tuning"]))
        _, first_records, _ = sweep_runs(args, SCRIPT, first, "cartpole study, the parts before the tuned one")
        tune = [r for r in first if describe(r)["part"] == "tuning"]
        try:
            tuning = choose_tuned(args, tune, first_records)
        except ValueError as err:
            if not args.plot_only:
                raise
            print(f"the tuned part is left out: {err}", flush=True)
        all_runs = runs(args, chosen=tuning["chosen"] if tuning else None)
        if "tuning" not in args.parts:
            all_runs += tune
    trained, aliases = shared_with_main(args, all_runs)
    if aliases:
        print(f"{len(aliases)} tuned-part runs keep their flow's published setting and lr: the main part's runs of the "
              "same cell and seed serve them (one config, one run)", flush=True)
    out, records, report = sweep_runs(args, SCRIPT, trained, "cartpole study")
    records = {**records, **{tuned: records[main] for tuned, main in aliases.items() if main in records}}
    if tuning is None and "tuning" in args.parts:
        tune = [r for r in all_runs if describe(r)["part"] == "tuning"]
        if all(r.name in records for r in tune):
            tuning = choose_tuned(args, tune, records)
    if tuning is not None:
        write_tables(out, {"tuning.csv": tuning["table"],
                           "tuned.csv": [dict(flow=f, tuned_flow=c["flow"], lr=c["lr"], mean_log_val_loss=c["score"], runs=c["runs"],
                                              at_grid_edge="; ".join(c["edge"])) for f, c in tuning["chosen"].items()]})
        for f, c in tuning["chosen"].items():
            if c["edge"]:
                print(f"tuned setting of {f} on the edge of the grid tried ({'; '.join(c['edge'])}): its best may lie "
                      "beyond it", flush=True)
    data = tables(all_runs, records, args)
    write_tables(out, {name: data[key] for name, key in TABLE_FILES.items()})
    from gradstop._io import atomic_write

    atomic_write(out / "summary.md", (summary_text(data, args, len(records), len(all_runs)) + "\n").encode())
    flows, poles = list(args.flows), list(args.poles)
    plot_cells(out / "cartpole-study.png", data["final"], data["table"], flows, poles)
    plot_pairs(out / "cartpole-study-pairs.png", data["pairs"], flows, poles)
    plot_profiles(out / "cartpole-study-profiles.png", data["profiles"], flows)
    plot_curves(out / "cartpole-study-curves.png", data["curves"], flows, poles, list(args.observations))
    files = [f for f in FILES if (out / f).exists()]
    finish_sweep_figure(out, SCRIPT, args, started=started, runs=all_runs, records=records, report=report, files=files,
                        variant_seeds=list(range(args.variant_seeds)),
                        task="cartpole, preset literature (published dynamics, initial states and loss), output layer "
                             "zeroed as the published runs execute")


if __name__ == "__main__":
    run_script(main)
