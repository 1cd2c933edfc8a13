"""gs.precision: float32 against float64 gradients over the horizon."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import gradstop as gs
from gradstop.health.diagnose import parse_flows
from gradstop.jax.precision import gradients_by_horizon
from gradstop.health.precision import Precision, default_horizons
from helpers import flat, load


def test_one_compile_serves_every_horizon_and_equals_the_short_rollouts():
    """The masked long rollout's gradient is the short rollout's (terminal cost and truncation included)."""
    sim, policy, x0 = load("jax", "cartpole", batch=2)  # helpers' cartpole has a terminal cost
    flows = parse_flows(["input+truncate:3"])  # the mask is the same for every flow; this one cuts λ too
    got = gradients_by_horizon(policy, sim, flows, [2, 5], x0, None, 2, "float64")
    for i, n in enumerate([2, 5]):
        ref = gs.gradients(policy, sim, flows=flows, horizon=n, x0=x0, impl="native").grads
        for f in flows:
            np.testing.assert_allclose(got[f.name][i], flat(jax.tree.leaves(ref[f.name])), rtol=1e-10, atol=1e-300)


def test_jax_and_torch_measure_the_same_drift():
    sj, pj, xj = load("jax", "cartpole", batch=3)
    st, pt, xt = load("torch", "cartpole", batch=3)
    rj = gs.precision(pj, sj, flows=["none", "input"], horizons=[1, 10, 30], x0=xj)
    rt = gs.precision(pt, st, flows=["none", "input"], horizons=[30, 10, 1], x0=xt)
    assert list(rj.horizons) == list(rt.horizons) == [1, 10, 30]
    for name in ("none", "input"):
        np.testing.assert_allclose(rj.norm64[name], rt.norm64[name], rtol=1e-10)
        assert np.all(rj.rel_error[name] < 1e-3) and np.all(rt.rel_error[name] < 1e-3)
        assert np.all(rj.rel_error[name] > 0)  # float32 does differ
        np.testing.assert_allclose(rj.cosine[name], rt.cosine[name], atol=1e-6)
    rows = rj.rows()
    assert len(rows) == 6 and set(rows[0]) == {"flow", "horizon", "rel_error", "cosine", "norm64"}
    assert "cos < 0.99 first at H = never" in rj.summary()


def test_first_below_and_default_horizons():
    p = Precision(["a", "b"], np.array([1, 5, 10]), {"a": np.zeros(3), "b": np.zeros(3)},
                  {"a": np.array([1.0, 0.95, 0.5]), "b": np.array([1.0, np.nan, 1.0])}, {"a": np.ones(3), "b": np.ones(3)})
    assert p.first_below(0.99) == {"a": 5, "b": 5} and p.first_below(0.9) == {"a": 10, "b": 5}
    assert default_horizons(30) == list(range(1, 21)) + [25, 30] and default_horizons(3) == [1, 2, 3]


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "give horizon="), (dict(horizons=[0, 3]), "horizon must be ≥ 1"), (dict(horizon=5, flows=["none", "none"]), "twice"),
])
def test_bad_input(kwargs, message):
    sim, policy, x0 = load("torch", "pointmass")
    with pytest.raises(ValueError, match=message):
        gs.precision(policy, sim, x0=x0, **kwargs)
