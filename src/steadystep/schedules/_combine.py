"""Combinators: sequence (``a >> b``), scaling (``s * k``), minimum, clamp, repeat."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import _check as check
from ._base import Array, Namespace, Schedule, by_interval, floor_div, power_of


def _set(obj: Schedule, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _schedules(name: str, value: Any, minimum: int) -> tuple[Schedule, ...]:
    if isinstance(value, (str, bytes, Schedule)) or not isinstance(value, Iterable):
        raise TypeError(
            f"Argument `{name}` must be a list of schedules. Received: {name}={value!r}"
        )
    parts = tuple(value)
    for i, part in enumerate(parts):
        if not isinstance(part, Schedule):
            raise TypeError(
                f"Argument `{name}[{i}]` must be a schedule. Received: {name}[{i}]={part!r} "
                f"of type {type(part).__name__}"
            )
    if len(parts) < minimum:
        raise check.fail(name, f"a list of at least {minimum} schedules", list(parts))
    return parts


def _schedule(name: str, value: Any) -> Schedule:
    if not isinstance(value, Schedule):
        raise TypeError(
            f"Argument `{name}` must be a schedule. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    return value


def _natural_boundaries(parts: tuple[Schedule, ...]) -> tuple[float, ...]:
    bounds: list[float] = []
    total: float = 0
    for i, part in enumerate(parts[:-1]):
        if part.length is None:
            raise ValueError(
                f"Argument `parts[{i}]` must have a length to be followed by another part "
                f"(give `boundaries`, or `steps=` to the part). Received: parts[{i}]={part!r}"
            )
        total += part.length
        bounds.append(total)
    return tuple(bounds)


@dataclass(frozen=True, repr=False)
class Sequence(Schedule, spec_name="sequence"):
    """Parts one after another, each on its own clock restarting at 0 at its boundary.

    ``a >> b`` is ``sequence([a, b])``: ``b`` starts where ``a``'s length ends. Give
    ``boundaries`` (``len(parts) - 1`` increasing steps) to cut parts elsewhere, for example
    after an open-ended part.

    >>> s = linear(0.0, 1.0, steps=2) >> cosine(1.0, 0.0, steps=2)
    >>> [round(s(t), 12) for t in range(5)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    >>> sequence([exponential(1.0, 0.5, every=1), constant(0.1)], boundaries=[3])(5)
    0.1
    """

    parts: tuple[Schedule, ...]
    boundaries: tuple[float, ...] | None = None
    positional = ("parts", "boundaries")

    def __post_init__(self) -> None:
        parts = _schedules("parts", self.parts, 2)
        if self.boundaries is None:
            bounds = _natural_boundaries(parts)
        else:
            bounds = check.numbers_tuple("boundaries", self.boundaries)
            if len(bounds) != len(parts) - 1:
                raise ValueError(
                    f"Argument `boundaries` must have len(parts) - 1 = {len(parts) - 1} entries. "
                    f"Received: boundaries={list(bounds)!r} for {len(parts)} parts"
                )
            check.increasing("boundaries", bounds)
            if bounds[0] <= 0:
                raise check.fail("boundaries[0]", "> 0", bounds[0])
        if _is_natural(parts, bounds):
            # canonical form: a chain of `>>` is flat, so repr/parse round-trips to an equal value
            flat: list[Schedule] = []
            for part in parts:
                nested = isinstance(part, Sequence) and part.natural
                flat.extend(part.parts if nested else (part,))  # type: ignore[attr-defined]
            parts = tuple(flat)
            bounds = _natural_boundaries(parts)
        _set(self, "parts", parts)
        _set(self, "boundaries", bounds)

    @property
    def natural(self) -> bool:
        """True when every boundary is where the part before it ends (a plain ``>>`` chain)."""
        assert self.boundaries is not None
        return _is_natural(self.parts, self.boundaries)

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return 2 if self.natural else 0

    @property
    def length(self) -> float | None:
        last = self.parts[-1].length
        assert self.boundaries is not None
        return None if last is None else self.boundaries[-1] + last

    def _eval(self, t: Array, xp: Namespace) -> Array:
        assert self.boundaries is not None
        starts = (0.0, *self.boundaries)

        def branch(i: int) -> Callable[[Array], Array]:
            part, begin = self.parts[i], starts[i]
            return lambda u: part._eval(xp.maximum(u - begin, 0.0), xp)

        return by_interval(t, xp, self.boundaries, [branch(i) for i in range(len(self.parts))])


def _is_natural(parts: tuple[Schedule, ...], bounds: tuple[float, ...]) -> bool:
    try:
        return _natural_boundaries(parts) == bounds
    except ValueError:
        return False


def sequence(parts: Iterable[Schedule], boundaries: Iterable[float] | None = None) -> Sequence:
    """Parts one after another; see :class:`Sequence`."""
    return Sequence(tuple(parts), None if boundaries is None else tuple(boundaries))


@dataclass(frozen=True, repr=False)
class Scale(Schedule, spec_name="scale"):
    """Values multiplied by ``factor``; written ``s * factor`` (or ``factor * s``).

    >>> (linear(1.0, 0.0, steps=10) * 0.5)(0)
    0.5
    """

    schedule: Schedule
    factor: float
    positional = ("schedule", "factor")
    precedence = 1

    def __post_init__(self) -> None:
        _schedule("schedule", self.schedule)
        _set(self, "factor", check.positive("factor", self.factor))

    @property
    def length(self) -> float | None:
        return self.schedule.length

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.schedule._eval(t, xp) * self.factor


@dataclass(frozen=True, repr=False)
class Elementwise(Schedule):
    r"""Base of the step-wise combinations of several schedules (not a schedule itself):
    at least two parts, long as the longest, values ``combine``\ d left to right."""

    parts: tuple[Schedule, ...]
    positional: ClassVar[tuple[str, ...]] = ("parts",)

    def __post_init__(self) -> None:
        _set(self, "parts", _schedules("parts", self.parts, 2))

    @property
    def length(self) -> float | None:
        lengths = [p.length for p in self.parts]
        return None if None in lengths else max(x for x in lengths if x is not None)

    def combine(self, a: Array, b: Array, xp: Namespace) -> Array:
        raise NotImplementedError

    def _eval(self, t: Array, xp: Namespace) -> Array:
        out = self.parts[0]._eval(t, xp)
        for part in self.parts[1:]:
            out = self.combine(out, part._eval(t, xp), xp)
        return out


@dataclass(frozen=True, repr=False)
class Minimum(Elementwise, spec_name="minimum"):
    """The smallest of several schedules at each step (Noam is a minimum of two power laws).

    >>> minimum([linear(0.0, 2.0, steps=2), constant(1.5)])(2)
    1.5
    """

    def combine(self, a: Array, b: Array, xp: Namespace) -> Array:
        return xp.minimum(a, b)


def minimum(parts: Iterable[Schedule]) -> Minimum:
    """The smallest of several schedules at each step; see :class:`Minimum`."""
    return Minimum(tuple(parts))


@dataclass(frozen=True, repr=False)
class Product(Elementwise, spec_name="product"):
    """The product of several schedules at each step: an LR schedule times a warmup factor
    (``pytorch_warmup``'s dampening), or a triangle times a decay.

    >>> product([linear(0.0, 1.0, steps=4), constant(2.0)])(2)
    1.0
    """

    def combine(self, a: Array, b: Array, xp: Namespace) -> Array:
        return a * b


def product(parts: Iterable[Schedule]) -> Product:
    """The product of several schedules at each step; see :class:`Product`."""
    return Product(tuple(parts))


@dataclass(frozen=True, repr=False)
class Clamp(Schedule, spec_name="clamp"):
    """Values kept within ``[lower, upper]``: a floor (min LR) and/or a ceiling.

    >>> clamp(linear(1.0, 0.0, steps=10), lower=0.2)(9)
    0.2
    """

    schedule: Schedule
    lower: float | None = None
    upper: float | None = None
    positional = ("schedule", "lower", "upper")

    def __post_init__(self) -> None:
        _schedule("schedule", self.schedule)
        if self.lower is None and self.upper is None:
            raise ValueError("clamp needs `lower`, `upper` or both. Received: neither")
        if self.lower is not None:
            _set(self, "lower", check.number("lower", self.lower))
        if self.upper is not None:
            _set(self, "upper", check.number("upper", self.upper))
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise check.fail("lower", f"<= upper ({self.upper!r})", self.lower)

    @property
    def length(self) -> float | None:
        return self.schedule.length

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return xp.clip(self.schedule._eval(t, xp), self.lower, self.upper)


clamp = Clamp


@dataclass(frozen=True, repr=False)
class Repeat(Schedule, spec_name="repeat"):
    """A finite schedule restarted end to end (warm restarts, SGDR).

    Cycle ``i`` (from 0) lasts ``L * stretch**i`` steps (``L`` the schedule's length; the
    schedule's clock runs ``stretch**i`` times slower) and its values are multiplied by
    ``decay**i``. ``times`` limits the cycles; after the last one the final value holds. Put a
    :func:`warmup` around the repeat to warm up on the first cycle only.

    >>> s = repeat(linear(1.0, 0.0, steps=2), decay=0.5)
    >>> [s(t) for t in range(6)]
    [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]

    References: Loshchilov & Hutter 2017 (SGDR, ``T_mult`` is ``stretch``); timm's
    ``cycle_decay``/``cycle_mul`` (``timm/scheduler/cosine_lr.py``).
    """

    schedule: Schedule
    times: int | None = None
    decay: float = 1.0
    stretch: float = 1.0
    positional = ("schedule", "times", "decay", "stretch")

    def __post_init__(self) -> None:
        _schedule("schedule", self.schedule)
        if self.schedule.length is None:
            raise ValueError(
                "Argument `schedule` must have a finite length to repeat. "
                f"Received: schedule={self.schedule!r}"
            )
        if self.times is not None:
            _set(self, "times", check.integer("times", self.times, minimum=1))
        _set(self, "decay", check.positive("decay", self.decay))
        stretch = check.number("stretch", self.stretch)
        if stretch < 1:
            raise check.fail("stretch", ">= 1", self.stretch)
        _set(self, "stretch", stretch)

    def _cycle_start(self, i: Array) -> Array:
        period = self.schedule.length
        assert period is not None
        r = self.stretch
        return period * i if r == 1 else period * (r**i - 1.0) / (r - 1.0)

    @property
    def length(self) -> float | None:
        if self.times is None:
            return None
        return float(self._cycle_start(self.times))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        period = self.schedule.length
        assert period is not None
        r = self.stretch
        if r == 1:
            i = floor_div(t, period, xp)
        else:
            i = xp.floor(xp.log(1.0 + t * (r - 1.0) / period) / math.log(r))
            # the log may land a hair off an integer at a cycle boundary: settle it exactly
            i = xp.where(t >= self._cycle_start(i + 1.0), i + 1.0, i)
            i = xp.where(t < self._cycle_start(i), i - 1.0, i)
        if self.times is not None:
            i = xp.minimum(i, float(self.times - 1))
        local = (t - self._cycle_start(i)) / r**i
        value = self.schedule._eval(local, xp)
        return value if self.decay == 1 else value * power_of(self.decay, i, xp)


repeat = Repeat
