"""Keras 3 ``keras.optimizers.schedules``, exactly, as steadystep schedules.

Same class names (as functions) and argument names; ``name`` is accepted and ignored. Keras
optimizers call the schedule with ``iterations`` before incrementing it, so ``s(t)`` is the LR
of update ``t``, as in Keras. Keras evaluates in the dtype of ``initial_learning_rate``
(usually float32); these schedules compute in float64.

>>> s = CosineDecay(0.1, decay_steps=10, warmup_target=1.0, warmup_steps=5)
>>> s(0), s(5), round(s(10), 12), s(15)
(0.1, 1.0, 0.5, 0.0)

References: Keras ``keras/src/optimizers/schedules/learning_rate_schedule.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceType
from typing import Any

from ..schedules import (
    Constant,
    Cosine,
    Exponential,
    FromEpochs,
    Linear,
    Piecewise,
    Plateau,
    Polynomial,
    Power,
    Repeat,
    Schedule,
    Shift,
)
from . import _util as u

__all__ = [
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "ReduceLROnPlateau",
]


def _decay_steps(name: str, value: Any) -> float:
    return u.positive(name, value)


def ExponentialDecay(
    initial_learning_rate: float,
    decay_steps: int,
    decay_rate: float,
    staircase: bool = False,
    name: str = "ExponentialDecay",
) -> Schedule:
    """``initial_learning_rate * decay_rate ** (t / decay_steps)`` (``floor`` with staircase).

    >>> ExponentialDecay(1.0, decay_steps=10, decay_rate=0.5, staircase=True)(19)
    0.5
    """
    return Exponential(
        u.positive("initial_learning_rate", initial_learning_rate),
        u.positive("decay_rate", decay_rate),
        _decay_steps("decay_steps", decay_steps),
        u.flag("staircase", staircase),
    )


def PiecewiseConstantDecay(
    boundaries: SequenceType[float], values: SequenceType[float], name: str = "Piecewise"
) -> Schedule:
    """``values[0]`` while ``t <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < t <= boundaries[i]``, ``values[-1]`` after.

    Keras switches one update *later* than :func:`steadystep.piecewise` (``t > b`` rather
    than ``t >= b``); this returns the steadystep piecewise with boundaries moved to match.

    >>> s = PiecewiseConstantDecay([2], [1.0, 0.1])
    >>> s(2), s(3)
    (1.0, 0.1)
    """
    b = u.check.numbers_tuple("boundaries", boundaries)
    v = u.check.numbers_tuple("values", values)
    if len(v) != len(b) + 1:
        raise ValueError(
            "The length of `boundaries` should be 1 less than the length of `values`. "
            f"Received: boundaries={list(b)!r} of length {len(b)}, and values={list(v)!r} "
            f"of length {len(v)}."
        )
    if not b:
        return Constant(v[0])
    for i, x in enumerate(b):
        if x < 0:
            raise u.fail(f"boundaries[{i}]", ">= 0", x)
    # first whole step with t > b
    firsts = tuple(math.floor(x) + 1 for x in b)
    u.check.increasing("boundaries (as whole steps)", firsts)
    return Piecewise(firsts, v)


def PolynomialDecay(
    initial_learning_rate: float,
    decay_steps: int,
    end_learning_rate: float = 0.0001,
    power: float = 1.0,
    cycle: bool = False,
    name: str = "PolynomialDecay",
) -> Schedule:
    """``(initial - end) * (1 - min(t, decay_steps) / decay_steps) ** power + end``; with
    ``cycle`` the horizon is ``decay_steps * ceil(t / decay_steps)``.

    >>> PolynomialDecay(1.0, 10, end_learning_rate=0.0)(5)
    0.5
    """
    return Polynomial(
        u.number("initial_learning_rate", initial_learning_rate),
        u.number("end_learning_rate", end_learning_rate),
        _decay_steps("decay_steps", decay_steps),
        u.positive("power", power),
        u.flag("cycle", cycle),
    )


def InverseTimeDecay(
    initial_learning_rate: float,
    decay_steps: float,
    decay_rate: float,
    staircase: bool = False,
    name: str = "InverseTimeDecay",
) -> Schedule:
    """``initial_learning_rate / (1 + decay_rate * t / decay_steps)`` (``floor`` with
    staircase): a :func:`steadystep.power` law with exponent -1.

    >>> InverseTimeDecay(1.0, decay_steps=10, decay_rate=1.0)(10)
    0.5
    """
    lr = u.positive("initial_learning_rate", initial_learning_rate)
    steps = _decay_steps("decay_steps", decay_steps)
    rate = u.nonnegative("decay_rate", decay_rate)
    if rate == 0:
        return Constant(lr)
    if u.flag("staircase", staircase):
        return FromEpochs(Power(lr / rate, -1.0, 1.0 / rate), steps, discrete=True)
    return Power(lr * steps / rate, -1.0, steps / rate)


def _cosine(lr: float, steps: float, alpha: float) -> Schedule:
    return Cosine(lr, lr * alpha, steps)


def CosineDecay(
    initial_learning_rate: float,
    decay_steps: int,
    alpha: float = 0.0,
    name: str = "CosineDecay",
    warmup_target: float | None = None,
    warmup_steps: int = 0,
) -> Schedule:
    """Cosine decay from ``initial_learning_rate`` to ``alpha`` times it over ``decay_steps``.

    With ``warmup_target``: linear from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps``, then the cosine decays from ``warmup_target`` over a further
    ``decay_steps`` (Keras's ``decay_steps`` excludes the warmup; optax's includes it).

    References: Loshchilov & Hutter 2017 (SGDR).
    """
    lr = u.number("initial_learning_rate", initial_learning_rate)
    steps = _decay_steps("decay_steps", decay_steps)
    a = u.number("alpha", alpha)
    if warmup_target is None:
        return _cosine(lr, steps, a)
    target = u.number("warmup_target", warmup_target)
    w = u.nonnegative("warmup_steps", warmup_steps)
    return u.chain([(Linear(lr, target, max(w, 1)), w)], _cosine(target, steps, a))


def CosineDecayRestarts(
    initial_learning_rate: float,
    first_decay_steps: int,
    t_mul: float = 2.0,
    m_mul: float = 1.0,
    alpha: float = 0.0,
    name: str = "SGDRDecay",
) -> Schedule:
    """SGDR: cosine cycles, the ``i``-th ``t_mul**i`` times longer and ``m_mul**i`` times
    higher; the floor ``alpha * initial_learning_rate`` is not scaled by ``m_mul``.

    >>> s = CosineDecayRestarts(1.0, first_decay_steps=2, t_mul=1.0, m_mul=0.5)
    >>> [s(t) for t in range(5)]
    [1.0, 0.5, 0.5, 0.25, 0.25]

    References: Loshchilov & Hutter 2017, "SGDR".
    """
    lr = u.positive("initial_learning_rate", initial_learning_rate)
    steps = _decay_steps("first_decay_steps", first_decay_steps)
    t = u.number("t_mul", t_mul)
    if t < 1:
        raise u.fail("t_mul", ">= 1", t_mul)
    m = u.positive("m_mul", m_mul)
    a = u.number("alpha", alpha)
    if not 0 <= a < 1:
        raise u.fail("alpha", "in [0, 1)", alpha)
    body = Repeat(Cosine(lr * (1.0 - a), 0.0, steps), decay=m, stretch=t)
    return Shift(body, lr * a) if a else body


def ReduceLROnPlateau(
    lr: float,
    monitor: str = "val_loss",
    factor: float = 0.1,
    patience: int = 10,
    mode: str = "auto",
    min_delta: float = 1e-4,
    cooldown: int = 0,
    min_lr: float = 0.0,
) -> Plateau:
    """Keras's ``ReduceLROnPlateau`` callback rule on a constant ``lr``, as a plateau schedule.

    Keras's semantics, which differ from torch's: the cooldown counts down before the
    comparison, the first metric always improves (``best`` starts unset), an improvement is
    ``metric < best - min_delta`` (``> best + min_delta`` in max mode), the LR is reduced after
    ``patience`` bad epochs (torch: after more than ``patience``), only while it is above
    ``min_lr``, and the wait and cooldown restart only when it was. ``mode="auto"`` is
    ``"min"`` for a monitor named ``loss``/``val_loss`` and must be given otherwise (Keras reads
    it from the compiled metric). Drive it from ``model.fit`` with
    :class:`steadystep.keras.PlateauCallback`.

    >>> ReduceLROnPlateau(1e-3, patience=2).semantics
    'keras'
    """
    if not isinstance(monitor, str):
        raise TypeError(f"Argument `monitor` must be a metric name. Received: monitor={monitor!r}")
    u.choice("mode", mode, ("auto", "min", "max"))
    if mode == "auto":
        if monitor.removeprefix("val_") != "loss":
            raise ValueError(
                "Argument `mode` must be 'min' or 'max' for a monitor other than a loss (Keras "
                f"infers it from the compiled metric). Received: mode='auto', monitor={monitor!r}"
            )
        mode = "min"
    return Plateau(
        Constant(u.positive("lr", lr)),
        factor=factor,
        patience=patience,
        mode=mode,
        threshold=abs(u.number("min_delta", min_delta)),
        threshold_mode="abs",
        cooldown=cooldown,
        min_lr=min_lr,
        eps=0.0,
        semantics="keras",
    )
