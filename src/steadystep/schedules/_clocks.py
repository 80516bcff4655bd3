"""Clocks: schedules written in epochs, samples or tokens, converted to optimizer steps.

A schedule's step is always one optimizer update. A recipe given in other units says so
explicitly, which makes the per-epoch/per-step mix-up (seed write-up ``004``: ``warmup_steps=500``
meant in steps but stepped once per epoch) impossible to make silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _check as check
from ._base import Array, Namespace, Schedule, floor_div

#: samples or tokens per step: exact in float64, so ``t * count`` and ``length / count`` are
#: finite and non-zero
_COUNT_MAX = 2**53


def _set(obj: Schedule, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _inner(value: Any) -> Schedule:
    if not isinstance(value, Schedule):
        raise TypeError(f"Argument `schedule` must be a schedule. Received: schedule={value!r}")
    return value


@dataclass(frozen=True, repr=False)
class FromEpochs(Schedule, spec_name="from_epochs"):
    """A schedule whose step is an epoch, evaluated at ``t / steps_per_epoch`` epochs.

    ``discrete=True`` evaluates at whole epochs (``floor``): the value changes once per epoch,
    as when a torch scheduler is stepped at the end of each epoch.

    >>> s = from_epochs(linear(0.0, 1.0, steps=2), steps_per_epoch=10)
    >>> s(5), s(20)
    (0.25, 1.0)
    >>> from_epochs(linear(0.0, 1.0, steps=2), steps_per_epoch=10, discrete=True)(15)
    0.5
    """

    schedule: Schedule
    steps_per_epoch: float
    discrete: bool = False
    positional = ("schedule", "steps_per_epoch", "discrete")

    def __post_init__(self) -> None:
        _inner(self.schedule)
        _set(self, "steps_per_epoch", check.positive("steps_per_epoch", self.steps_per_epoch))
        check.flag("discrete", self.discrete)

    @property
    def length(self) -> float | None:
        inner = self.schedule.length
        return None if inner is None else inner * self.steps_per_epoch

    def _eval(self, t: Array, xp: Namespace) -> Array:
        if self.discrete:
            return self.schedule._eval(floor_div(t, self.steps_per_epoch, xp), xp)
        return self.schedule._eval(t / self.steps_per_epoch, xp)


@dataclass(frozen=True, repr=False)
class FromSamples(Schedule, spec_name="from_samples"):
    """A schedule whose step is a sample, evaluated at ``t * batch_size`` samples seen.

    >>> from_samples(linear(0.0, 1.0, steps=1000), batch_size=100)(5)
    0.5
    """

    schedule: Schedule
    batch_size: int
    positional = ("schedule", "batch_size")

    def __post_init__(self) -> None:
        _inner(self.schedule)
        _set(
            self,
            "batch_size",
            check.integer("batch_size", self.batch_size, minimum=1, maximum=_COUNT_MAX),
        )

    @property
    def length(self) -> float | None:
        inner = self.schedule.length
        return None if inner is None else inner / self.batch_size

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.schedule._eval(t * self.batch_size, xp)


@dataclass(frozen=True, repr=False)
class FromTokens(Schedule, spec_name="from_tokens"):
    """A schedule whose step is a token, evaluated at ``t * tokens_per_step`` tokens seen.

    >>> from_tokens(linear(0.0, 1.0, steps=4096), tokens_per_step=1024)(2)
    0.5
    """

    schedule: Schedule
    tokens_per_step: int
    positional = ("schedule", "tokens_per_step")

    def __post_init__(self) -> None:
        _inner(self.schedule)
        _set(
            self,
            "tokens_per_step",
            check.integer("tokens_per_step", self.tokens_per_step, minimum=1, maximum=_COUNT_MAX),
        )

    @property
    def length(self) -> float | None:
        inner = self.schedule.length
        return None if inner is None else inner / self.tokens_per_step

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.schedule._eval(t * self.tokens_per_step, xp)


from_epochs = FromEpochs
from_samples = FromSamples
from_tokens = FromTokens
