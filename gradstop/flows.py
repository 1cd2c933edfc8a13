"""Gradient flows: which edges of the rollout graph carry gradient, as values.

A rollout is ``o_t = obs(x_t)``, ``a_t = π_θ(o_t)``, ``x_{t+1} = g(x_t, a_t)`` with loss
``L = Σ_t c(x_{t+1}, a_t) (+ terminal(x_H))``. A flow fixes the reverse sweep (DESIGN §2)::

    μ_t = ∂c_t/∂a_t + (∂g/∂a)ᵀ λ_{t+1}
    λ_t = ∂c_{t-1}/∂x_t + k_phys·(∂g/∂x)ᵀ λ_{t+1} + k_in·(∂π∘obs/∂x)ᵀ μ_t
    ∇θ  = Σ_t (∂π/∂θ)ᵀ μ_t

and, with ``truncate:K``, resets λ_t to its local term ∂c_{t-1}/∂x_t whenever t is a positive
multiple of K. ``combined`` and ``directional`` combine the ``none`` and ``input`` gradients per
parameter component (Schnell & Thuerey, ICLR 2024, "Stabilizing Backpropagation Through Time to
Learn Complex Physics").

The zeroth- and α-order flows (``zero``, ``alpha:α``, ``alpha:auto``; Suh, Simchowitz, Zhang & Tedrake,
ICML 2022, "Do Differentiable Simulators Give Better Policy Gradients?") inject Gaussian action noise and
mix a first-order gradient (any of the flows above) with a zeroth-order one; their settings are a
:class:`Mixing` (see ``gradstop.mixing``).

This module is framework-neutral: it imports neither JAX nor PyTorch.

Example::

    >>> parse_flow("input+decay:0.9")
    Flow(base='input', decay=0.9, truncate=None)
    >>> parse_flow("input+decay:0.9").k_phys, parse_flow("input+decay:0.9").k_in
    (0.9, 0.0)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Union

__all__ = ["Flow", "Mixing", "FlowLike", "parse_flow", "BASES", "COMBINING", "combine_gradients"]

# base name -> (k_phys, k_in); None for the combining flows, which are built from two others.
BASES: dict[str, tuple[float, float] | None] = {
    "none": (1.0, 1.0),
    "input": (1.0, 0.0),
    "state": (0.0, 1.0),
    "all": (0.0, 0.0),
    "combined": None,
    "directional": None,
}
# The flows that combine others, and the two component flows each reads.
COMBINING = ("combined", "directional")
_COMPONENTS = ("none", "input")

VALID_FORMS = (
    "valid flows: one base out of none | input | state | all | combined | directional, "
    "optionally joined with '+' to decay:γ (0 ≤ γ ≤ 1) and/or truncate:K (integer K ≥ 1); "
    "or zero | alpha:α (0 ≤ α ≤ 1) | alpha:auto, with sigma:σ (noise, > 0), samples:N (≥ 1) and, for alpha:auto, "
    "tol:γ (> 0), bound:L (> 0), delta:δ (0 < δ < 1), joined to the first-order flow they mix; "
    "and surrogate:NAME (a simulator whose derivatives the reverse sweep uses); "
    "examples: 'input', 'decay:0.9', 'input+decay:0.9', 'input+truncate:32', 'combined+truncate:16', "
    "'zero+sigma:0.2', 'alpha:0.5+input', 'alpha:auto+decay:0.9+tol:0.5', 'input+surrogate:pointmass'"
)
# The zeroth-/α-order settings, their parser, and which of them only alpha:auto reads.
_MIXING_PARTS = {"sigma": float, "samples": int, "tol": float, "bound": float, "delta": float}
_AUTO_ONLY = ("tol", "bound", "delta")


@dataclasses.dataclass(frozen=True)
class Mixing:
    """The zeroth-/α-order part of a flow: ĝα = α·ĝ1 + (1 − α)·ĝ0 (``gradstop.mixing`` has the estimators).

    Attributes:
      alpha: α in [0, 1] (0: the zeroth-order estimate alone, the flow ``zero``), or ``"auto"``: the
        bias-constrained choice of Suh et al. (2022) from the per-sample variances and ĝ0's confidence bound.
      sigma: σ, the standard deviation of the Gaussian noise added to every action (> 0).
      samples: N, noisy rollouts per initial state for each estimator (ĝ0 and ĝ1 from independent draws).
      tol: γ, the bias ĝα may have against ĝ0 beyond ĝ0's confidence bound (``alpha:auto``).
      bound: L, the bound on a per-sample gradient's norm in the Bernstein bound (``alpha:auto``).
      delta: δ, the bound's failure probability: ‖ĝ0 − E ĝ0‖ ≤ ε with probability 1 − δ (``alpha:auto``).
    """

    alpha: float | str = "auto"
    sigma: float = 0.1
    samples: int = 1
    tol: float = 1.0
    bound: float = 10.0
    delta: float = 0.05

    def __post_init__(self):
        a = self.alpha
        if a != "auto":
            if isinstance(a, bool) or not isinstance(a, (int, float)) or math.isnan(a) or not 0.0 <= a <= 1.0:
                raise ValueError(f"alpha must be a number in [0, 1] or 'auto', got {a!r}; {VALID_FORMS}")
            object.__setattr__(self, "alpha", float(a))
        for name, low, high in (("sigma", 0.0, math.inf), ("tol", 0.0, math.inf), ("bound", 0.0, math.inf),
                                ("delta", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (low < v < high):
                what = "a number in (0, 1)" if name == "delta" else "a finite number > 0"
                raise ValueError(f"{name} must be {what}, got {v!r}; {VALID_FORMS}")
            object.__setattr__(self, name, float(v))
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples N must be an integer ≥ 1, got {self.samples!r}; {VALID_FORMS}")

    @property
    def auto(self) -> bool:
        return self.alpha == "auto"

    @property
    def needs_first_order(self) -> bool:
        """Whether ĝ1 enters the update (every α but 0)."""
        return self.auto or self.alpha > 0.0

    @property
    def needs_zeroth_order(self) -> bool:
        """Whether ĝ0 enters the update (every α but 1)."""
        return self.auto or self.alpha < 1.0

    def parts(self) -> list[str]:
        """The flow-string parts of these settings (defaults left out)."""
        default = Mixing()
        out = ["zero" if self.alpha == 0.0 else f"alpha:{self.alpha if self.auto else repr(self.alpha)}"]
        for name in _MIXING_PARTS:
            v = getattr(self, name)
            if v != getattr(default, name):
                out.append(f"{name}:{v!r}" if isinstance(v, float) else f"{name}:{v}")
        return out


@dataclasses.dataclass(frozen=True)
class Flow:
    """A parsed, immutable gradient flow.

    Attributes:
      base: one of ``BASES``; a flow given only as modifiers (``"decay:0.9"``) has base ``none``.
      decay: γ multiplying both k_phys and k_in (1.0: no decay).
      truncate: K, the period at which λ is reset to its local term (None: never).
      mixing: the zeroth-/α-order settings (``zero``, ``alpha:…``), or None for a first-order flow; the
        fields above then describe the first-order flow that supplies ĝ1.
      surrogate: the name of a simulator (as ``sims.make`` takes it) whose step's derivatives the reverse sweep
        uses while the forward runs the true simulator (``surrogate:NAME``), or None.
    """

    base: str = "none"
    decay: float = 1.0
    truncate: int | None = None
    mixing: Mixing | None = None
    surrogate: str | None = None

    def __post_init__(self):
        if self.base not in BASES:
            raise ValueError(f"unknown flow base {self.base!r}; {VALID_FORMS}")
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)):
            raise ValueError(f"decay must be a number in [0, 1], got {self.decay!r}; {VALID_FORMS}")
        if not (0.0 <= float(self.decay) <= 1.0) or math.isnan(self.decay):
            raise ValueError(f"decay γ must lie in [0, 1], got {self.decay}; {VALID_FORMS}")
        object.__setattr__(self, "decay", float(self.decay))
        if self.truncate is not None:
            if isinstance(self.truncate, bool) or not isinstance(self.truncate, int) or self.truncate < 1:
                raise ValueError(f"truncate K must be an integer ≥ 1, got {self.truncate!r}; {VALID_FORMS}")
        if self.surrogate is not None and (not isinstance(self.surrogate, str) or not self.surrogate.strip()
                                           or "+" in self.surrogate):
            raise ValueError(f"surrogate must be a simulator's name (as sims.make takes it, without '+'), got "
                             f"{self.surrogate!r}; {VALID_FORMS}")
        if self.mixing is not None:
            if not isinstance(self.mixing, Mixing):
                raise ValueError(f"mixing must be a gradstop.flows.Mixing or None, got {type(self.mixing).__name__}")
            if not self.mixing.needs_first_order and self.first_order != Flow():
                raise ValueError(f"flow {self.name!r}: zero (α = 0) uses no first-order gradient, so "
                                 f"{self.first_order.name!r} would change nothing; drop it, or mix with alpha:α")
            if self.mixing.auto and self.combining:
                raise ValueError(f"flow {self.name!r}: alpha:auto needs per-sample first-order gradients, and "
                                 f"{self.base!r} combines batch gradients (it has no per-sample form); use a fixed "
                                 f"alpha:α with {self.base!r}, or alpha:auto with none | input | state | all")

    @property
    def mixed(self) -> bool:
        """True for the zeroth-/α-order flows (``zero``, ``alpha:…``)."""
        return self.mixing is not None

    @property
    def first_order(self) -> "Flow":
        """The first-order flow (this one without its zeroth-/α-order part): it supplies ĝ1."""
        return dataclasses.replace(self, mixing=None) if self.mixing is not None else self

    @property
    def combining(self) -> bool:
        """True for flows built from the ``none`` and ``input`` gradients."""
        return self.base in COMBINING

    @property
    def k_phys(self) -> float:
        """Weight of the physics edge x_t → x_{t+1} in the reverse sweep."""
        return self._weights()[0]

    @property
    def k_in(self) -> float:
        """Weight of the policy-input edge x_t → o_t → a_t in the reverse sweep."""
        return self._weights()[1]

    def _weights(self) -> tuple[float, float]:
        if self.mixing is not None:
            raise ValueError(f"flow {self.name!r} mixes a zeroth-order estimate and has no single (k_phys, k_in); "
                             f"its first-order part is .first_order ({self.first_order.name!r})")
        weights = BASES[self.base]
        if weights is None:
            raise ValueError(
                f"flow {self.name!r} combines two gradients and has no single (k_phys, k_in); "
                "use .components() for the flows it combines"
            )
        return weights[0] * self.decay, weights[1] * self.decay

    def components(self) -> tuple["Flow", ...]:
        """The single-pass flows whose gradients this flow needs (itself, unless combining)."""
        if not self.combining:
            return (self,)
        return tuple(dataclasses.replace(self, base=b, mixing=None) for b in _COMPONENTS)

    def cut_after(self, t: int) -> bool:
        """Whether λ_{t} is reset to its local term (x_t detached from the future), 1 ≤ t."""
        return self.truncate is not None and t % self.truncate == 0

    @property
    def name(self) -> str:
        """Canonical string form; ``parse_flow(flow.name) == flow``."""
        parts = [] if self.mixing is None else self.mixing.parts()
        if self.base != "none" or (self.decay == 1.0 and self.truncate is None and self.mixing is None
                                   and self.surrogate is None):
            parts.append(self.base)
        if self.decay != 1.0:
            parts.append(f"decay:{self.decay!r}")  # shortest repr that round-trips
        if self.truncate is not None:
            parts.append(f"truncate:{self.truncate}")
        if self.surrogate is not None:
            parts.append(f"surrogate:{self.surrogate}")
        return "+".join(parts)

    def __str__(self) -> str:
        return self.name


FlowLike = Union[str, Flow]


def parse_flow(flow: FlowLike) -> Flow:
    """Parse a flow string (``"input+decay:0.9"``) into a :class:`Flow`; a Flow passes through.

    Raises:
      ValueError: for an unknown name, γ outside [0, 1], K < 1, a part given twice or two bases
        at once; the message lists the valid forms.
    """
    if isinstance(flow, Flow):
        return flow
    if not isinstance(flow, str):
        raise ValueError(f"a flow is a string or gradstop.Flow, got {type(flow).__name__}; {VALID_FORMS}")
    text = flow.strip()
    if not text:
        raise ValueError(f"empty flow string; {VALID_FORMS}")
    fields: dict[str, Any] = {}
    mixing: dict[str, Any] = {}
    for raw in text.split("+"):
        name, sep, arg = raw.strip().partition(":")
        name = name.strip().lower()
        if name == "surrogate" and sep and arg.strip():  # a simulator's name keeps its case (package.module:Class)
            _set_once(fields, "surrogate", arg.strip(), flow, raw.strip())
            continue
        part = raw.strip().lower()
        arg = arg.lower()
        if name in BASES and not sep:
            _set_once(fields, "base", name, flow, part)
        elif name == "zero" and not sep:
            _set_once(mixing, "alpha", 0.0, flow, part)
        elif name == "alpha" and sep:
            _set_once(mixing, "alpha", "auto" if arg.strip() == "auto" else _number(arg, "alpha α", float, flow), flow, part)
        elif name in _MIXING_PARTS and sep:
            _set_once(mixing, name, _number(arg, name, _MIXING_PARTS[name], flow), flow, part)
        elif name in ("alpha", *_MIXING_PARTS):
            raise ValueError(f"{name!r} in flow {flow!r} needs a parameter ({name}:…); {VALID_FORMS}")
        elif name == "decay" and sep:
            _set_once(fields, "decay", _number(arg, "decay γ", float, flow), flow, part)
        elif name == "truncate" and sep:
            _set_once(fields, "truncate", _number(arg, "truncate K", int, flow), flow, part)
        elif name in ("decay", "truncate", "surrogate"):
            raise ValueError(f"{name!r} in flow {flow!r} needs a parameter ({name}:…); {VALID_FORMS}")
        else:
            raise ValueError(f"unknown flow part {part!r} in {flow!r}; {VALID_FORMS}")
    if mixing:
        if "alpha" not in mixing:
            given = ", ".join(f"{k}:" for k in mixing)
            raise ValueError(f"flow {flow!r} sets {given} but no zero | alpha:α | alpha:auto for it to apply to; {VALID_FORMS}")
        auto_only = [k for k in _AUTO_ONLY if k in mixing]
        if auto_only and mixing["alpha"] != "auto":
            raise ValueError(f"flow {flow!r}: {', '.join(auto_only)} only apply to alpha:auto (a fixed α reads no "
                             f"bias bound); drop them or write alpha:auto; {VALID_FORMS}")
        fields["mixing"] = Mixing(**mixing)
    return Flow(**fields)


def _set_once(fields: dict, key: str, value: Any, flow: str, part: str) -> None:
    if key in fields:
        if fields[key] == value:
            raise ValueError(f"flow {flow!r} repeats {part!r}: write each part once; {VALID_FORMS}")
        if key != "base":
            what = f"{key} twice"
        elif {fields[key], value} == {"input", "state"}:
            what = "two bases ('all' already stops both edges)"
        else:
            what = f"two bases, {fields[key]!r} and {value!r}: choose one"
        raise ValueError(f"flow {flow!r} gives {what}; {VALID_FORMS}")
    fields[key] = value


def _number(arg: str, what: str, kind: type, flow: str):
    try:
        return kind(arg)
    except ValueError:
        raise ValueError(f"{what} in flow {flow!r} is not a valid {kind.__name__}: {arg!r}; {VALID_FORMS}") from None


def combine_gradients(base: str, g_none, g_input, xp):
    """Combine one leaf of the ``none`` and ``input`` gradients into the ``base`` flow's leaf.

    ``combined``:    where(sign g_input == sign g_none, g_input, 0)
    ``directional``: sign(g_none) ⊙ |g_input|

    A non-finite component of either gradient stays non-finite in the result (NaN for ``combined``,
    whose sign test alone would turn it into a silent 0 and hide a diverging gradient from the
    trainers' non-finite stop). ``xp`` is the array namespace of the leaves (``jax.numpy``,
    ``torch`` or ``numpy``); they spell these operations the same way.
    """
    if base == "combined":
        # 0·(g_none + g_input) is 0 where both are finite and NaN where either is not
        return xp.where(xp.sign(g_input) == xp.sign(g_none), g_input, xp.zeros_like(g_input)) + 0 * (g_none + g_input)
    if base == "directional":
        return xp.sign(g_none) * xp.abs(g_input)
    raise ValueError(f"flow base {base!r} does not combine gradients; combining flows: {COMBINING}")
