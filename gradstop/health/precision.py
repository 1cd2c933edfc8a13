"""Is a float32 gradient still right at horizon H? ``gradstop.precision(policy, sim, flows=[...], horizon=150)``.

The same gradients are taken in float32 and float64, from the same weights and the same initial
states (the float64 ones, rounded once to float32), at every horizon in ``horizons``; for each flow
the float32 gradient's relative error ‖g₃₂ − g₆₄‖/‖g₆₄‖ and cosine against the float64 one are
reported, with the first horizon at which the cosine drops below 0.99 and below 0.9.

The float64 gradient is the reference: it is itself exact only to float64 rounding, which on the
horizons studied here is many orders below the float32 error (tests hold float64 native, fused and
finite differences together). The backends supply ``gradients_by_horizon``; the rest is here.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from gradstop._checks import check_framework, check_horizon, check_protocol
from gradstop.health.diagnose import parse_flows

__all__ = ["precision", "Precision", "default_horizons", "THRESHOLDS"]

THRESHOLDS = (0.99, 0.9)


def default_horizons(horizon: int) -> list[int]:
    """Every H up to 20, then every 5th, then ``horizon`` itself."""
    check_horizon(horizon)
    return sorted({h for h in range(1, min(horizon, 20) + 1)} | set(range(25, horizon + 1, 5)) | {horizon})


@dataclasses.dataclass
class Precision:
    """What :func:`precision` returns.

    Attributes:
      flows: the flows' names; horizons: the horizons measured, ascending.
      rel_error, cosine: flow -> array over ``horizons`` of the float32 gradient against the float64 one.
      norm64: flow -> array of ‖g₆₄‖ (an error is relative to it).
    """

    flows: list[str]
    horizons: np.ndarray
    rel_error: dict
    cosine: dict
    norm64: dict

    def first_below(self, threshold: float) -> dict:
        """flow -> the first horizon whose cosine is below ``threshold`` (NaN counts as below), or None."""
        out = {}
        for name in self.flows:
            below = ~(self.cosine[name] >= threshold)
            out[name] = int(self.horizons[np.argmax(below)]) if below.any() else None
        return out

    def rows(self) -> list[dict]:
        return [dict(flow=name, horizon=int(h), rel_error=self.rel_error[name][i], cosine=self.cosine[name][i],
                     norm64=self.norm64[name][i]) for name in self.flows for i, h in enumerate(self.horizons)]

    def summary(self) -> str:
        lines = [f"float32 against float64, H = {self.horizons[0]} … {self.horizons[-1]}:"]
        firsts = {t: self.first_below(t) for t in THRESHOLDS}
        for name in self.flows:
            worst = np.nanmin(self.cosine[name]) if np.isfinite(self.cosine[name]).any() else np.nan
            marks = ", ".join(f"cos < {t} first at H = {firsts[t][name] if firsts[t][name] is not None else 'never'}"
                              for t in THRESHOLDS)
            lines.append(f"  {name:<24} {marks}; lowest cos {worst:.4f}, largest relative error "
                         f"{np.nanmax(self.rel_error[name]):.3g}")
        return "\n".join(lines)


def precision(policy, sim, *, flows=("none", "input"), horizon: int | None = None, horizons=None, x0=None, key=None,
              batch: int | None = None) -> Precision:
    """float32 against float64 gradients of each flow, at every horizon.

    Args:
      policy: the policy, in any floating dtype (its weights are cast to float32 and float64).
      sim, x0, key, batch: as :func:`gradstop.rollout`; ``x0`` is cast the same way.
      flows: flows (combining ones too).
      horizon: the longest horizon; the horizons are :func:`default_horizons` of it unless ``horizons`` is given.
      horizons: the horizons to measure, explicitly.

    Raises:
      ValueError: JAX without 64-bit mode (the fix is named), no horizon given, a horizon < 1.
    """
    parsed = parse_flows(flows)
    if horizons is None:
        if horizon is None:
            raise ValueError("give horizon= (the longest; every H up to it is measured) or horizons=[...]")
        horizons = default_horizons(horizon)
    horizons = sorted({int(h) if not isinstance(h, bool) and isinstance(h, (int, np.integer)) else h for h in horizons})
    for h in horizons:
        check_horizon(h)
    check_protocol(sim, needs_reset=x0 is None)
    check_framework(policy, sim)
    backend = importlib.import_module(f"gradstop.{sim.backend}.precision")
    backend.require_float64()
    g64 = backend.gradients_by_horizon(policy, sim, parsed, horizons, x0, key, batch, "float64")
    g32 = backend.gradients_by_horizon(policy, sim, parsed, horizons, x0, key, batch, "float32")
    names = [f.name for f in parsed]
    rel, cos, norm = {}, {}, {}
    for name in names:
        a, b = np.asarray(g32[name], np.float64), np.asarray(g64[name], np.float64)  # (len(horizons), P)
        nb = np.linalg.norm(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel[name] = np.linalg.norm(a - b, axis=1) / nb
            cos[name] = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * nb)
        norm[name] = nb
    return Precision(names, np.asarray(horizons), rel, cos, norm)
