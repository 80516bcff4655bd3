"""Retime: a schedule read from ``offset`` on, at ``scale`` of its own speed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _check as check
from ._base import Array, Namespace, Schedule


@dataclass(frozen=True, repr=False)
class Retime(Schedule, spec_name="retime"):
    """``schedule(offset + t * scale)``: what is left of a schedule after ``offset``, run
    ``1 / scale`` times longer (``scale < 1``) or shorter (``scale > 1``).

    The tail that :func:`steadystep.presets.change_run_length` stretches over a new run length.

    >>> s = retime(linear(1.0, 0.0, steps=10), offset=5, scale=0.5)
    >>> s(0), s(5), s(10)
    (0.5, 0.25, 0.0)
    """

    schedule: Schedule
    offset: float = 0.0
    scale: float = 1.0
    positional = ("schedule", "offset", "scale")

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"Argument `schedule` must be a schedule. Received: schedule={self.schedule!r}"
            )
        _set(self, "offset", check.nonnegative("offset", self.offset))
        _set(self, "scale", check.positive("scale", self.scale))

    @property
    def length(self) -> float | None:
        inner = self.schedule.length
        return None if inner is None else max(inner - self.offset, 0.0) / self.scale

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.schedule._eval(self.offset + t * self.scale, xp)


def _set(obj: Schedule, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


retime = Retime
