"""``pytorch_warmup``'s warmup factors, exactly, as steadystep schedules.

pytorch_warmup multiplies the LR an LR scheduler set by a factor ``omega``. Its constructor
dampens with step 0 and each ``dampening()`` after an update with the next step, so ``s(t)``
is the factor of update ``t``. Combine it with an LR schedule by :func:`dampen`
(``steadystep.product([lr_schedule, factor])``). ``RAdamWarmup(beta2)`` is
:class:`steadystep.RAdamWarmup` (beta2 must be in (0.6, 1), as in pytorch_warmup).

>>> s = dampen(constant(0.1), LinearWarmup(warmup_period=4))
>>> [round(s(t), 12) for t in range(5)]
[0.025, 0.05, 0.075, 0.1, 0.1]

References: Ma & Yarats 2021, "On the Adequacy of Untuned Warmup for Adaptive Optimization";
Liu et al. 2020 (RAdam); Tony-Y/pytorch_warmup ``pytorch_warmup/base.py``, ``untuned.py``,
``radam.py``.
"""

from __future__ import annotations

from ..schedules import Constant, ExponentialRamp, Linear, Product, RAdamWarmup, Schedule
from . import _util as u

__all__ = [
    "ExponentialWarmup",
    "LinearWarmup",
    "RAdamWarmup",
    "UntunedExponentialWarmup",
    "UntunedLinearWarmup",
    "dampen",
]


def LinearWarmup(warmup_period: int) -> Schedule:
    """``min(1, (t + 1) / warmup_period)``: the first update already gets ``1 / period``.

    >>> LinearWarmup(10)(0)
    0.1
    """
    p = u.steps("warmup_period", warmup_period, minimum=1)
    return Linear(1.0 / p, 1.0, p - 1) if p > 1 else Constant(1.0)


def ExponentialWarmup(warmup_period: int) -> Schedule:
    """``1 - exp(-(t + 1) / warmup_period)``.

    >>> round(ExponentialWarmup(1)(0), 6)
    0.632121
    """
    return ExponentialRamp(1.0, u.steps("warmup_period", warmup_period, minimum=1), 1.0)


def _beta2(beta2: float) -> float:
    b = u.number("beta2", beta2)
    if not 0 <= b < 1:
        raise u.fail("beta2", "in [0, 1)", beta2)
    return b


def UntunedLinearWarmup(beta2: float = 0.999) -> Schedule:
    """:func:`LinearWarmup` over ``int(2 / (1 - beta2))`` steps (Adam's ``betas[1]``).

    >>> s = UntunedLinearWarmup(0.999)  # int(2 / (1 - 0.999)) is 1999 in floating point
    >>> s(1997) < 1.0, s(1998)
    (True, 1.0)
    """
    return LinearWarmup(max(1, int(2.0 / (1.0 - _beta2(beta2)))))


def UntunedExponentialWarmup(beta2: float = 0.999) -> Schedule:
    """:func:`ExponentialWarmup` with period ``int(1 / (1 - beta2))``.

    >>> round(UntunedExponentialWarmup(0.999)(998), 6)  # period int(999.99...) = 999
    0.632121
    """
    return ExponentialWarmup(max(1, int(1.0 / (1.0 - _beta2(beta2)))))


def dampen(schedule: Schedule, warmup: Schedule) -> Schedule:
    """The LR pytorch_warmup leaves in the optimizer: ``schedule(t) * warmup(t)``."""
    return Product((schedule, warmup))
