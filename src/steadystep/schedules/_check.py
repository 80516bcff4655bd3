"""Argument validation shared by every schedule constructor.

Messages follow one template so a user always sees the argument and the value they passed::

    Argument `steps` must be > 0. Received: steps=-5
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any


def fail(name: str, requirement: str, value: Any) -> ValueError:
    return ValueError(f"Argument `{name}` must be {requirement}. Received: {name}={_show(value)}")


def _show(value: Any) -> str:
    # repr of an int over 4300 digits raises ValueError (CPython's int/str conversion limit)
    if isinstance(value, int) and value.bit_length() > 1000:
        return f"<{'-' if value < 0 else ''}int of {value.bit_length()} bits>"
    return repr(value)


def number(name: str, value: Any) -> float:
    """A finite real number (bool excluded); NumPy scalars become Python numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a real number. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    out: float = int(value) if isinstance(value, numbers.Integral) else float(value)
    try:
        finite = math.isfinite(out)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise fail(name, "finite", value)
    if isinstance(out, int) and abs(out) >= 2**31:
        # JAX turns a Python int constant into int32 and overflows; a float64 is exact to 2**53
        out = float(out)
    return out


def positive(name: str, value: Any) -> float:
    out = number(name, value)
    if out <= 0:
        raise fail(name, "> 0", value)
    return out


def nonnegative(name: str, value: Any) -> float:
    out = number(name, value)
    if out < 0:
        raise fail(name, ">= 0", value)
    return out


def length(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A number of steps: > 0 (or >= 0), finite. Integers stay integers."""
    return nonnegative(name, value) if allow_zero else positive(name, value)


def integer(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    if value < minimum:
        raise fail(name, f">= {minimum}", value)
    return int(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Argument `{name}` must be True or False. Received: {name}={value!r}")
    return value


def choice(name: str, value: Any, options: Iterable[str]) -> str:
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"Argument `{name}` must be one of {listed}. Received: {name}={value!r}")
    return value


def numbers_tuple(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"Argument `{name}` must be a list of numbers. Received: {name}={value!r}")
    return tuple(number(f"{name}[{i}]", v) for i, v in enumerate(value))


def increasing(name: str, values: tuple[float, ...]) -> None:
    for i in range(1, len(values)):
        if not values[i] > values[i - 1]:
            raise fail(name, "strictly increasing", list(values))
