"""Hugging Face transformers' schedules (``transformers.optimization``), exactly.

Every function returns the **multiplier** that transformers' ``LambdaLR`` applies to each
parameter group's initial LR: use it with ``steadystep.torch.Scheduler(opt, s, relative=True)``
or multiply it yourself (``s * peak_lr``). ``s(t)`` equals the lambda at ``current_step = t``,
which is the value used by update ``t`` (the Trainer steps the scheduler after each update).

Signatures keep transformers' argument names. A pure schedule needs no optimizer, so
``optimizer`` is an optional first argument (``get_linear_schedule_with_warmup(opt, 100, 1000)``
still works); it is only read where transformers reads it, for the initial LR of
``polynomial`` and ``cosine_with_min_lr``'s ``min_lr``: pass ``optimizer`` or ``lr_init``.
``last_epoch`` is not accepted: resuming is exact by construction (evaluate at the step).

>>> s = get_scheduler("linear", num_warmup_steps=2, num_training_steps=10)
>>> [s(t) for t in (0, 1, 2, 6, 10, 12)]
[0.0, 0.5, 1.0, 0.5, 0.0, 0.0]

References: transformers ``src/transformers/optimization.py`` (``get_scheduler`` and the
``get_*_schedule*`` functions); ``src/transformers/trainer_utils.py`` (``SchedulerType``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from ..schedules import (
    Constant,
    Cosine,
    CosineRestarts,
    CosineWave,
    Cycles,
    InverseSqrt,
    Linear,
    OneMinusSqrt,
    Plateau,
    Polynomial,
    Schedule,
)
from . import _util as u

__all__ = [
    "TYPE_TO_SCHEDULER_FUNCTION",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_reduce_on_plateau_schedule",
    "get_scheduler",
    "get_wsd_schedule",
]


def _ramp(body: Schedule, num_warmup_steps: Any) -> Schedule:
    """``t / W`` while ``t < W``, then ``body`` on its own clock (``t - W``)."""
    w = u.steps("num_warmup_steps", num_warmup_steps)
    return u.chain([(Linear(0.0, 1.0, w), w)], body) if w else body


def _span(num_warmup_steps: Any, num_training_steps: Any) -> tuple[int, int]:
    w = u.steps("num_warmup_steps", num_warmup_steps)
    return w, u.steps("num_training_steps", num_training_steps)


def _lr_init(optimizer: Any, lr_init: float | None, needed_for: str) -> float:
    if lr_init is None and optimizer is not None:
        lr_init = optimizer.defaults["lr"]
    if lr_init is None:
        raise ValueError(
            f"{needed_for} needs the optimizer's initial LR: pass `optimizer` or `lr_init`. "
            "Received: neither"
        )
    return u.positive("lr_init", lr_init)


def get_constant_schedule(optimizer: Any = None) -> Schedule:
    """Multiplier 1 at every step.

    >>> get_constant_schedule()(100)
    1.0
    """
    return Constant(1.0)


def get_constant_schedule_with_warmup(optimizer: Any = None, num_warmup_steps: int = 0) -> Schedule:
    """``t / W`` for ``t < W``, then 1.

    >>> s = get_constant_schedule_with_warmup(num_warmup_steps=4)
    >>> s(0), s(2), s(4)
    (0.0, 0.5, 1.0)
    """
    return _ramp(Constant(1.0), num_warmup_steps)


def get_linear_schedule_with_warmup(
    optimizer: Any = None, num_warmup_steps: int = 0, num_training_steps: int = 0
) -> Schedule:
    """``t / W`` for ``t < W``, then ``max(0, (T - t) / max(1, T - W))``.

    The decay spans ``T - W`` steps after the warmup (``T`` includes the warmup) and ends at 0.

    >>> s = get_linear_schedule_with_warmup(None, 2, 6)
    >>> [s(t) for t in range(8)]
    [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    w, total = _span(num_warmup_steps, num_training_steps)
    body = Linear(1.0, 0.0, total - w) if total > w else Constant(0.0)
    return _ramp(body, w)


def _cycles(value: Any) -> float:
    return u.positive("num_cycles", value)


def get_cosine_schedule_with_warmup(
    optimizer: Any = None,
    num_warmup_steps: int = 0,
    num_training_steps: int = 0,
    num_cycles: float = 0.5,
) -> Schedule:
    """``t / W`` for ``t < W``, then ``(1 + cos(2 pi c p)) / 2`` with
    ``p = (t - W) / max(1, T - W)``, ``c = num_cycles``.

    The wave is not clamped: past ``T`` it rises again, as transformers' lambda does.

    >>> s = get_cosine_schedule_with_warmup(None, 2, 6)
    >>> [round(s(t), 6) for t in (0, 1, 2, 4, 6, 8)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.5]
    """
    w, total = _span(num_warmup_steps, num_training_steps)
    return _ramp(CosineWave(1.0, 0.0, max(1, total - w), _cycles(num_cycles)), w)


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Any = None,
    num_warmup_steps: int = 0,
    num_training_steps: int = 0,
    num_cycles: int = 1,
) -> Schedule:
    """``t / W`` for ``t < W``, then ``num_cycles`` half-cosines from 1 to 0 over ``T - W``
    steps (each restarting at 1), then 0.

    >>> s = get_cosine_with_hard_restarts_schedule_with_warmup(None, 0, 4, num_cycles=2)
    >>> [round(s(t), 6) for t in range(6)]
    [1.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    w, total = _span(num_warmup_steps, num_training_steps)
    return _ramp(CosineRestarts(1.0, 0.0, max(1, total - w), _cycles(num_cycles)), w)


def get_polynomial_decay_schedule_with_warmup(
    optimizer: Any = None,
    num_warmup_steps: int = 0,
    num_training_steps: int = 0,
    lr_end: float = 1e-7,
    power: float = 1.0,
    *,
    lr_init: float | None = None,
) -> Schedule:
    """``t / W`` for ``t < W``, then ``((lr_init - lr_end) * (1 - p) ** power + lr_end) / lr_init``
    with ``p = (t - W) / (T - W)``, then ``lr_end / lr_init``.

    transformers reads ``lr_init`` from ``optimizer.defaults["lr"]``; pass ``optimizer`` or
    ``lr_init``. The multiplier is relative to that LR, so the floor ``lr_end`` is exact only
    for groups whose LR is ``lr_init``.

    >>> s = get_polynomial_decay_schedule_with_warmup(None, 0, 10, lr_end=0.1, lr_init=1.0)
    >>> round(s(5), 12), s(10), s(20)
    (0.55, 0.1, 0.1)
    """
    w, total = _span(num_warmup_steps, num_training_steps)
    lr0 = _lr_init(optimizer, lr_init, "polynomial")
    end = u.number("lr_end", lr_end)
    if not lr0 > end:
        raise u.fail("lr_end", f"< lr_init ({lr0!r})", lr_end)
    if not total > w:
        raise u.fail("num_training_steps", f"> num_warmup_steps ({w})", num_training_steps)
    return _ramp(Polynomial(1.0, end / lr0, total - w, u.positive("power", power)), w)


def get_inverse_sqrt_schedule(
    optimizer: Any = None, num_warmup_steps: int = 0, timescale: int | None = None
) -> Schedule:
    """``t / W`` for ``t < W``, then ``1 / sqrt((t - W + timescale) / timescale)``.

    ``timescale`` defaults to ``num_warmup_steps`` (or 10 000 without warmup).

    >>> s = get_inverse_sqrt_schedule(None, num_warmup_steps=4)
    >>> s(2), s(4), s(16)
    (0.5, 1.0, 0.5)

    References: big_vision ``utils.py`` (the origin transformers cites).
    """
    w = u.steps("num_warmup_steps", num_warmup_steps)
    scale = (w or 10_000) if timescale is None else u.positive("timescale", timescale)
    return _ramp(InverseSqrt(1.0, scale), w)


def _min_rate(optimizer: Any, min_lr: Any, min_lr_rate: Any, lr_init: Any) -> float:
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError(
            "Only one of `min_lr` or `min_lr_rate` may be set. "
            f"Received: min_lr={min_lr!r}, min_lr_rate={min_lr_rate!r}"
        )
    if min_lr is not None:
        rate = u.nonnegative("min_lr", min_lr) / _lr_init(optimizer, lr_init, "min_lr")
    elif min_lr_rate is None:
        raise ValueError("One of `min_lr` or `min_lr_rate` must be set. Received: neither")
    else:
        rate = u.nonnegative("min_lr_rate", min_lr_rate)
    return rate


def get_cosine_with_min_lr_schedule_with_warmup(
    optimizer: Any = None,
    num_warmup_steps: int = 0,
    num_training_steps: int = 0,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    *,
    lr_init: float | None = None,
) -> Schedule:
    """As :func:`get_cosine_schedule_with_warmup`, the wave rescaled to end at ``min_lr_rate``:
    ``r + (1 - r) * (1 + cos(2 pi c p)) / 2``.

    ``min_lr`` (absolute) is divided by the optimizer's default LR, as transformers does (pass
    ``optimizer`` or ``lr_init``); groups with another LR get a floor relative to their own.

    >>> s = get_cosine_with_min_lr_schedule_with_warmup(None, 0, 4, min_lr_rate=0.1)
    >>> round(s(2), 12), round(s(4), 12)
    (0.55, 0.1)
    """
    w, total = _span(num_warmup_steps, num_training_steps)
    rate = _min_rate(optimizer, min_lr, min_lr_rate, lr_init)
    return _ramp(CosineWave(1.0, rate, max(1, total - w), _cycles(num_cycles)), w)


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    optimizer: Any = None,
    num_warmup_steps: int = 0,
    num_training_steps: int = 0,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
    *,
    lr_init: float | None = None,
) -> Schedule:
    """``cosine_warmup_with_min_lr``: a warmup that never gives 0, and a cosine one step ahead.

    Warmup (``t < W``): ``(t + 1) / max(1, W)``, or with ``warmup_lr_rate = a``:
    ``a + (1 - a) * t / max(1, W - 1)``. Then ``r + (1 - r) * (1 + cos(2 pi c p)) / 2`` with
    ``p = (t - W + 1) / max(1, T - W)``.

    >>> s = get_cosine_with_min_lr_schedule_with_warmup_lr_rate(None, 2, 6, min_lr_rate=0.0)
    >>> [round(s(t), 6) for t in range(7)]
    [0.5, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.146447]
    """
    w, total = _span(num_warmup_steps, num_training_steps)
    rate = _min_rate(optimizer, min_lr, min_lr_rate, lr_init)
    body = CosineWave(1.0, rate, max(1, total - w), _cycles(num_cycles), offset=1.0)
    if not w:
        return body
    if warmup_lr_rate is None:
        ramp = Linear(1.0 / w, (w + 1.0) / w, w)
    else:
        a = u.number("warmup_lr_rate", warmup_lr_rate)
        ramp = Linear(a, a + (1.0 - a) * w / max(1, w - 1), w)
    return u.chain([(ramp, w)], body)


_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def get_wsd_schedule(
    optimizer: Any = None,
    num_warmup_steps: int = 0,
    num_decay_steps: int = 0,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0.0,
    num_cycles: float = 0.5,
) -> Schedule:
    """Warmup-stable-decay: from ``min_lr_ratio`` up to 1 (``warmup_type``), hold 1, decay to
    ``min_lr_ratio`` (``decay_type``), then hold ``min_lr_ratio``.

    ``num_stable_steps`` defaults to ``num_training_steps - num_warmup_steps -
    num_decay_steps`` (negative is an error); when both are given the stable count wins, as in
    transformers (which also warns).

    >>> s = get_wsd_schedule(None, 2, 2, num_stable_steps=2, decay_type="linear")
    >>> [s(t) for t in range(7)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0]

    References: Hu et al. 2024 (MiniCPM); Hägele et al. 2024 (1-sqrt cooldown).
    """
    w = u.steps("num_warmup_steps", num_warmup_steps)
    d = u.steps("num_decay_steps", num_decay_steps)
    if num_stable_steps is None:
        if num_training_steps is None:
            raise ValueError(
                "Either `num_training_steps` or `num_stable_steps` must be set. Received: neither"
            )
        s = u.steps("num_training_steps", num_training_steps) - w - d
        if s < 0:
            raise u.fail(
                "num_training_steps",
                f">= num_warmup_steps + num_decay_steps ({w + d})",
                num_training_steps,
            )
    else:
        s = u.steps("num_stable_steps", num_stable_steps)
    up = u.choice("warmup_type", warmup_type, _WSD_SHAPES)
    down = u.choice("decay_type", decay_type, _WSD_SHAPES)
    r = u.number("min_lr_ratio", min_lr_ratio)
    if not 0 <= r <= 1:
        raise u.fail("min_lr_ratio", "in [0, 1]", min_lr_ratio)
    warm: Schedule
    if up == "linear":
        warm = Linear(r, 1.0, max(1, w))
    elif up == "cosine":
        warm = Cosine(r, 1.0, max(1, w))
    else:  # 1 - sqrt(1 - p), rescaled: r + (1 - r) * (1 - sqrt(1 - p))
        warm = Cycles(r, 1.0, max(1, w), "poly", power=0.5)
    decay: Schedule
    if down == "linear":
        decay = Linear(1.0, r, max(1, d))
    elif down == "cosine":
        decay = CosineWave(1.0, r, max(1, d), _cycles(num_cycles))
    else:
        decay = OneMinusSqrt(1.0, r, max(1, d))
    return u.chain([(warm, w), (Constant(1.0), s), (decay, d)], Constant(r))


TYPE_TO_SCHEDULER_FUNCTION = {
    "linear": get_linear_schedule_with_warmup,
    "cosine": get_cosine_schedule_with_warmup,
    "cosine_with_restarts": get_cosine_with_hard_restarts_schedule_with_warmup,
    "polynomial": get_polynomial_decay_schedule_with_warmup,
    "constant": get_constant_schedule,
    "constant_with_warmup": get_constant_schedule_with_warmup,
    "inverse_sqrt": get_inverse_sqrt_schedule,
    "cosine_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup,
    "cosine_warmup_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    "warmup_stable_decay": get_wsd_schedule,
}

_NOT_STEP_FUNCTIONS = ("greedy",)


def get_scheduler(
    name: str,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
    *,
    optimizer: Any = None,
) -> Schedule:
    """The multiplier schedule ``transformers.get_scheduler(name, ...)`` would apply.

    Same argument names and the same rules about which arguments each name needs.
    ``scheduler_specific_kwargs`` go to the named function (e.g. ``{"num_cycles": 3}``;
    ``polynomial`` and ``cosine_with_min_lr``'s ``min_lr`` also need ``{"lr_init": lr}`` or
    ``optimizer=``). ``reduce_lr_on_plateau`` is a multiplier plateau (see
    :func:`get_reduce_on_plateau_schedule`); ``greedy`` is refused.

    >>> get_scheduler("cosine", num_warmup_steps=0, num_training_steps=10)(5)
    0.5
    >>> get_scheduler("warmup_stable_decay", 10, 100,
    ...               scheduler_specific_kwargs={"num_decay_steps": 20})(50)
    1.0
    """
    key = name.value if isinstance(name, Enum) else name
    if key == "reduce_lr_on_plateau":
        if num_warmup_steps:  # transformers ignores it; a warmup is one wrapper away
            raise ValueError(
                "transformers ignores `num_warmup_steps` for reduce_lr_on_plateau; to warm up, "
                "wrap the schedule: steadystep.warmup(s, steps=N). "
                f"Received: num_warmup_steps={num_warmup_steps!r}"
            )
        return get_reduce_on_plateau_schedule(optimizer, **(scheduler_specific_kwargs or {}))
    if key in _NOT_STEP_FUNCTIONS:
        raise ValueError(
            f"Argument `name` must name a function of the step; {key!r} depends on "
            f"metrics. Received: name={name!r}"
        )
    u.choice("name", key, TYPE_TO_SCHEDULER_FUNCTION)
    func: Any = TYPE_TO_SCHEDULER_FUNCTION[key]
    if key == "constant":
        return get_constant_schedule()
    kwargs = dict(scheduler_specific_kwargs or {})
    if num_warmup_steps is None:
        raise ValueError(f"{key} requires `num_warmup_steps`. Received: num_warmup_steps=None")
    if key == "constant_with_warmup":
        return get_constant_schedule_with_warmup(num_warmup_steps=num_warmup_steps)
    if key == "inverse_sqrt":
        return func(optimizer, num_warmup_steps=num_warmup_steps, **kwargs)
    if key == "warmup_stable_decay":
        return func(
            optimizer,
            num_warmup_steps=num_warmup_steps,
            num_training_steps=num_training_steps,
            **kwargs,
        )
    if num_training_steps is None:
        raise ValueError(f"{key} requires `num_training_steps`. Received: num_training_steps=None")
    return func(
        optimizer,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        **kwargs,
    )


def get_reduce_on_plateau_schedule(
    optimizer: Any = None, *, lr_init: float | None = None, **kwargs: Any
) -> Plateau:
    """transformers' ``reduce_lr_on_plateau``: torch's ``ReduceLROnPlateau`` as a multiplier.

    ``kwargs`` are ``ReduceLROnPlateau``'s (``mode``, ``factor``, ``patience``, ``threshold``,
    ``threshold_mode``, ``cooldown``, ``min_lr``, ``eps``). The result multiplies each group's
    LR (``steadystep.torch.Scheduler(opt, s, relative=True)``), whose ``eps`` rule then compares
    LRs as torch does; ``min_lr`` is an LR in torch, so a nonzero one needs ``optimizer`` or
    ``lr_init`` to become a multiplier floor (``min_lr / lr_init``; the groups' LR, which must
    then be one). The LRs equal torch's to
    the last bit or within a few ulps (torch multiplies the LR by ``factor``; the multiplier
    form multiplies 1.0 and then the LR).

    >>> get_reduce_on_plateau_schedule(factor=0.5, patience=2)
    plateau(constant(value=1.0), factor=0.5, patience=2)
    """
    known = (
        "mode",
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lr",
        "eps",
    )
    extra = sorted(set(kwargs) - set(known))
    if extra:
        raise TypeError(
            f"reduce_lr_on_plateau takes ReduceLROnPlateau's arguments {list(known)}. "
            f"Received unknown: {extra}"
        )
    min_lr = kwargs.pop("min_lr", 0.0)
    if isinstance(min_lr, (list, tuple)):
        raise ValueError(
            "A per-group `min_lr` list has no single multiplier form; build one schedule per "
            "group with steadystep.compat.torch.ReduceLROnPlateau. "
            f"Received: min_lr={min_lr!r}"
        )
    if u.nonnegative("min_lr", min_lr):
        if lr_init is None and optimizer is not None:
            group_lrs = {float(g["lr"]) for g in optimizer.param_groups}
            if len(group_lrs) != 1:
                raise ValueError(
                    "A nonzero `min_lr` is one multiplier floor only when every param group has "
                    f"the same LR; these have {sorted(group_lrs)}. Use one "
                    "steadystep.compat.torch.ReduceLROnPlateau per group."
                )
            lr_init = group_lrs.pop()
        min_lr = min_lr / _lr_init(None, lr_init, "reduce_lr_on_plateau's min_lr")
    return Plateau(Constant(1.0), min_lr=min_lr, **kwargs)
