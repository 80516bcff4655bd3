"""Warmup: a ramp from ``start`` up to a schedule's first value, before or over its clock."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _check as check
from ._base import Array, Namespace, Schedule, by_interval, lerp, power_of

SHAPES = ("linear", "cosine", "exponential")


def _set(obj: Schedule, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, repr=False)
class Warmup(Schedule, spec_name="warmup"):
    """Ramp from ``start`` to the schedule's peak ``P = schedule(0)`` over the first ``steps``.

    With ``x = t / steps`` during warmup (``t < steps``) the value is

    - ``"linear"``: ``start + (P - start) * x``
    - ``"cosine"``: the same with ``x`` replaced by ``(1 - cos(pi * x)) / 2``
    - ``"exponential"``: ``start * (P / start) ** x`` (geometric; needs ``start > 0``)

    Afterwards, by default (prefix form) the wrapped schedule runs on its own clock from 0:
    ``schedule(t - steps)``, so a decay of ``n`` steps ends at ``steps + n``. With
    ``overlay=True`` the schedule keeps the absolute clock, ``schedule(t)``: the warmup replaces
    its first ``steps`` values (BERT's and timm's form; the decay's length includes the warmup).

    With the default ``start=0`` the first update has LR 0, as in the TF/BERT recipe
    (``init_lr * step / warmup_steps``). ``steps=0`` means no warmup.

    >>> s = warmup(constant(1.0), steps=4)
    >>> [s(t) for t in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    >>> bert_like = warmup(polynomial(1.0, 0.0, steps=10), steps=2, overlay=True)
    >>> [bert_like(t) for t in (0, 1, 2, 5)]
    [0.0, 0.5, 0.8, 0.5]

    References: Goyal et al. 2017 (gradual warmup); Devlin et al. 2019 (BERT
    ``optimization.py``, the seed write-up ``000``).
    """

    schedule: Schedule
    steps: float
    start: float = 0.0
    shape: str = "linear"
    overlay: bool = False
    positional = ("schedule", "steps", "start", "shape", "overlay")

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"Argument `schedule` must be a schedule. Received: schedule={self.schedule!r}"
            )
        _set(self, "steps", check.length("steps", self.steps, allow_zero=True))
        _set(self, "start", check.number("start", self.start))
        check.choice("shape", self.shape, SHAPES)
        check.flag("overlay", self.overlay)
        total = self.schedule.length
        if self.overlay and total is not None and self.steps > total:
            raise ValueError(
                f"Argument `steps` must be <= the schedule's length ({total!r}) when "
                f"overlay=True (the warmup would outlast the run). Received: steps={self.steps!r}"
            )
        with np.errstate(all="ignore"):  # an overflow is reported below, as a ValueError
            peak = float(self.schedule._eval(np.zeros(()), _numpy()))
        if not math.isfinite(peak):
            raise ValueError(
                "Argument `schedule` must have a finite value at step 0 (the warmup's peak). "
                f"Received: schedule={self.schedule!r}, whose value at step 0 is {peak!r}"
            )
        if self.shape == "exponential" and (self.start <= 0 or peak <= 0):
            raise check.fail(
                "start", f"> 0, as is the peak ({peak!r}), for shape='exponential'", self.start
            )
        _set(self, "_peak", peak)

    @property
    def peak(self) -> float:
        """The value warmup ramps up to: the wrapped schedule's value at its step 0."""
        peak: float = self._peak  # type: ignore[attr-defined]
        return peak

    @property
    def length(self) -> float | None:
        inner = self.schedule.length
        if inner is None or self.overlay:
            return inner
        return inner + self.steps

    def _eval(self, t: Array, xp: Namespace) -> Array:
        if self.steps == 0:
            return self.schedule._eval(t, xp)
        peak, start = self.peak, self.start

        def ramp(u: Array) -> Array:
            x = xp.clip(u / self.steps, 0.0, 1.0)
            if self.shape == "exponential":
                return start * power_of(peak / start, x, xp)
            if self.shape == "cosine":
                x = 0.5 * (1.0 - xp.cos(math.pi * x))
            return lerp(start, peak, x, xp)

        def after(u: Array) -> Array:
            return self.schedule._eval(u if self.overlay else xp.maximum(u - self.steps, 0.0), xp)

        return by_interval(t, xp, (self.steps,), [ramp, after])


def _numpy() -> Namespace:
    from ._base import _NUMPY

    return _NUMPY


warmup = Warmup


def untuned_warmup(schedule: Schedule, beta2: float = 0.999, *, overlay: bool = False) -> Warmup:
    """Linear warmup over ``2 / (1 - beta2)`` steps, the rule of thumb for Adam.

    >>> untuned_warmup(constant(1.0), beta2=0.999).steps
    2000

    References: Ma & Yarats 2021, "On the Adequacy of Untuned Warmup for Adaptive Optimization".
    """
    beta2 = check.number("beta2", beta2)
    if not 0 <= beta2 < 1:
        raise check.fail("beta2", "in [0, 1)", beta2)
    return Warmup(schedule, steps=round(2.0 / (1.0 - beta2)), overlay=overlay)
