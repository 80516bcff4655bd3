"""Argument validation shared by every layer (schedules, clipping, adapters).

Messages follow one template so a user always sees the argument and the value they passed::

    Argument `steps` must be > 0. Received: steps=-5

The module is pure Python (no NumPy, no framework), so both the schedule and the clipping
layers sit on top of it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

#: counts kept in int32 device tensors (clipper histories, step counters)
INT32_MAX = 2**31 - 1


def fail(name: str, requirement: str, value: Any) -> ValueError:
    return ValueError(f"Argument `{name}` must be {requirement}. Received: {name}={_show(value)}")


def _show(value: Any) -> str:
    # repr of an int over 4300 digits raises ValueError (CPython's int/str conversion limit)
    if isinstance(value, int) and value.bit_length() > 1000:
        return f"<{'-' if value < 0 else ''}int of {value.bit_length()} bits>"
    return repr(value)


def is_python_number(value: Any) -> bool:
    """True for a plain Python/NumPy real number (not a bool, not an array)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _real(name: str, value: Any) -> float:
    """A Python/NumPy real (bool excluded), as a Python int or float; ints too large for a
    float stay ints (callers compare them, never convert them)."""
    if not is_python_number(value):
        raise TypeError(
            f"Argument `{name}` must be a real number. Received: {name}={_show(value)} "
            f"of type {type(value).__name__}"
        )
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _is_finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def number(name: str, value: Any) -> float:
    """A finite real number (bool excluded); NumPy scalars become Python numbers."""
    out = _real(name, value)
    if not _is_finite(out):
        raise fail(name, "finite", value)
    if isinstance(out, int) and abs(out) >= 2**31:
        # JAX turns a Python int constant into int32 and overflows; a float64 is exact to 2**53
        out = float(out)
    return out


def positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """A real number ``> 0``; finite unless ``allow_inf`` (NaN is always refused), so a typo
    never turns into "clip nothing" or "zero every gradient" silently."""
    if allow_inf:
        out = _real(name, value)
        if math.isnan(out) or not out > 0:
            raise fail(name, "> 0", value)
        return out if _is_finite(out) else math.inf
    out = number(name, value)
    if out <= 0:
        raise fail(name, "> 0", value)
    return out


def nonnegative(name: str, value: Any) -> float:
    out = number(name, value)
    if out < 0:
        raise fail(name, ">= 0", value)
    return out


def at_least(name: str, value: Any, minimum: float) -> float:
    """A finite real number ``>= minimum``."""
    out = number(name, value)
    if out < minimum:
        raise fail(name, f">= {minimum}", value)
    return out


def length(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A number of steps: > 0 (or >= 0), finite. Integers stay integers."""
    return nonnegative(name, value) if allow_zero else positive(name, value)


def integer(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """An int (bool excluded) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be an integer. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    out = int(value)
    if out < minimum:
        raise fail(name, f">= {minimum}", value)
    if maximum is not None and out > maximum:
        raise fail(name, f"<= {maximum}", value)
    return out


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


def norm_type(value: Any) -> float:
    """The p of a p-norm (``p > 0`` or ``inf``); ``'inf'`` is accepted as in torch."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return math.inf
    if not is_python_number(value):
        raise TypeError(
            "Argument `norm_type` must be a number > 0 or 'inf'. "
            f"Received: norm_type={value!r} of type {type(value).__name__}"
        )
    return float(positive("norm_type", value, allow_inf=True))
