"""TensorFlow 1 ``tf.train.*_decay`` (``tf.compat.v1.train``), exactly, with TF1 defaults.

``global_step`` is not an argument: a schedule is a function of the step. TF1 reads
``global_step`` while computing update ``t`` and increments it afterwards, so ``s(t)`` is the
LR of update ``t``, with ``t`` = ``global_step``.

>>> s = polynomial_decay(0.1, decay_steps=100)  # end_learning_rate=0.0001, power=1.0
>>> s(0), round(s(50), 12), s(100)
(0.1, 0.05005, 0.0001)

References: TensorFlow ``tensorflow/python/training/learning_rate_decay.py`` and
``tensorflow/python/keras/optimizer_v2/legacy_learning_rate_decay.py``; the seed write-up
``000`` of this project (``polynomial_decay`` in the BERT recipe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceType

from ..schedules import (
    Constant,
    CosineWave,
    Exponential,
    Linear,
    Product,
    Schedule,
    Sequence,
    Shift,
)
from . import _util as u
from . import keras as _k

__all__ = [
    "cosine_decay",
    "cosine_decay_restarts",
    "exponential_decay",
    "inverse_time_decay",
    "linear_cosine_decay",
    "natural_exp_decay",
    "piecewise_constant",
    "polynomial_decay",
]


def polynomial_decay(
    learning_rate: float,
    decay_steps: int,
    end_learning_rate: float = 0.0001,
    power: float = 1.0,
    cycle: bool = False,
) -> Schedule:
    """``(learning_rate - end) * (1 - min(t, decay_steps) / decay_steps) ** power + end``;
    with ``cycle`` the horizon is ``decay_steps * ceil(t / decay_steps)`` (``decay_steps`` at 0).

    >>> polynomial_decay(1.0, 10, end_learning_rate=0.0, cycle=True)(15)
    0.25
    """
    return _k.PolynomialDecay(learning_rate, decay_steps, end_learning_rate, power, cycle)


def exponential_decay(
    learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False
) -> Schedule:
    """``learning_rate * decay_rate ** (t / decay_steps)`` (``floor`` with staircase).

    >>> exponential_decay(1.0, 10, 0.5)(20)
    0.25
    """
    return _k.ExponentialDecay(learning_rate, decay_steps, decay_rate, staircase)


def natural_exp_decay(
    learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False
) -> Schedule:
    """``learning_rate * exp(-decay_rate * t / decay_steps)`` (``floor`` with staircase).

    >>> round(natural_exp_decay(1.0, 1, 1.0)(1), 12) == round(math.exp(-1), 12)
    True
    """
    rate = u.nonnegative("decay_rate", decay_rate)
    return Exponential(
        u.positive("learning_rate", learning_rate),
        math.exp(-rate),
        u.positive("decay_steps", decay_steps),
        u.flag("staircase", staircase),
    )


def inverse_time_decay(
    learning_rate: float, decay_steps: float, decay_rate: float, staircase: bool = False
) -> Schedule:
    """``learning_rate / (1 + decay_rate * t / decay_steps)`` (``floor`` with staircase).

    >>> inverse_time_decay(1.0, 1, 1.0)(3)
    0.25
    """
    return _k.InverseTimeDecay(learning_rate, decay_steps, decay_rate, staircase)


def piecewise_constant(boundaries: SequenceType[float], values: SequenceType[float]) -> Schedule:
    """``values[0]`` while ``t <= boundaries[0]``, ..., ``values[-1]`` after the last boundary.

    >>> s = piecewise_constant([100], [1.0, 0.5])
    >>> s(100), s(101)
    (1.0, 0.5)
    """
    return _k.PiecewiseConstantDecay(boundaries, values)


def cosine_decay(learning_rate: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """``learning_rate * ((1 - alpha) * (1 + cos(pi * min(t, T) / T)) / 2 + alpha)``.

    >>> cosine_decay(1.0, 10)(5)
    0.5
    """
    return _k.CosineDecay(learning_rate, decay_steps, alpha)


def cosine_decay_restarts(
    learning_rate: float,
    first_decay_steps: int,
    t_mul: float = 2.0,
    m_mul: float = 1.0,
    alpha: float = 0.0,
) -> Schedule:
    """SGDR, as :func:`steadystep.compat.keras.CosineDecayRestarts`.

    >>> cosine_decay_restarts(1.0, 2)(2)
    1.0
    """
    return _k.CosineDecayRestarts(learning_rate, first_decay_steps, t_mul, m_mul, alpha)


def linear_cosine_decay(
    learning_rate: float,
    decay_steps: int,
    num_periods: float = 0.5,
    alpha: float = 0.0,
    beta: float = 0.001,
) -> Schedule:
    """``learning_rate * ((alpha + (T - s) / T) * (1 + cos(2 pi num_periods s / T)) / 2 + beta)``
    with ``s = min(t, T)``. (``noisy_linear_cosine_decay`` adds random noise: not reproduced.)

    >>> s = linear_cosine_decay(1.0, 10, beta=0.0)
    >>> s(0), round(s(5), 12), s(10)
    (1.0, 0.25, 0.0)

    References: Bello et al. 2017, "Neural Optimizer Search with Reinforcement Learning".
    """
    lr = u.positive("learning_rate", learning_rate)
    steps = u.positive("decay_steps", decay_steps)
    periods = u.positive("num_periods", num_periods)
    a = u.nonnegative("alpha", alpha)
    b = u.nonnegative("beta", beta)
    wave = CosineWave(1.0, 0.0, steps, periods)
    at_end = 0.5 * (1.0 + math.cos(2.0 * math.pi * periods))  # the step is clipped at T
    cosine = Sequence((wave, Constant(at_end)), (steps,))
    shape: Schedule = Product((Shift(Linear(1.0, 0.0, steps), a), cosine))
    return (Shift(shape, b) if b else shape) * lr
