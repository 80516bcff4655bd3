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

Update 0 gets the LR timm's constructor sets (``lr``, or ``warmup_lr_init`` with a warmup),
which is ``_get_lr(0)`` except for tanh (``_get_lr(0)`` is ``lr * (1 - tanh(lb)) / 2``) and a
``MultiStepLRScheduler`` milestone ``<= 1``.

LR noise (``noise_range_t``, ``noise_pct``, ``noise_std``, ``noise_seed``) is reproduced bit for
bit: timm seeds a torch generator with ``noise_seed + t`` at each step, so the noise is a pure
function of the step (:class:`~steadystep.schedules._shapes.TimmNoise`; such a schedule
evaluates on Python/NumPy steps only). ``t_in_epochs`` and ``initialize`` are accepted (they
choose when timm is stepped and where it reads the initial LR, not the values).

timm's ``assert`` checks become ``ValueError``s naming the argument; ``cycle_limit=0`` and
``cycle_mul < 1`` (whose cycles end after finitely many steps, where timm fails with a math
domain error) are refused.

>>> s = CosineLRScheduler(0.1, t_initial=100, lr_min=1e-3, warmup_t=5, warmup_lr_init=1e-4)
>>> s(0), s(5) < 0.1, s(100)
(0.0001, True, 0.001)

References: timm ``timm/scheduler/scheduler.py``, ``cosine_lr.py``, ``tanh_lr.py``,
``step_lr.py``, ``multistep_lr.py``, ``poly_lr.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceType
from typing import Any

from ..schedules import (
    Constant,
    Cycles,
    Linear,
    Piecewise,
    Plateau,
    Schedule,
    Sequence,
    Step,
    Warmup,
)
from ..schedules._shapes import TimmNoise
from . import _util as u

__all__ = [
    "CosineLRScheduler",
    "MultiStepLRScheduler",
    "PlateauLRScheduler",
    "PolyLRScheduler",
    "StepLRScheduler",
    "TanhLRScheduler",
]


def _noise(
    body: Schedule,
    noise_range_t: Any,
    noise_pct: Any,
    noise_std: Any,
    noise_seed: Any,
    t_in_epochs: Any,
    initialize: Any,
) -> Schedule:
    """``body`` with timm's LR noise (none if ``noise_range_t`` is None); the remaining timm
    arguments are checked."""
    u.flag("t_in_epochs", t_in_epochs)
    u.flag("initialize", initialize)
    pct = u.positive("noise_pct", noise_pct)  # timm loops forever on pct <= 0
    std = u.nonnegative("noise_std", noise_std)
    seed = u.integer("noise_seed", 42 if noise_seed is None else noise_seed, minimum=-(2**63))
    if noise_range_t is None:
        return body
    if isinstance(noise_range_t, (list, tuple)):
        if len(noise_range_t) != 2:
            raise u.fail("noise_range_t", "an int or a pair (start, end)", noise_range_t)
        start = _first_step("noise_range_t[0]", noise_range_t[0])
        end: int | None = _first_step("noise_range_t[1]", noise_range_t[1])
    else:
        start, end = _first_step("noise_range_t", noise_range_t), None
    start = max(start, 1)  # update 0 has the constructor's LR, which timm never perturbs
    return TimmNoise(body, start, None if end is None else max(end, start), pct, std, seed)


def _first_step(name: str, value: Any) -> int:
    """The first whole step ``t >= value`` (timm's factory scales noise fractions by the
    schedule length, so the bounds may be fractional)."""
    return math.ceil(u.nonnegative(name, value))


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
    t_in_epochs: bool = True,
    noise_range_t: Any = None,
    noise_pct: float = 0.67,
    noise_std: float = 1.0,
    noise_seed: int = 42,
    k_decay: float = 1.0,
    initialize: bool = True,
) -> Schedule:
    """Cosine cycles: ``lr_min + (lr * cycle_decay**i - lr_min) * (1 + cos(pi * x**k)) / 2``,
    ``x`` the fraction of cycle ``i`` done, cycle ``i`` lasting ``t_initial * cycle_mul**i``.

    >>> s = CosineLRScheduler(1.0, t_initial=4, cycle_limit=2, cycle_decay=0.5)
    >>> [round(s(t), 12) for t in (0, 2, 4, 6, 8)]
    [1.0, 0.5, 0.5, 0.25, 0.0]

    References: Loshchilov & Hutter 2017 (SGDR); Zhang & Li 2020 (k-decay).
    """
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
    warm = _warm(body, warmup_t, warmup_lr_init, warmup_prefix)
    return _noise(warm, noise_range_t, noise_pct, noise_std, noise_seed, t_in_epochs, initialize)


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
    t_in_epochs: bool = True,
    noise_range_t: Any = None,
    noise_pct: float = 0.67,
    noise_std: float = 1.0,
    noise_seed: int = 42,
    k_decay: float = 1.0,
    initialize: bool = True,
) -> Schedule:
    """Polynomial cycles: ``lr_min + (lr * cycle_decay**i - lr_min) * (1 - x**k) ** power``.

    >>> PolyLRScheduler(1.0, t_initial=4, power=2.0)(2)
    0.25
    """
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
    warm = _warm(body, warmup_t, warmup_lr_init, warmup_prefix)
    return _noise(warm, noise_range_t, noise_pct, noise_std, noise_seed, t_in_epochs, initialize)


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
    t_in_epochs: bool = True,
    noise_range_t: Any = None,
    noise_pct: float = 0.67,
    noise_std: float = 1.0,
    noise_seed: int = 42,
    initialize: bool = True,
) -> Schedule:
    """Hyperbolic-tangent cycles:
    ``lr_min + (lr * cycle_decay**i - lr_min) * (1 - tanh(lb * (1 - x) + ub * x)) / 2``;
    update 0 (without warmup) gets ``lr`` itself, as timm's constructor sets it.

    >>> s = TanhLRScheduler(1.0, t_initial=10)
    >>> round(s(0), 4), round(s(7), 4), round(s(10), 4)
    (1.0, 0.5, 0.0)

    References: Hsueh et al. 2019, "Stochastic Gradient Descent with Hyperbolic-Tangent
    Decay on Classification".
    """
    lb, ub = u.number("lb", lb), u.number("ub", ub)
    extra = {"lb": lb, "ub": ub}
    body = _cycles("tanh", lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, **extra)
    w = u.nonnegative("warmup_t", warmup_t)
    start = u.nonnegative("warmup_lr_init", warmup_lr_init)
    warm: Schedule
    if not w:
        # update 0: the constructor's lr (a one-step warmup from it, on the same clock)
        warm = Warmup(body, 1, start=body.start, overlay=True)
    elif u.flag("warmup_prefix", warmup_prefix):
        warm = Sequence((Linear(start, body.start, w), body))
    else:
        late = _cycles(
            "tanh", lr, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, offset=w, **extra
        )
        warm = Sequence((Linear(start, float(body(w)), w), late), (w,))
    return _noise(warm, noise_range_t, noise_pct, noise_std, noise_seed, t_in_epochs, initialize)


def StepLRScheduler(
    lr: float,
    decay_t: float,
    decay_rate: float = 1.0,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = True,
    t_in_epochs: bool = True,
    noise_range_t: Any = None,
    noise_pct: float = 0.67,
    noise_std: float = 1.0,
    noise_seed: int = 42,
    initialize: bool = True,
) -> Schedule:
    """``lr * decay_rate ** floor(t / decay_t)``.

    >>> StepLRScheduler(1.0, decay_t=3, decay_rate=0.5, warmup_t=2)(7)
    0.5
    """
    body = Step(
        u.positive("lr", lr), u.positive("decay_t", decay_t), u.positive("decay_rate", decay_rate)
    )
    warm = _warm(body, warmup_t, warmup_lr_init, warmup_prefix)
    return _noise(warm, noise_range_t, noise_pct, noise_std, noise_seed, t_in_epochs, initialize)


def MultiStepLRScheduler(
    lr: float,
    decay_t: SequenceType[float],
    decay_rate: float = 1.0,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = True,
    t_in_epochs: bool = True,
    noise_range_t: Any = None,
    noise_pct: float = 0.67,
    noise_std: float = 1.0,
    noise_seed: int = 42,
    initialize: bool = True,
) -> Schedule:
    """``lr * decay_rate ** bisect_right(decay_t, u + 1)``: timm applies milestone ``m`` one
    step *before* ``m`` (at ``u = m - 1``, ``u`` the step after a prefix warmup), unlike
    torch's ``MultiStepLR``. ``decay_t`` must be sorted (timm silently assumes it);
    repeated milestones decay twice, as in timm.

    >>> s = MultiStepLRScheduler(1.0, decay_t=[2, 4], decay_rate=0.5)
    >>> [s(t) for t in range(5)]
    [1.0, 0.5, 0.5, 0.25, 0.25]
    """
    base = u.positive("lr", lr)
    rate = u.positive("decay_rate", decay_rate)
    milestones = u.check.numbers_tuple("decay_t", decay_t)
    if list(milestones) != sorted(milestones):
        raise u.fail("decay_t", "sorted (timm bisects it)", list(decay_t))
    w = u.nonnegative("warmup_t", warmup_t)
    start = u.nonnegative("warmup_lr_init", warmup_lr_init)
    prefix = u.flag("warmup_prefix", warmup_prefix)
    # decays at the body's own step m - off; with no warmup, update 0 keeps the constructor's lr
    off = 1 + (0 if prefix else w)
    points = [m - off if m - off > 0 or w else 1 for m in milestones]
    before = sum(p <= 0 for p in points)
    cuts = sorted({p for p in points if p > 0})
    values = [base * rate ** (before + sum(p <= c for p in points if p > 0)) for c in cuts]
    first = base * rate**before
    body = Piecewise(tuple(cuts), (first, *values)) if cuts else Constant(first)
    warm = Sequence((Linear(start, base, w), body), (w,)) if w else body
    return _noise(warm, noise_range_t, noise_pct, noise_std, noise_seed, t_in_epochs, initialize)


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
    noise_pct: float = 0.67,
    noise_std: float = 1.0,
    noise_seed: int | None = None,
    initialize: bool = True,
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
    if noise_range_t is not None:
        # timm perturbs the optimizer's LR after each plateau step and restores it: state the
        # value of a schedule cannot carry
        raise u.fail(
            "noise_range_t", "None (timm's plateau noise is not reproduced)", noise_range_t
        )
    _noise(Constant(1.0), None, noise_pct, noise_std, noise_seed, True, initialize)
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
