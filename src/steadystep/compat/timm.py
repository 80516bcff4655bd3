"""timm's schedulers (``timm.scheduler``), exactly, without timm installed.

Functions are named after timm's classes and keep their arguments; the optimizer is replaced
by ``lr``, the group's initial LR (timm's ``base_values``). ``s(t)`` is timm's ``_get_lr(t)``:
timm sets it at construction for ``t = 0`` and then via ``step_update(num_updates=t)`` after
each update (``t_in_epochs=False``) or ``step(epoch=t)`` after each epoch (the default
``t_in_epochs=True``: then ``t`` counts epochs; wrap the result in
``steadystep.from_epochs(s, steps_per_epoch, discrete=True)``).

Warmup: ``warmup_t`` steps linear from ``warmup_lr_init`` to ``lr``. ``warmup_prefix=False``
(cosine, tanh, poly default) overlays the warmup on the first steps of the decay, whose length
``t_initial`` then includes the warmup; ``warmup_prefix=True`` (step, multistep default)
delays the decay by ``warmup_t``. tanh ramps to the decay's value at ``warmup_t`` when
overlaid (timm's choice), the others to ``lr``.

Not reproduced: LR noise (``noise_range_t`` and friends; it is random), which raises. timm's
``assert`` checks become ``ValueError``s naming the argument; ``cycle_limit=0`` and
``cycle_mul < 1`` (whose cycles end after finitely many steps, where timm fails with a math
domain error) are refused.

>>> s = CosineLRScheduler(0.1, t_initial=100, lr_min=1e-3, warmup_t=5, warmup_lr_init=1e-4)
>>> s(0), s(5) < 0.1, s(100)
(0.0001, True, 0.001)

References: timm ``timm/scheduler/scheduler.py``, ``cosine_lr.py``, ``tanh_lr.py``,
``step_lr.py``, ``multistep_lr.py``, ``poly_lr.py``.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceType
from typing import Any

from ..schedules import (
    Constant,
    Cycles,
    Linear,
    Multistep,
    Plateau,
    Schedule,
    Sequence,
    Step,
    Warmup,
)
from . import _util as u

__all__ = [
    "CosineLRScheduler",
    "MultiStepLRScheduler",
    "PlateauLRScheduler",
    "PolyLRScheduler",
    "StepLRScheduler",
    "TanhLRScheduler",
]


def _no_noise(noise_range_t: Any) -> None:
    if noise_range_t is not None:
        raise ValueError(
            "Argument `noise_range_t` must be None: timm's LR noise is random and is not "
            f"reproduced. Received: noise_range_t={noise_range_t!r}"
        )


def _warm(body: Schedule, warmup_t: Any, warmup_lr_init: Any, warmup_prefix: Any) -> Schedule:
    w = u.nonnegative("warmup_t", warmup_t)
    start = u.nonnegative("warmup_lr_init", warmup_lr_init)
    if not w:
        return body
    return Warmup(body, w, start=start, overlay=not u.flag("warmup_prefix", warmup_prefix))


def _cycles(
    curve: str,
    lr: Any,
    t_initial: Any,
    lr_min: Any,
    cycle_mul: Any,
    cycle_decay: Any,
    cycle_limit: Any,
    **extra: Any,
) -> Cycles:
    return Cycles(
        u.positive("lr", lr),
        u.nonnegative("lr_min", lr_min),
        u.positive("t_initial", t_initial),
        curve,
        mul=u.number("cycle_mul", cycle_mul),
        decay=u.positive("cycle_decay", cycle_decay),
        limit=u.integer("cycle_limit", cycle_limit, minimum=1),
        **extra,
    )


def CosineLRScheduler(
    lr: float,
    t_initial: int,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    k_decay: float = 1.0,
    noise_range_t: Any = None,
) -> Schedule:
    """Cosine cycles: ``lr_min + (lr * cycle_decay**i - lr_min) * (1 + cos(pi * x**k)) / 2``,
    ``x`` the fraction of cycle ``i`` done, cycle ``i`` lasting ``t_initial * cycle_mul**i``.

    >>> s = CosineLRScheduler(1.0, t_initial=4, cycle_limit=2, cycle_decay=0.5)
    >>> [round(s(t), 12) for t in (0, 2, 4, 6, 8)]
    [1.0, 0.5, 0.5, 0.25, 0.0]

    References: Loshchilov & Hutter 2017 (SGDR); Zhang & Li 2020 (k-decay).
    """
    _no_noise(noise_range_t)
    body = _cycles(
        "cosine",
        lr,
        t_initial,
        lr_min,
        cycle_mul,
        cycle_decay,
        cycle_limit,
        k=u.positive("k_decay", k_decay),
    )
    return _warm(body, warmup_t, warmup_lr_init, warmup_prefix)


def PolyLRScheduler(
    lr: float,
    t_initial: int,
    power: float = 0.5,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    k_decay: float = 1.0,
    noise_range_t: Any = None,
) -> Schedule:
    """Polynomial cycles: ``lr_min + (lr * cycle_decay**i - lr_min) * (1 - x**k) ** power``.

    >>> PolyLRScheduler(1.0, t_initial=4, power=2.0)(2)
    0.25
    """
    _no_noise(noise_range_t)
    body = _cycles(
        "poly",
        lr,
        t_initial,
        lr_min,
        cycle_mul,
        cycle_decay,
        cycle_limit,
        k=u.positive("k_decay", k_decay),
        power=u.positive("power", power),
    )
    return _warm(body, warmup_t, warmup_lr_init, warmup_prefix)


def TanhLRScheduler(
    lr: float,
    t_initial: int,
    lb: float = -7.0,
    ub: float = 3.0,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    noise_range_t: Any = None,
) -> Schedule:
    """Hyperbolic-tangent cycles:
    ``lr_min + (lr * cycle_decay**i - lr_min) * (1 - tanh(lb * (1 - x) + ub * x)) / 2``.

    >>> s = TanhLRScheduler(1.0, t_initial=10)
    >>> round(s(0), 4), round(s(7), 4), round(s(10), 4)
    (1.0, 0.5, 0.0)

    References: Hsueh et al. 2019, "Stochastic Gradient Descent with Hyperbolic-Tangent
    Decay on Classification".
    """
    _no_noise(noise_range_t)
    lb, ub = u.number("lb", lb), u.number("ub", ub)
    extra = {"lb": lb, "ub": ub}
    body = _cycles("tanh", lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, **extra)
    w = u.nonnegative("warmup_t", warmup_t)
    start = u.nonnegative("warmup_lr_init", warmup_lr_init)
    if not w:
        return body
    if u.flag("warmup_prefix", warmup_prefix):
        return Sequence((Linear(start, body.start, w), body))
    late = _cycles(
        "tanh", lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, offset=w, **extra
    )
    return Sequence((Linear(start, float(body(w)), w), late), (w,))


def StepLRScheduler(
    lr: float,
    decay_t: float,
    decay_rate: float = 1.0,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = True,
    noise_range_t: Any = None,
) -> Schedule:
    """``lr * decay_rate ** floor(t / decay_t)``.

    >>> StepLRScheduler(1.0, decay_t=3, decay_rate=0.5, warmup_t=2)(7)
    0.5
    """
    _no_noise(noise_range_t)
    body = Step(
        u.positive("lr", lr), u.positive("decay_t", decay_t), u.positive("decay_rate", decay_rate)
    )
    return _warm(body, warmup_t, warmup_lr_init, warmup_prefix)


def MultiStepLRScheduler(
    lr: float,
    decay_t: SequenceType[int],
    decay_rate: float = 1.0,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = True,
    noise_range_t: Any = None,
) -> Schedule:
    """``lr * decay_rate ** (number of decay_t <= t)``; ``decay_t`` must be increasing (timm
    silently assumes it is sorted).

    >>> MultiStepLRScheduler(1.0, decay_t=[2, 4], decay_rate=0.5)(4)
    0.25
    """
    _no_noise(noise_range_t)
    body = Multistep(u.positive("lr", lr), tuple(decay_t), u.positive("decay_rate", decay_rate))
    return _warm(body, warmup_t, warmup_lr_init, warmup_prefix)


def PlateauLRScheduler(
    lr: float,
    decay_rate: float = 0.1,
    patience_t: int = 10,
    threshold: float = 1e-4,
    cooldown_t: int = 0,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    lr_min: float = 0.0,
    mode: str = "max",
    noise_range_t: Any = None,
) -> Schedule:
    """timm's ``PlateauLRScheduler``: a linear warmup, then torch's ``ReduceLROnPlateau``.

    ``s(t)`` is the LR of epoch ``t``; ``warmup_t`` epochs ramp from ``warmup_lr_init`` to
    ``lr``, and timm ignores the metrics of those epochs (``step(epoch, metric)`` with
    ``epoch <= warmup_t``): the plateau's ``ignore_first=warmup_t``, for the usual loop that
    feeds one metric per epoch. Note timm's default ``mode="max"`` (an accuracy).

    >>> s = PlateauLRScheduler(0.1, warmup_t=2, warmup_lr_init=0.0)
    >>> [s(t) for t in range(4)]
    [0.0, 0.05, 0.1, 0.1]
    """
    _no_noise(noise_range_t)
    w = u.integer("warmup_t", warmup_t)
    start = u.nonnegative("warmup_lr_init", warmup_lr_init)
    body = Plateau(
        Constant(u.positive("lr", lr)),
        factor=decay_rate,
        patience=patience_t,
        mode=mode,
        threshold=threshold,
        cooldown=cooldown_t,
        min_lr=lr_min,
        ignore_first=w,
    )
    return Sequence((Linear(start, body.schedule(0), w), body)) if w else body
