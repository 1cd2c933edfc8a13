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

__all__ = ["Flow", "FlowLike", "parse_flow", "BASES", "COMBINING", "combine_gradients"]

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
    "examples: 'input', 'decay:0.9', 'input+decay:0.9', 'input+truncate:32', 'combined+truncate:16'"
)


@dataclasses.dataclass(frozen=True)
class Flow:
    """A parsed, immutable gradient flow.

    Attributes:
      base: one of ``BASES``; a flow given only as modifiers (``"decay:0.9"``) has base ``none``.
      decay: γ multiplying both k_phys and k_in (1.0: no decay).
      truncate: K, the period at which λ is reset to its local term (None: never).
    """

    base: str = "none"
    decay: float = 1.0
    truncate: int | None = None

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
        return tuple(dataclasses.replace(self, base=b) for b in _COMPONENTS)

    def cut_after(self, t: int) -> bool:
        """Whether λ_{t} is reset to its local term (x_t detached from the future), 1 ≤ t."""
        return self.truncate is not None and t % self.truncate == 0

    @property
    def name(self) -> str:
        """Canonical string form; ``parse_flow(flow.name) == flow``."""
        parts = []
        if self.base != "none" or (self.decay == 1.0 and self.truncate is None):
            parts.append(self.base)
        if self.decay != 1.0:
            parts.append(f"decay:{self.decay!r}")  # shortest repr that round-trips
        if self.truncate is not None:
            parts.append(f"truncate:{self.truncate}")
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
    text = flow.strip().lower()
    if not text:
        raise ValueError(f"empty flow string; {VALID_FORMS}")
    fields: dict[str, Any] = {}
    for part in text.split("+"):
        part = part.strip()
        name, sep, arg = part.partition(":")
        if name in BASES and not sep:
            _set_once(fields, "base", name, flow, part)
        elif name == "decay" and sep:
            _set_once(fields, "decay", _number(arg, "decay γ", float, flow), flow, part)
        elif name == "truncate" and sep:
            _set_once(fields, "truncate", _number(arg, "truncate K", int, flow), flow, part)
        elif name in ("decay", "truncate"):
            raise ValueError(f"{name!r} in flow {flow!r} needs a parameter ({name}:…); {VALID_FORMS}")
        else:
            raise ValueError(f"unknown flow part {part!r} in {flow!r}; {VALID_FORMS}")
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
