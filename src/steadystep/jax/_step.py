"""Exact step counts for JAX: a two-word int32 counter and evaluation from the exact step.

Without ``jax_enable_x64`` JAX has no int64 or float64. A float32 holds every integer only up
to 2**24 (16.7M steps), and optax's int32 ``count`` saturates at 2**31 - 1. Evaluating
``schedule(count)`` directly therefore (a) freezes the schedule after 2**31 - 1 updates and
(b) rounds the step past 2**24 before any formula sees it: a boundary can move by a step, a
cycle of ``repeat`` drifts, ``polynomial(cycle=True)``'s ``1 - t / horizon`` loses every digit
near the end of a cycle.

Here the step is an exact integer ``n = hi * 2**24 + lo`` (two int32 words, ``0 <= lo < 2**24``,
good to 2**55 steps), and :func:`evaluate` reduces it with exact integer arithmetic before
converting to float:

* a finite schedule holds its end value after its length, so ``n`` is first clamped to it;
* ``sequence``/``warmup`` boundaries are compared exactly and each part gets its own exact local
  step (``n - boundary``);
* ``repeat`` (``stretch=1``), ``step``, ``exponential(staircase=True)``, ``multistep``,
  ``piecewise``, ``from_epochs(discrete=True)`` and ``polynomial(cycle=True)`` use exact integer
  division / comparisons (divisors up to 2**30); ``from_samples``/``from_tokens`` multiply the
  step exactly (factors up to 2**18);
* what is left is a smooth function of a float32 step (``inverse_sqrt``, ``power``,
  ``exponential`` without staircase, a very long finite part): the step is rounded once to
  float32 (relative error <= 2**-24), which moves the value by at most the same relative amount
  times the curve's log-slope.

So results equal the float64 NumPy reference within float32 rounding of the formula itself,
for every step a two-word counter can hold. Types the reducer does not know are evaluated at the
float32 step, which is exact below 2**24.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from steadystep.schedules import _clocks, _combine, _primitives, _warmup
from steadystep.schedules._base import Schedule

__all__ = ["StepCount", "evaluate", "step_count"]

Array = Any
_BITS = 24
_BASE = 1 << _BITS
_MASK = _BASE - 1
_MAX_STEP = 1 << 55  # hi stays below 2**31
_MAX_DIVISOR = 1 << 30  # long division keeps its remainder below 2**31


class StepCount(NamedTuple):
    """An exact step count ``hi * 2**24 + lo`` in two int32 words (a pytree; jit-safe).

    ``lo`` is always in ``[0, 2**24)`` and so is exactly a float32; ``hi`` counts the wraps.
    Counts up to 2**55 are exact. Build one with :func:`step_count`; advance with
    :meth:`next`.

    Examples:
        >>> c = step_count(2**31 - 1).next()
        >>> int(c), int(c.hi), int(c.lo)
        (2147483648, 128, 0)
    """

    hi: Array
    lo: Array

    def next(self) -> StepCount:
        """The count plus one (carrying into ``hi``), never saturating or wrapping."""
        lo = self.lo + 1
        carry = lo >> _BITS
        return StepCount(self.hi + carry, lo & _MASK)

    def as_float(self, dtype: Any = None) -> Array:
        """The count as a float (one rounding; exact below 2**24 in float32)."""
        dtype = _float_dtype() if dtype is None else dtype
        return self.hi.astype(dtype) * float(_BASE) + self.lo.astype(dtype)

    def __int__(self) -> int:  # host-side, for logging and tests
        return int(self.hi) * _BASE + int(self.lo)

    def __index__(self) -> int:
        return int(self)


def step_count(n: int = 0) -> StepCount:
    """A :class:`StepCount` holding the Python integer ``n`` (``0 <= n < 2**55``).

    Examples:
        >>> int(step_count(5).next())
        6
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"Argument `n` must be an integer. Received: n={n!r}")
    if not 0 <= n < _MAX_STEP:
        raise ValueError(f"Argument `n` must be in [0, 2**55). Received: n={n!r}")
    n = int(n)
    return StepCount(jnp.asarray(n >> _BITS, jnp.int32), jnp.asarray(n & _MASK, jnp.int32))


def _float_dtype() -> Any:
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32  # type: ignore[no-untyped-call]


def _as_count(step: Any) -> StepCount:
    if isinstance(step, StepCount):
        return step
    if isinstance(step, (bool, float)):
        raise TypeError(
            f"Argument `step` must be an integer step count. Received: step={step!r} "
            f"of type {type(step).__name__}"
        )
    if isinstance(step, numbers.Integral):
        if not 0 <= int(step) < _MAX_STEP:
            raise ValueError(f"Argument `step` must be in [0, 2**55). Received: step={step!r}")
        return step_count(int(step))
    if isinstance(step, np.ndarray) and step.dtype.kind in "iu":  # split on the host: int64-safe
        if step.size and (step.min() < 0 or step.max() >= _MAX_STEP):
            raise ValueError(
                "Argument `step` must be in [0, 2**55). "
                f"Received: step with values in [{step.min()!r}, {step.max()!r}]"
            )
        n = step.astype(np.int64)
        return StepCount(jnp.asarray(n >> _BITS, jnp.int32), jnp.asarray(n & _MASK, jnp.int32))
    dtype = getattr(step, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            "Argument `step` must be an integer step count (int, integer array or StepCount); "
            "a float step is ambiguous once it is past 2**24. "
            f"Received: step={step!r} with dtype {dtype}"
        )
    step = jnp.asarray(step)
    if not isinstance(step, jax.core.Tracer) and bool(jnp.any(step < 0)):
        raise ValueError(f"Argument `step` must be >= 0. Received: step={step!r}")
    if jnp.dtype(step.dtype).itemsize > 4 or jnp.issubdtype(step.dtype, jnp.unsignedinteger):
        hi = (step >> _BITS).astype(jnp.int32)
    else:
        hi = step.astype(jnp.int32) >> _BITS
    return StepCount(hi, (step & _MASK).astype(jnp.int32))


def evaluate(schedule: Schedule, step: Any) -> Array:
    """``schedule(step)`` as a JAX array, computed from the exact integer step.

    ``step`` is a Python int, an integer JAX/NumPy array (optax's int32 ``count``, any shape) or
    a :class:`StepCount`. The result is float32 (float64 under ``jax_enable_x64``) and is
    traceable under ``jax.jit``. See the module docstring for what is exact.

    Examples:
        >>> import steadystep as ss
        >>> s = ss.repeat(ss.linear(1.0, 0.0, steps=4))
        >>> float(evaluate(s, 2**40 + 2))  # float32(2**40 + 2) == 2**40: the cycle would slip
        0.5
        >>> float(s(jnp.asarray(2**26 + 2, dtype=jnp.float32)))  # the plain float32 path
        1.0
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"Argument `schedule` must be a steadystep schedule. Received: schedule={schedule!r}"
        )
    return _value(schedule, _as_count(step))


# -- exact integer arithmetic on StepCount against Python-int constants ---------------------------
def _whole(x: Any, limit: int = 1 << 53) -> int | None:
    """``x`` as a Python int if it is a whole number in ``[0, limit)``, else None."""
    if x is None or isinstance(x, bool):
        return None
    value = float(x)
    if not math.isfinite(value) or value != math.floor(value) or not 0 <= value < limit:
        return None
    return int(value)


def _const(n: int, like: StepCount) -> StepCount:
    hi = jnp.full_like(like.hi, n >> _BITS)
    return StepCount(hi, jnp.full_like(like.lo, n & _MASK))


def _ge(c: StepCount, n: int) -> Array:
    hi, lo = n >> _BITS, n & _MASK
    return (c.hi > hi) | ((c.hi == hi) & (c.lo >= lo))


def _select(cond: Array, a: StepCount, b: StepCount) -> StepCount:
    return StepCount(jnp.where(cond, a.hi, b.hi), jnp.where(cond, a.lo, b.lo))


def _min(c: StepCount, n: int) -> StepCount:
    return _select(_ge(c, n), _const(n, c), c)


def _sub(c: StepCount, n: int) -> StepCount:
    """``max(c - n, 0)``, exact."""
    lo = c.lo - (n & _MASK)
    borrow = (lo < 0).astype(jnp.int32)
    diff = StepCount(c.hi - (n >> _BITS) - borrow, lo + borrow * _BASE)
    return _select(_ge(c, n), diff, _const(0, c))


def _divmod(c: StepCount, p: int) -> tuple[StepCount, Array]:
    """Exact ``divmod(c, p)`` for ``1 <= p <= 2**30``: (quotient, int32 remainder)."""
    q_hi, r = c.hi // p, c.hi % p
    q_lo = jnp.zeros_like(c.lo)
    for bit in range(_BITS - 1, -1, -1):  # binary long division of r * 2**24 + lo
        r = r * 2 + ((c.lo >> bit) & 1)
        take = r >= p
        r = jnp.where(take, r - p, r)
        q_lo = q_lo * 2 + take.astype(jnp.int32)
    return StepCount(q_hi, q_lo), r


def _pow(base: float, exponent: Array) -> Array:
    """``base ** exponent`` without rounding ``base`` to float32 first (``log`` in float64):
    ``0.999`` as a float32 is off by 1.3e-8, which ``0.999 ** 16_000`` turns into 2e-4."""
    if base == 1:
        return jnp.ones_like(exponent)
    return jnp.exp(exponent * math.log(base))


def _mul(c: StepCount, k: int) -> StepCount:
    """Exact ``c * k`` for ``1 <= k <= 2**18`` (``lo`` split in 12-bit halves to stay in int32)."""
    high, low = c.lo >> 12, c.lo & 0xFFF
    a, b = high * k, low * k  # < 2**30 each
    lo = ((a & 0xFFF) << 12) + b  # < 2**24 + 2**30
    return StepCount(c.hi * k + (a >> 12) + (lo >> _BITS), lo & _MASK)


def _small(r: Array) -> StepCount:
    return StepCount(r >> _BITS, r & _MASK)


# -- reduction ------------------------------------------------------------------------------------
def _plain(s: Schedule, c: StepCount) -> Array:
    return s._eval(c.as_float(), jnp)


def _value(s: Schedule, c: StepCount) -> Array:
    length = s.length
    end = None if length is None else _whole(math.ceil(length))
    if end is not None and end <= _BASE:  # after its length a finite schedule holds its value
        return _plain(s, _min(c, end))
    reducer = _REDUCERS.get(type(s))
    out = None if reducer is None else reducer(s, c)
    if out is not None:
        return out
    return _plain(s, c if end is None else _min(c, end))


def _sequence(s: _combine.Sequence, c: StepCount) -> Array | None:
    assert s.boundaries is not None
    starts = [_whole(b) for b in s.boundaries]
    if None in starts:
        return None
    out = _value(s.parts[0], c)
    for part, begin in zip(s.parts[1:], starts, strict=True):
        assert begin is not None
        out = jnp.where(_ge(c, begin), _value(part, _sub(c, begin)), out)
    return out


def _warmup_value(s: _warmup.Warmup, c: StepCount) -> Array | None:
    steps = _whole(s.steps, _BASE + 1)
    if steps is None:
        return None
    after = _value(s.schedule, c if s.overlay else _sub(c, steps))
    if steps == 0:
        return after
    return jnp.where(_ge(c, steps), after, _plain(s, _min(c, steps)))


def _scale(s: _combine.Scale, c: StepCount) -> Array:
    return _value(s.schedule, c) * s.factor


def _clamp(s: _combine.Clamp, c: StepCount) -> Array:
    return jnp.clip(_value(s.schedule, c), s.lower, s.upper)


def _minimum(s: _combine.Minimum, c: StepCount) -> Array:
    out = _value(s.parts[0], c)
    for part in s.parts[1:]:
        out = jnp.minimum(out, _value(part, c))
    return out


def _repeat(s: _combine.Repeat, c: StepCount) -> Array | None:
    period = _whole(s.schedule.length, _MAX_DIVISOR + 1)
    if s.stretch != 1 or period is None or period == 0:
        return None
    q, r = _divmod(c, period)
    cycle, local = q.as_float(), _small(r)
    if s.times is not None:  # after the last cycle: its end value
        done = _ge(c, s.times * period)
        cycle = jnp.where(done, float(s.times - 1), cycle)
        local = _select(done, _const(period, c), local)
    value = _value(s.schedule, local)
    return value * _pow(s.decay, cycle)


def _step(s: _primitives.Step, c: StepCount) -> Array | None:
    every = _whole(s.every, _MAX_DIVISOR + 1)
    if every is None:
        return None
    return s.start * _pow(s.rate, _divmod(c, every)[0].as_float())


def _exponential(s: _primitives.Exponential, c: StepCount) -> Array | None:
    every = _whole(s.every, _MAX_DIVISOR + 1)
    if every is None:
        return None
    q, r = _divmod(c, every)
    p = q.as_float()
    if not s.staircase:
        p = p + r.astype(p.dtype) / every
    value = s.start * _pow(s.rate, p)
    if s.end is None:
        return value
    return jnp.maximum(value, s.end) if s.rate < 1 else jnp.minimum(value, s.end)


def _polynomial(s: _primitives.Polynomial, c: StepCount) -> Array | None:
    steps = _whole(s.steps, _MAX_DIVISOR + 1)
    if not s.cycle or steps is None:
        return None
    # horizon = steps * max(ceil(n / steps), 1); 1 - n / horizon = (horizon - n) / horizon
    q, r = _divmod(c, steps)
    cycles = jnp.maximum(q.as_float() + (r > 0), 1.0)
    left = jnp.where(r > 0, steps - r, jnp.where(_ge(c, 1), 0, steps)).astype(cycles.dtype)
    return (s.start - s.end) * (left / (cycles * steps)) ** s.power + s.end


def _multistep(s: _primitives.Multistep, c: StepCount) -> Array | None:
    marks = [_whole(m) for m in s.milestones]
    if None in marks:
        return None
    k = sum(_ge(c, m).astype(_float_dtype()) for m in marks if m is not None)
    return s.start * _pow(s.rate, k)


def _piecewise(s: _primitives.Piecewise, c: StepCount) -> Array | None:
    bounds = [_whole(b) for b in s.boundaries]
    if None in bounds:
        return None
    if s.interpolate:  # flat after the last knot
        last = bounds[-1]
        assert last is not None
        return _plain(s, _min(c, last)) if last <= _BASE else None
    out = jnp.full(c.lo.shape, s.values[0], _float_dtype())
    for b, v in zip(bounds, s.values[1:], strict=True):
        assert b is not None
        out = jnp.where(_ge(c, b), v, out)
    return out


def _from_epochs(s: _clocks.FromEpochs, c: StepCount) -> Array | None:
    per = _whole(s.steps_per_epoch, _MAX_DIVISOR + 1)
    if not s.discrete or per is None:
        return None
    return _value(s.schedule, _divmod(c, per)[0])


def _per_step(s: _clocks.FromSamples | _clocks.FromTokens, c: StepCount) -> Array | None:
    k = s.batch_size if isinstance(s, _clocks.FromSamples) else s.tokens_per_step
    if k > 1 << 18:
        return None
    return _value(s.schedule, _mul(c, k))


_REDUCERS: dict[type[Schedule], Callable[[Any, StepCount], Array | None]] = {
    _combine.Sequence: _sequence,
    _warmup.Warmup: _warmup_value,
    _combine.Scale: _scale,
    _combine.Clamp: _clamp,
    _combine.Minimum: _minimum,
    _combine.Repeat: _repeat,
    _primitives.Step: _step,
    _primitives.Exponential: _exponential,
    _primitives.Polynomial: _polynomial,
    _primitives.Multistep: _multistep,
    _primitives.Piecewise: _piecewise,
    _clocks.FromEpochs: _from_epochs,
    _clocks.FromSamples: _per_step,
    _clocks.FromTokens: _per_step,
}
