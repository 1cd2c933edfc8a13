"""Can the first-order gradient be trusted? ``gradstop.bias_test``: the empirical-bias test of Suh et al. (2022).

At each horizon H, M = B·N noisy rollouts give the zeroth-order estimate ĝ0 (unbiased for the
noise-smoothed cost whatever the dynamics) with its Bernstein confidence bound ε, and M independent
ones the first-order estimate ĝ1 of the chosen flow (``gradstop.mixing``). Where ‖ĝ1 − ĝ0‖ > ε the
first-order gradient disagrees with the zeroth-order one beyond ĝ0's own uncertainty: with probability
1 − δ it is biased there (a discontinuity, a stiff contact, or a flow that cuts edges). Where
‖ĝ1 − ĝ0‖ ≤ ε the test cannot tell; a large ε (ĝ0's variance grows fast with H) means it could not
look. The per-sample variances σ0², σ1² show which estimator is the noisier one at each H.

Framework-neutral: it runs ``gradstop.rollout`` with the flow ``alpha:auto`` and reads ``Rollout.mixing``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gradstop._checks import check_horizon
from gradstop.flows import Mixing, parse_flow

__all__ = ["bias_test", "BiasTest"]

JUMP = 10.0  # a first-order variance that grows more than this many times per step of horizon is reported


@dataclasses.dataclass(frozen=True)
class BiasTest:
    """What :func:`bias_test` returns; arrays are (len(horizons),) NumPy.

    Attributes:
      flow: the first-order flow tested (ĝ1's).
      horizons: the horizons H tested.
      bias: ‖ĝ1 − ĝ0‖ per H.
      eps: ĝ0's confidence bound ε per H (probability 1 − ``delta``).
      var0, var1: the per-sample variances of ĝ0 and ĝ1 per H.
      fires: bias > eps per H: the first-order gradient disagrees beyond the bound.
      samples: M, the noisy rollouts per estimator; sigma, bound, delta: the test's σ, L and δ.
    """

    flow: str
    horizons: np.ndarray
    bias: np.ndarray
    eps: np.ndarray
    var0: np.ndarray
    var1: np.ndarray
    fires: np.ndarray
    samples: int
    sigma: float
    bound: float
    delta: float

    def summary(self) -> str:
        """One line per horizon, then the finding."""
        lines = [f"empirical-bias test of {self.flow!r}: {self.samples} noisy rollouts per estimator, σ = {self.sigma:g}, "
                 f"L = {self.bound:g}, δ = {self.delta:g}",
                 "     H   ‖ĝ1 − ĝ0‖          ε        σ0²        σ1²"]
        for h, b, e, v0, v1, f in zip(self.horizons, self.bias, self.eps, self.var0, self.var1, self.fires):
            lines.append(f"{h:6d} {b:11.4g} {e:10.4g} {v0:10.4g} {v1:10.4g}{'   ← beyond the bound' if f else ''}")
        fired = [int(h) for h, f in zip(self.horizons, self.fires) if f]
        if fired:
            lines.append(f"the first-order gradient ({self.flow}) disagrees with the zeroth-order one beyond its confidence "
                         f"bound at H = {', '.join(map(str, fired))}: it is biased there (probability ≥ {1 - self.delta:g}); "
                         "prefer a shorter horizon, a smoother simulator, or alpha:auto, which falls back to ĝ0")
        else:
            lines.append(f"no horizon shows a disagreement beyond the bound (where ε is large, the test could not look: "
                         "add samples, or lower σ)")
        for h0, h1, ratio in self.variance_jumps():
            lines.append(f"the first-order variance σ1² jumps ×{ratio:.3g} from H = {h0} to H = {h1}: something between "
                         "them (an impact, a stiff contact) makes the pathwise gradient erratic there")
        return "\n".join(lines)

    def variance_jumps(self, factor: float = JUMP) -> list[tuple[int, int, float]]:
        """(H, H', σ1²(H')/σ1²(H)) for consecutive tested horizons whose first-order variance grows more than
        ``factor`` times per step of horizon between them (``factor ** (H' − H)`` in all): where the pathwise
        gradient's variance explodes, e.g. at an impact."""
        jumps = []
        for i in range(1, len(self.horizons)):
            h0, h1, v0, v1 = int(self.horizons[i - 1]), int(self.horizons[i]), self.var1[i - 1], self.var1[i]
            if h1 > h0 and v0 > 0 and np.isfinite(v1) and v1 > v0 * factor ** (h1 - h0):
                jumps.append((h0, h1, float(v1 / v0)))
        return jumps

    def __str__(self) -> str:
        return self.summary()


def bias_test(policy, sim, *, horizons, flow="none", sigma: float = 0.1, samples: int = 16, bound: float = 10.0,
              delta: float = 0.05, x0=None, key=0, batch: int | None = None, impl: str = "native") -> BiasTest:
    """The empirical-bias test of the first-order flow ``flow`` at each horizon in ``horizons``.

    Args:
      policy, sim, x0, batch, impl: as :func:`gradstop.rollout` (with x0 None, ``batch`` initial states are drawn).
      horizons: the horizons H to test (integers ≥ 1).
      flow: the first-order flow that supplies ĝ1 (``none``, ``input``, ``decay:0.9``, …; not a combining one).
      sigma, samples, bound, delta: σ of the action noise, N noisy rollouts per initial state and estimator, the
        Bernstein bound's L (a bound on a per-sample gradient's norm) and δ (see ``gradstop.mixing``).
      key: the noise (and, with x0 None, the initial states) are drawn from it; each horizon takes its own draws.

    Example::

        t = gs.bias_test(policy, sim, horizons=[10, 50, 100], flow="none", x0=x0, samples=64)
        print(t.summary())
    """
    hs = [int(h) for h in np.atleast_1d(horizons)] if not isinstance(horizons, int) else [horizons]
    if not hs:
        raise ValueError("horizons is empty: name at least one horizon, e.g. horizons=[10, 50, 100]")
    for h in hs:
        check_horizon(h)
    first = parse_flow(flow)
    if first.mixed:
        raise ValueError(f"flow {first.name!r} already mixes a zeroth-order estimate: bias_test takes the first-order "
                         f"flow to test ({first.first_order.name!r})")
    mixing = Mixing(alpha="auto", sigma=sigma, samples=samples, bound=bound, delta=delta)  # checks the values
    tested = dataclasses.replace(first, mixing=mixing)
    if key is None:
        raise ValueError("bias_test draws action noise: pass key= (an int seed, a jax.random key or a torch.Generator)")
    from gradstop.rollout import rollout

    rows = []
    for i, h in enumerate(hs):
        k = _key_for(key, i, sim.backend)
        out = rollout(policy, sim, stop=tested, horizon=h, x0=x0, key=k, batch=batch, impl=impl)
        rows.append([float(out.mixing[name]) for name in ("bias", "eps", "var0", "var1")])
    bias, eps, var0, var1 = (np.asarray(c) for c in zip(*rows))
    m = int(out.terminal.shape[0]) * samples
    return BiasTest(first.name, np.asarray(hs), bias, eps, var0, var1, bias > eps, m, float(sigma), float(bound),
                    float(delta))


def _key_for(key, i: int, backend: str):
    """The i-th horizon's key: an int seed offset by i; a JAX key folded with i; a torch Generator as it is."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key) + 1000003 * i
    if backend == "jax":
        import jax

        return jax.random.fold_in(key, i)
    return key
