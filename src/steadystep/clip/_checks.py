"""Argument checks shared by the clipping layers (Keras-style messages)."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

__all__ = ["check_int", "check_norm_type", "check_positive", "is_python_number"]

#: counts live in int32 device tensors
INT32_MAX = 2**31 - 1


def is_python_number(value: Any) -> bool:
    """True for a plain Python/NumPy real number (not a bool, not an array)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float range: as good as infinite
        return math.inf


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """Return ``float(value)`` after checking it is a real number ``> 0``.

    NaN and (unless ``allow_inf``) infinity are rejected, so a typo never turns
    into "clip nothing" or "zero every gradient" silently.
    """
    if not is_python_number(value):
        raise TypeError(
            f"Argument `{name}` must be a real number. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    number = _as_float(value)
    if math.isnan(number) or not number > 0 or (math.isinf(number) and not allow_inf):
        bound = "> 0" if allow_inf else "> 0 and finite"
        raise ValueError(f"Argument `{name}` must be {bound}. Received: {name}={value!r}")
    return number


def check_int(name: str, value: Any, minimum: int, maximum: int = INT32_MAX) -> int:
    """Return ``value`` after checking it is an int (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(
            f"Argument `{name}` must be an int in [{minimum}, {maximum}]. "
            f"Received: {name}={value!r}"
        )
    return value


def check_finite(name: str, value: Any, minimum: float = -math.inf) -> float:
    """Return ``float(value)`` after checking it is a finite real number ``>= minimum``."""
    if not is_python_number(value):
        raise TypeError(
            f"Argument `{name}` must be a real number. Received: {name}={value!r} "
            f"of type {type(value).__name__}"
        )
    number = _as_float(value)
    if not math.isfinite(number) or number < minimum:
        raise ValueError(
            f"Argument `{name}` must be finite and >= {minimum}. Received: {name}={value!r}"
        )
    return number


def check_norm_type(value: Any) -> float:
    """Return the p of a p-norm (``p > 0`` or ``inf``); ``'inf'`` is accepted as in torch."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return math.inf
    if not is_python_number(value):
        raise TypeError(
            "Argument `norm_type` must be a number > 0 or 'inf'. "
            f"Received: norm_type={value!r} of type {type(value).__name__}"
        )
    number = _as_float(value)
    if math.isnan(number) or not number > 0:
        raise ValueError(f"Argument `norm_type` must be > 0 or inf. Received: norm_type={value!r}")
    return number
