"""optax's ``optax.schedules``, exactly, under their names and argument names.

optax calls a schedule with ``count`` before incrementing it, so ``s(t)`` is the value for
update ``t``, as in optax. Differences, all on nonsense input: where optax logs and silently
returns a constant (``transition_steps <= 0``, ``decay_rate == 0``, negative
``transition_begin``), these raise ``ValueError``; ``join_schedules`` checks that boundaries
and schedules line up.

>>> s = warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110)
>>> s(0), s(10), round(s(60), 12), s(110)  # decay_steps includes the warmup
(0.0, 1.0, 0.5, 0.0)

References: optax ``optax/schedules/_schedule.py`` and ``_join.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from collections.abc import Sequence as SequenceType
from typing import Any

from ..schedules import (
    Constant,
    Cosine,
    CosineWave,
    Cycles,
    Exponential,
    Linear,
    Piecewise,
    Polynomial,
    Schedule,
    Sequence,
)
from . import _util as u

__all__ = [
    "adaptive_grad_clip",
    "clip_by_block_rms",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "unitwise_norm",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]


def _delayed(body: Schedule, transition_begin: Any) -> Schedule:
    begin = u.steps("transition_begin", transition_begin)
    return u.chain([(Constant(body(0)), begin)], body)


def constant_schedule(value: float) -> Schedule:
    """``value`` at every step.

    >>> constant_schedule(0.1)(7)
    0.1
    """
    return Constant(u.number("value", value))


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """``(init - end) * (1 - c / T) ** power + end`` with ``c = clip(t - begin, 0, T)``.

    >>> s = polynomial_schedule(1.0, 0.0, power=2, transition_steps=10, transition_begin=5)
    >>> s(5), s(10), s(20)
    (1.0, 0.25, 0.0)
    """
    init, end = u.number("init_value", init_value), u.number("end_value", end_value)
    p = u.positive("power", power)
    n = u.steps("transition_steps", transition_steps, minimum=1)
    body: Schedule
    if p == 1:
        body = Linear(init, end, n)
    elif end <= init:
        body = Polynomial(init, end, n, p)
    else:  # rising: the same formula, which steadystep.polynomial keeps for decays
        body = Cycles(init, end, n, "poly", power=p)
    return _delayed(body, transition_begin)


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Straight line from ``init_value`` to ``end_value`` over ``transition_steps``, starting
    at ``transition_begin``.

    >>> linear_schedule(0.0, 1.0, 4)(1)
    0.25
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def _scales(boundaries_and_scales: Mapping[int, float] | None) -> list[tuple[int, float]]:
    if not boundaries_and_scales:
        return []
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            "Argument `boundaries_and_scales` must be a dict {step: scale}. "
            f"Received: boundaries_and_scales={boundaries_and_scales!r}"
        )
    out = []
    for b, s in sorted(boundaries_and_scales.items()):
        step = u.steps("boundaries_and_scales (a boundary)", b)
        scale = u.number(f"boundaries_and_scales[{b!r}]", s)
        if scale < 0:
            raise u.fail(f"boundaries_and_scales[{b!r}]", ">= 0", s)
        out.append((step, scale))
    return out


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """``init_value`` times every ``scale`` whose boundary is ``<= t``.

    >>> s = piecewise_constant_schedule(1.0, {10: 0.5, 20: 0.5})
    >>> s(9), s(10), s(20)
    (1.0, 0.5, 0.25)
    """
    value = u.number("init_value", init_value)
    bounds: list[int] = []
    values = [value]
    for b, scale in _scales(boundaries_and_scales):
        if b == 0:
            values[0] *= scale
        else:
            values.append(values[-1] * scale)
            bounds.append(b)
    return Piecewise(tuple(bounds), tuple(values)) if bounds else Constant(values[0])


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``init * decay_rate ** ((t - begin) / transition_steps)`` after ``transition_begin``
    (``floor`` with staircase), clipped at ``end_value`` (a floor when decaying).

    >>> exponential_decay(1.0, 10, 0.5, transition_begin=10)(30)
    0.25
    """
    body = Exponential(
        u.positive("init_value", init_value),
        u.positive("decay_rate", decay_rate),
        u.steps("transition_steps", transition_steps, minimum=1),
        u.flag("staircase", staircase),
        None if end_value is None else u.nonnegative("end_value", end_value),
    )
    return _delayed(body, transition_begin)


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """``init * ((1 - alpha) * ((1 + cos(pi * min(t, T) / T)) / 2) ** exponent + alpha)``.

    >>> cosine_decay_schedule(1.0, 10, alpha=0.1)(10)
    0.1
    """
    init = u.number("init_value", init_value)
    n = u.steps("decay_steps", decay_steps, minimum=1)
    a = u.number("alpha", alpha)
    e = u.positive("exponent", exponent)
    if e == 1:
        return Cosine(init, init * a, n)
    return Sequence((CosineWave(init, init * a, n, 0.5, e), Constant(init * a)), (n,))


def _interpolated(kind: str, knots: list[tuple[int, float]]) -> Schedule:
    curve: Any = Linear if kind == "linear" else Cosine
    parts: list[Schedule] = []
    for (b0, v0), (b1, v1) in itertools.pairwise(knots):
        if b1 > b0:
            parts.append(curve(v0, v1, b1 - b0))
    parts.append(Constant(knots[-1][1]))
    return Sequence(tuple(parts)) if len(parts) > 1 else parts[0]


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: float,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    """Knots at each boundary (values: running product of the scales), joined linearly or by
    half-cosines; the last value holds.

    >>> s = piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
    >>> round(s(2), 12), round(s(6), 12)
    (0.55, 0.0505)
    """
    kind = u.choice("interpolate_type", interpolate_type, ("linear", "cosine"))
    knots = [(0, u.number("init_value", init_value))]
    for b, scale in _scales(boundaries_and_scales):
        knots.append((b, knots[-1][1] * scale))
    return _interpolated(kind, knots)


def _onecycle_steps(transition_steps: Any) -> int:
    return u.steps("transition_steps", transition_steps, minimum=1)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """Linear one-cycle: up to ``peak_value`` at ``int(pct_start * T)``, back down at
    ``int(pct_final * T)``, then to ``init / final_div_factor`` at ``T``.

    >>> s = linear_onecycle_schedule(100, 1.0)
    >>> s(0), s(30), s(85), round(s(100), 12)
    (0.04, 1.0, 0.04, 4e-06)
    """
    n = _onecycle_steps(transition_steps)
    start, final = u.number("pct_start", pct_start), u.number("pct_final", pct_final)
    if not 0 <= start <= final <= 1:
        raise u.fail("pct_start", f"in [0, pct_final={final!r}] with pct_final <= 1", pct_start)
    div = u.positive("div_factor", div_factor)
    return piecewise_interpolate_schedule(
        "linear",
        u.number("peak_value", peak_value) / div,
        {
            int(start * n): div,
            int(final * n): 1.0 / div,
            n: 1.0 / u.positive("final_div_factor", final_div_factor),
        },
    )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """Cosine one-cycle: up to ``peak_value`` at ``int(pct_start * T)``, then down to
    ``peak / (div_factor * final_div_factor)`` at ``T``.

    >>> s = cosine_onecycle_schedule(100, 1.0)
    >>> s(0), s(30), s(100)
    (0.04, 1.0, 4e-06)
    """
    n = _onecycle_steps(transition_steps)
    pct = u.number("pct_start", pct_start)
    if not 0 <= pct <= 1:
        raise u.fail("pct_start", "in [0, 1]", pct_start)
    div = u.positive("div_factor", div_factor)
    final = u.positive("final_div_factor", final_div_factor)
    return piecewise_interpolate_schedule(
        "cosine",
        u.number("peak_value", peak_value) / div,
        {int(pct * n): div, n: 1.0 / (div * final)},
    )


def warmup_constant_schedule(init_value: float, peak_value: float, warmup_steps: int) -> Schedule:
    """Linear from ``init_value`` to ``peak_value`` over ``warmup_steps``, then constant.

    >>> warmup_constant_schedule(0.0, 1.0, 4)(2)
    0.5
    """
    return linear_schedule(init_value, peak_value, warmup_steps)


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """Linear warmup to ``peak_value``, then cosine decay to ``end_value``; ``decay_steps`` is
    the total length **including** the warmup (the cosine lasts ``decay_steps - warmup_steps``).
    """
    peak = u.number("peak_value", peak_value)
    w = u.steps("warmup_steps", warmup_steps)
    total = u.steps("decay_steps", decay_steps)
    if not total > w:
        raise u.fail("decay_steps", f"> warmup_steps ({w}); it includes the warmup", decay_steps)
    end = u.number("end_value", end_value)
    alpha = 0.0 if peak == 0 else end / peak
    body = cosine_decay_schedule(peak, total - w, alpha, exponent)
    return u.chain([(Linear(u.number("init_value", init_value), peak, max(w, 1)), w)], body)


def warmup_exponential_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """Linear warmup to ``peak_value``, then :func:`exponential_decay` from there (its clock
    starts at the end of the warmup).

    >>> warmup_exponential_decay_schedule(0.0, 1.0, 10, 10, 0.5)(20)
    0.5
    """
    w = u.steps("warmup_steps", warmup_steps)
    peak = u.number("peak_value", peak_value)
    body = exponential_decay(
        peak, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return u.chain([(Linear(u.number("init_value", init_value), peak, max(w, 1)), w)], body)


def join_schedules(schedules: SequenceType[Schedule], boundaries: Iterable[int]) -> Schedule:
    """``schedules[i]`` from ``boundaries[i-1]`` on, at ``t - boundaries[i-1]``.

    >>> join_schedules([constant_schedule(1.0), linear_schedule(1.0, 0.0, 4)], [2])(4)
    0.5
    """
    bounds = tuple(boundaries)
    if len(schedules) == 1 and not bounds:
        return schedules[0]
    return Sequence(tuple(schedules), bounds)


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """Warm restarts: one :func:`warmup_cosine_decay_schedule` per dict, end to end.

    >>> s = sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=2,
    ...                         decay_steps=10)] * 2)
    >>> s(2), s(10), s(12)
    (1.0, 0.0, 1.0)
    """
    parts: list[Schedule] = []
    bounds: list[int] = []
    at = 0
    for i, kwargs in enumerate(cosine_kwargs):
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"Argument `cosine_kwargs[{i}]` must be a dict. Received: {kwargs!r}")
        parts.append(warmup_cosine_decay_schedule(**kwargs))
        at += u.steps(f"cosine_kwargs[{i}]['decay_steps']", kwargs.get("decay_steps"))
        bounds.append(at)
    if not parts:
        raise u.fail("cosine_kwargs", "non-empty", [])
    return join_schedules(parts, bounds[:-1])


# -- clipping under optax's names (JAX needed; the implementations are in steadystep.jax) -------
def adaptive_grad_clip(
    clipping: float, eps: float = 1e-3, axis: int | tuple[int, ...] | None = None
) -> Any:
    """optax's ``adaptive_grad_clip(clipping, eps, axis)``, unit-wise over any axes and without
    overflow: :func:`steadystep.jax._clip.agc_by_axes`."""
    from ..jax._clip import agc_by_axes

    return agc_by_axes(clipping, eps, axis)


def unitwise_norm(x: Any, axis: int | tuple[int, ...] | None = None) -> Any:
    """optax's ``unitwise_norm``: :func:`steadystep.jax._clip.unitwise_norm`."""
    from ..jax._clip import unitwise_norm as norm

    return norm(x, axis)


def clip_by_block_rms(threshold: float) -> Any:
    """optax's ``clip_by_block_rms``: :func:`steadystep.jax._clip.clip_by_block_rms`."""
    from ..jax._clip import clip_by_block_rms as clip

    return clip(threshold)
