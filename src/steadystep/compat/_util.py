"""Helpers shared by the compat modules: argument checks and phase chaining."""

from __future__ import annotations

from typing import Any

from .. import _check as check
from ..schedules._base import Schedule
from ..schedules._combine import Sequence

fail = check.fail
number = check.number
positive = check.positive
nonnegative = check.nonnegative
integer = check.integer
flag = check.flag
choice = check.choice


def steps(name: str, value: Any, *, minimum: int = 0) -> int:
    """A whole number of steps (an int, or a float with no fraction, as configs often give)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check.integer(name, value, minimum=minimum)


def chain(phases: list[tuple[Schedule, float]], tail: Schedule) -> Schedule:
    """``phases`` (schedule, length) one after another, then ``tail``; empty phases are dropped.

    Each part runs on its own clock from 0 (a :class:`~steadystep.Sequence` with explicit
    boundaries, so a part may be open-ended or longer than its phase).
    """
    parts: list[Schedule] = []
    bounds: list[float] = []
    at: float = 0
    for part, length in phases:
        if length > 0:
            parts.append(part)
            at += length
            bounds.append(at)
    if not parts:
        return tail
    return Sequence((*parts, tail), tuple(bounds))
