"""Primitive schedules: closed-form curves of the step.

Each primitive's docstring gives its formula with ``x = min(t / steps, 1)`` where it has a length;
after its length a finite primitive holds its final value. Plots: ``docs/schedules.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import _check as check
from ._base import (
    Array,
    Namespace,
    Schedule,
    ceil_div,
    floor_div,
    is_numpy,
    lerp,
    power_of,
)


def _set(obj: Schedule, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _fraction(t: Array, steps: float, xp: Namespace) -> Array:
    """``min(t / steps, 1)``, exactly 1 from ``t = steps`` on every backend."""
    x = xp.clip(t / steps, 0.0, 1.0)
    # NumPy divides correctly rounded; XLA may multiply by a rounded reciprocal (141/141 < 1)
    return x if is_numpy(xp) else xp.where(t >= steps, 1.0, x)


@dataclass(frozen=True, repr=False)
class Constant(Schedule, spec_name="constant"):
    """``value`` at every step; ``steps`` gives it a length for use inside a sequence.

    >>> constant(0.1)(5)
    0.1
    >>> (constant(0.1, steps=2) >> constant(0.2))(2)
    0.2
    """

    value: float
    steps: float | None = None
    positional = ("value", "steps")

    def __post_init__(self) -> None:
        _set(self, "value", check.number("value", self.value))
        if self.steps is not None:
            _set(self, "steps", check.length("steps", self.steps))

    @property
    def length(self) -> float | None:
        return self.steps

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return xp.zeros_like(t) + self.value


@dataclass(frozen=True, repr=False)
class Span(Schedule):
    """Base of the curves that go from ``start`` to ``end`` over ``steps`` (not a schedule itself).

    Holds the three fields, their checks and the length; a subclass adds its own fields (checked
    after ``super().__post_init__()``) and its ``_eval``. ``is_decay`` subclasses need
    ``end <= start``.
    """

    start: float
    end: float
    steps: float
    positional: ClassVar[tuple[str, ...]] = ("start", "end", "steps")
    is_decay: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _set(self, "start", check.number("start", self.start))
        _set(self, "end", check.number("end", self.end))
        _set(self, "steps", check.length("steps", self.steps))
        if self.is_decay and self.end > self.start:
            raise ValueError(
                f"Argument `end` must be <= start for a decay. "
                f"Received: end={self.end!r} (start={self.start!r})"
            )

    @property
    def length(self) -> float | None:
        return self.steps


@dataclass(frozen=True, repr=False)
class Linear(Span, spec_name="linear"):
    """Straight line from ``start`` to ``end`` over ``steps``: ``start + (end - start) * x``.

    Either direction (a ramp up or a decay). Exact at both ends and monotone.

    >>> s = linear(1.0, 0.0, steps=4)
    >>> [s(t) for t in range(6)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return lerp(self.start, self.end, _fraction(t, self.steps, xp), xp)


@dataclass(frozen=True, repr=False)
class Cosine(Span, spec_name="cosine"):
    """Half a cosine from ``start`` to ``end`` over ``steps``.

    ``w = (1 - cos(pi * x)) / 2``; value ``start + (end - start) * w``. ``end`` is the floor
    (``eta_min``). Either direction is allowed (one-cycle's rising phase is a cosine upward).

    >>> s = cosine(1.0, 0.0, steps=2)
    >>> [round(s(t), 12) for t in range(4)]
    [1.0, 0.5, 0.0, 0.0]

    References: Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts".
    """

    def _eval(self, t: Array, xp: Namespace) -> Array:
        w = 0.5 * (1.0 - xp.cos(math.pi * _fraction(t, self.steps, xp)))
        return lerp(self.start, self.end, w, xp)


@dataclass(frozen=True, repr=False)
class Polynomial(Span, spec_name="polynomial"):
    """Exactly ``tf.train.polynomial_decay(start, t, steps, end, power, cycle)``.

    Without ``cycle``: ``p = min(t, steps) / steps``; with ``cycle`` the horizon grows to
    ``steps * ceil(t / steps)`` (``steps`` itself at ``t = 0``). Value
    ``(start - end) * (1 - p) ** power + end``.

    >>> s = polynomial(1.0, 0.0, steps=10, power=2.0)
    >>> s(5), s(20)
    (0.25, 0.0)
    >>> c = polynomial(1.0, 0.0, steps=10, cycle=True)
    >>> c(10), c(15)  # second cycle decays over 20 steps
    (0.0, 0.25)

    References: TensorFlow 1 ``tensorflow/python/training/learning_rate_decay.py``
    (``polynomial_decay``); the seed write-up ``000`` of this project.
    """

    power: float = 1.0
    cycle: bool = False
    positional = ("start", "end", "steps", "power", "cycle")
    is_decay = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _set(self, "power", check.positive("power", self.power))
        check.flag("cycle", self.cycle)

    @property
    def length(self) -> float | None:
        return None if self.cycle else self.steps

    def _eval(self, t: Array, xp: Namespace) -> Array:
        if self.cycle:
            horizon = self.steps * xp.maximum(ceil_div(t, self.steps, xp), 1.0)
            p = t / horizon
        else:
            p = _fraction(t, self.steps, xp)
        p = xp.clip(p, 0.0, 1.0)  # XLA may divide with a rounded reciprocal: stay in [0, 1]
        return (self.start - self.end) * (1.0 - p) ** self.power + self.end


@dataclass(frozen=True, repr=False)
class OneMinusSqrt(Span, spec_name="one_minus_sqrt"):
    """The "1-sqrt" cooldown: ``start + (end - start) * sqrt(x)`` over ``steps``.

    >>> s = one_minus_sqrt(1.0, 0.0, steps=4)
    >>> s(1), s(4)
    (0.5, 0.0)

    References: Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training beyond Fixed
    Training Durations" (section 3: the 1-sqrt cooldown of a WSD schedule).
    """

    is_decay = True

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return lerp(self.start, self.end, xp.sqrt(_fraction(t, self.steps, xp)), xp)


@dataclass(frozen=True, repr=False)
class Exponential(Schedule, spec_name="exponential"):
    """``start * rate ** (t / every)``, the exponent floored with ``staircase``, clamped at ``end``.

    ``end`` is a floor when ``rate < 1`` and a ceiling when ``rate > 1``; ``None`` means no clamp.
    Same as ``tf.train.exponential_decay(start, t, every, rate, staircase)``.

    >>> s = exponential(1.0, rate=0.5, every=10)
    >>> s(10), s(5) == 0.5 ** 0.5
    (0.5, True)
    >>> exponential(1.0, rate=0.5, every=10, staircase=True, end=0.3)(25)
    0.3
    """

    start: float
    rate: float
    every: float
    staircase: bool = False
    end: float | None = None
    positional = ("start", "rate", "every", "staircase", "end")

    def __post_init__(self) -> None:
        _set(self, "start", check.positive("start", self.start))
        _set(self, "rate", check.positive("rate", self.rate))
        _set(self, "every", check.length("every", self.every))
        check.flag("staircase", self.staircase)
        if self.end is not None:
            _set(self, "end", check.nonnegative("end", self.end))
            if (self.rate < 1 and self.end > self.start) or (
                self.rate > 1 and self.end < self.start
            ):
                side = "<= start when rate < 1" if self.rate < 1 else ">= start when rate > 1"
                raise check.fail("end", side, self.end)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        p = floor_div(t, self.every, xp) if self.staircase else t / self.every
        if self.end is not None and self.rate > 1:
            # stop the exponent just past the ceiling: `rate ** p` would overflow (and warn)
            # long before t reaches 1e12, although the result is the ceiling anyway
            p = xp.minimum(p, math.log(self.end / self.start) / math.log(self.rate) + 2.0)
        value = self.start * power_of(self.rate, p, xp)
        if self.end is None:
            return value
        return xp.maximum(value, self.end) if self.rate < 1 else xp.minimum(value, self.end)


@dataclass(frozen=True, repr=False)
class InverseSqrt(Schedule, spec_name="inverse_sqrt"):
    """``start * sqrt(timescale / (t + timescale))``: ``start`` at t = 0, then ~ ``1/sqrt(t)``.

    After a prefix warmup of ``W`` steps with ``timescale=W`` this is fairseq's and transformers'
    ``inverse_sqrt`` (``lr * sqrt(W / t)`` on the absolute clock).

    >>> inverse_sqrt(1.0, timescale=100)(300)
    0.5
    """

    start: float
    timescale: float
    positional = ("start", "timescale")

    def __post_init__(self) -> None:
        _set(self, "start", check.positive("start", self.start))
        _set(self, "timescale", check.positive("timescale", self.timescale))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.start * xp.sqrt(self.timescale / (t + self.timescale))


@dataclass(frozen=True, repr=False)
class Power(Schedule, spec_name="power"):
    """A power law ``scale * (t + offset) ** exponent`` (``offset > 0`` if ``exponent < 0``).

    The building block of Noam-style schedules (see :func:`steadystep.presets.noam`).

    >>> power(2.0, exponent=-1.0, offset=1.0)(3)
    0.5
    """

    scale: float
    exponent: float
    offset: float = 0.0
    positional = ("scale", "exponent", "offset")

    def __post_init__(self) -> None:
        _set(self, "scale", check.positive("scale", self.scale))
        _set(self, "exponent", check.number("exponent", self.exponent))
        _set(self, "offset", check.nonnegative("offset", self.offset))
        if self.exponent < 0 and self.offset == 0:
            raise check.fail("offset", "> 0 when exponent < 0 (the value at t=0 is infinite)", 0)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.scale * (t + self.offset) ** self.exponent


@dataclass(frozen=True, repr=False)
class Piecewise(Schedule, spec_name="piecewise"):
    """Values changing at step boundaries.

    Constant (default): ``values[i]`` for ``boundaries[i-1] <= t < boundaries[i]``, so
    ``len(values) == len(boundaries) + 1``. With ``interpolate=True`` the pairs
    ``(boundaries[i], values[i])`` are knots joined by straight lines, held flat outside them
    (``len(values) == len(boundaries)``).

    Note the step convention: boundary ``100`` means the 101st update (``t = 100``) is the first
    to use the new value; TF/Keras ``PiecewiseConstantDecay`` switches one update later.

    >>> s = piecewise([10, 20], [1.0, 0.1, 0.01])
    >>> s(9), s(10), s(25)
    (1.0, 0.1, 0.01)
    >>> piecewise([0, 10], [0.0, 1.0], interpolate=True)(5)
    0.5
    """

    boundaries: tuple[float, ...]
    values: tuple[float, ...]
    interpolate: bool = False
    positional = ("boundaries", "values", "interpolate")

    def __post_init__(self) -> None:
        b = check.numbers_tuple("boundaries", self.boundaries)
        v = check.numbers_tuple("values", self.values)
        check.flag("interpolate", self.interpolate)
        if not b:
            raise check.fail("boundaries", "non-empty", list(b))
        check.increasing("boundaries", b)
        if b[0] < 0 or (b[0] == 0 and not self.interpolate):
            need = ">= 0" if self.interpolate else "> 0 (a boundary at 0 hides values[0])"
            raise check.fail("boundaries[0]", need, b[0])
        expected = len(b) if self.interpolate else len(b) + 1
        if len(v) != expected:
            rule = "len(boundaries)" if self.interpolate else "len(boundaries) + 1"
            raise ValueError(
                f"Argument `values` must have {rule} = {expected} entries. "
                f"Received: values={list(v)!r} ({len(v)} entries) for boundaries={list(b)!r}"
            )
        _set(self, "boundaries", b)
        _set(self, "values", v)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        b, v = self.boundaries, self.values
        if self.interpolate:
            out = xp.zeros_like(t) + v[0]
            for i in range(1, len(b)):
                x = xp.clip((t - b[i - 1]) / (b[i] - b[i - 1]), 0.0, 1.0)
                out = xp.where(t >= b[i - 1], lerp(v[i - 1], v[i], x, xp), out)
            return out
        if is_numpy(xp):
            import numpy as np

            return np.asarray(v)[np.searchsorted(np.asarray(b), t, side="right")]
        out = xp.zeros_like(t) + v[0]
        for i, boundary in enumerate(b):
            out = xp.where(t >= boundary, v[i + 1], out)
        return out


@dataclass(frozen=True, repr=False)
class Step(Schedule, spec_name="step"):
    """``start * rate ** floor(t / every)``: multiply by ``rate`` every ``every`` steps (StepLR).

    >>> s = step(1.0, every=10, rate=0.1)
    >>> s(9), s(10)
    (1.0, 0.1)
    """

    start: float
    every: float
    rate: float
    positional = ("start", "every", "rate")

    def __post_init__(self) -> None:
        _set(self, "start", check.positive("start", self.start))
        _set(self, "every", check.length("every", self.every))
        _set(self, "rate", check.positive("rate", self.rate))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.start * power_of(self.rate, floor_div(t, self.every, xp), xp)


@dataclass(frozen=True, repr=False)
class Multistep(Schedule, spec_name="multistep"):
    """``start * rate ** k`` where ``k`` counts the ``milestones <= t`` (MultiStepLR).

    >>> s = multistep(1.0, milestones=[10, 30], rate=0.5)
    >>> s(9), s(10), s(30)
    (1.0, 0.5, 0.25)
    """

    start: float
    milestones: tuple[float, ...]
    rate: float
    positional = ("start", "milestones", "rate")

    def __post_init__(self) -> None:
        _set(self, "start", check.positive("start", self.start))
        m = check.numbers_tuple("milestones", self.milestones)
        if not m:
            raise check.fail("milestones", "non-empty", list(m))
        check.increasing("milestones", m)
        if m[0] <= 0:
            raise check.fail("milestones[0]", "> 0", m[0])
        _set(self, "milestones", m)
        _set(self, "rate", check.positive("rate", self.rate))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        k = xp.zeros_like(t)
        for m in self.milestones:
            k = k + xp.astype(t >= m, t.dtype)
        return self.start * power_of(self.rate, k, xp)


# Public constructors: the classes themselves, under the names users write in spec text.
constant = Constant
linear = Linear
cosine = Cosine
polynomial = Polynomial
one_minus_sqrt = OneMinusSqrt
exponential = Exponential
inverse_sqrt = InverseSqrt
power = Power
piecewise = Piecewise
step = Step
multistep = Multistep
