"""DeepSpeed's LR schedules (``deepspeed.runtime.lr_schedules``), exactly, without DeepSpeed.

Step convention, which differs from the others: DeepSpeed's scheduler starts at
``last_batch_iteration = -1``, sets an initial LR at construction, and the engine calls
``lr_scheduler.step()`` *after* each optimizer step. So update 0 uses the initial LR and update
``t >= 1`` uses DeepSpeed's formula at iteration ``t - 1``:

- ``WarmupLR``/``WarmupDecayLR``: update 0 and update 1 both get ``warmup_min_lr``;
- ``WarmupCosineLR``: update 0 gets LR 0 (``get_lr`` returns ``[0.0]`` before the first step);
- ``OneCycle``: update 0 gets ``cycle_min_lr``.

``warmup_num_steps`` is raised to at least 2, as DeepSpeed does (``log(1) = 0``). The LR
arguments are absolute, except ``WarmupCosineLR``, which scales the optimizer's LR: pass it
as ``lr``.

>>> s = WarmupLR(warmup_min_lr=0.0, warmup_max_lr=1.0, warmup_num_steps=4, warmup_type="linear")
>>> [s(t) for t in range(7)]
[0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]

References: microsoft/DeepSpeed ``deepspeed/runtime/lr_schedules.py`` (``WarmupLR._get_gamma``,
``WarmupDecayLR``, ``WarmupCosineLR.get_lr_ratio``, ``OneCycle._get_cycle_lr`` and
``_get_decay_lr``).
"""

from __future__ import annotations

import math
from typing import Any

from ..schedules import Constant, CosineWave, Linear, LogRamp, Power, Schedule, Sequence
from . import _util as u

__all__ = ["OneCycle", "OneCycleMomentum", "WarmupCosineLR", "WarmupDecayLR", "WarmupLR"]

_TYPES = ("log", "linear")


def _after_first_step(initial: float, body: Schedule) -> Schedule:
    """``initial`` for update 0, then ``body`` at iteration ``t - 1``."""
    return Sequence((Constant(initial, 1), body), (1,))


def _ramp(low: float, high: float, warmup_num_steps: Any, warmup_type: Any) -> tuple[Schedule, int]:
    w = max(2, u.steps("warmup_num_steps", warmup_num_steps))
    kind = u.choice("warmup_type", warmup_type, _TYPES)
    return (LogRamp(low, high, w) if kind == "log" else Linear(low, high, w)), w


def WarmupLR(
    warmup_min_lr: float = 0.0,
    warmup_max_lr: float = 0.001,
    warmup_num_steps: int = 1000,
    warmup_type: str = "log",
) -> Schedule:
    """From ``warmup_min_lr`` to ``warmup_max_lr`` over ``warmup_num_steps`` iterations, then
    constant. ``"log"``: ``min + (max - min) * log(i + 1) / log(W)``; ``"linear"``:
    ``min + (max - min) * i / W`` (``i`` = iteration = update - 1).
    """
    low = u.number("warmup_min_lr", warmup_min_lr)
    high = u.number("warmup_max_lr", warmup_max_lr)
    ramp, _ = _ramp(low, high, warmup_num_steps, warmup_type)
    return _after_first_step(low, ramp)


def WarmupDecayLR(
    total_num_steps: int,
    warmup_min_lr: float = 0.0,
    warmup_max_lr: float = 0.001,
    warmup_num_steps: int = 1000,
    warmup_type: str = "log",
) -> Schedule:
    """:func:`WarmupLR`, then linear decay to ``warmup_min_lr`` at iteration
    ``total_num_steps`` (the total includes the warmup), held after.

    >>> s = WarmupDecayLR(6, 0.0, 1.0, warmup_num_steps=2, warmup_type="linear")
    >>> [s(t) for t in range(9)]
    [0.0, 0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    total = u.steps("total_num_steps", total_num_steps, minimum=1)
    low = u.number("warmup_min_lr", warmup_min_lr)
    high = u.number("warmup_max_lr", warmup_max_lr)
    ramp, w = _ramp(low, high, warmup_num_steps, warmup_type)
    decay = Linear(high, low, total - w) if total > w else Constant(low)
    return _after_first_step(low, Sequence((ramp, decay), (w,)))


def WarmupCosineLR(
    lr: float,
    total_num_steps: int,
    warmup_min_ratio: float = 0.0,
    warmup_num_steps: int = 1000,
    cos_min_ratio: float = 0.0001,
    warmup_type: str = "log",
) -> Schedule:
    """Warmup of the ratio from ``warmup_min_ratio`` to 1, then a cosine from 1 to
    ``cos_min_ratio``, times ``lr`` (the optimizer's LR).

    After warmup the cosine is one iteration ahead (``i - W + 1``) and, like DeepSpeed's, is not
    clamped: past ``total_num_steps`` it rises again.

    >>> s = WarmupCosineLR(1.0, 6, warmup_num_steps=2, cos_min_ratio=0.0, warmup_type="linear")
    >>> [round(s(t), 6) for t in range(8)]
    [0.0, 0.0, 0.5, 0.853553, 0.5, 0.146447, 0.0, 0.146447]
    """
    base = u.nonnegative("lr", lr)
    total = u.steps("total_num_steps", total_num_steps, minimum=1)
    low = u.number("warmup_min_ratio", warmup_min_ratio)
    floor = u.number("cos_min_ratio", cos_min_ratio)
    ramp, w = _ramp(base * low, base, warmup_num_steps, warmup_type)
    if not total > w:
        raise u.fail(
            "total_num_steps",
            f"> warmup_num_steps ({w}); DeepSpeed divides by the difference",
            total_num_steps,
        )
    if floor < 0:
        raise u.fail("cos_min_ratio", ">= 0", cos_min_ratio)
    cosine = CosineWave(base, base * floor, total - w, 0.5, offset=1.0)
    return _after_first_step(0.0, Sequence((ramp, cosine), (w,)))


def OneCycle(
    cycle_min_lr: float,
    cycle_max_lr: float,
    decay_lr_rate: float = 0.0,
    cycle_first_step_size: int = 2000,
    cycle_second_step_size: int | None = None,
    decay_step_size: int = 0,
) -> Schedule:
    """The LR of DeepSpeed's ``OneCycle``: up from ``cycle_min_lr`` to ``cycle_max_lr`` over
    ``cycle_first_step_size`` iterations, back down over ``cycle_second_step_size`` (default:
    the same), then ``cycle_min_lr * (1 + decay_lr_rate * k / decay_step_size)`` for ``k``
    iterations after the cycle (as the cited source computes it). The stair counts are not
    reproduced; the momentum is :func:`OneCycleMomentum`.

    >>> s = OneCycle(0.0, 1.0, cycle_first_step_size=2)
    >>> [s(t) for t in range(7)]
    [0.0, 0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    low = u.nonnegative("cycle_min_lr", cycle_min_lr)
    high = u.nonnegative("cycle_max_lr", cycle_max_lr)
    up = u.positive("cycle_first_step_size", cycle_first_step_size)
    down = (
        up
        if cycle_second_step_size is None
        else u.positive("cycle_second_step_size", cycle_second_step_size)
    )
    after = _growth(low, decay_lr_rate, "decay_lr_rate", decay_step_size)
    return _after_first_step(low, Sequence((Linear(low, high, up), Linear(high, low, down), after)))


def _growth(value: float, rate: Any, rate_name: str, decay_step_size: Any) -> Schedule:
    """``value * (1 + rate * k / decay_step_size)`` for ``k`` iterations after the cycle."""
    r = u.nonnegative(rate_name, rate)
    if r and value:
        size = u.steps("decay_step_size", decay_step_size, minimum=1)
        scale, offset = value * r / size, size / r
        if scale > 0 and math.isfinite(offset):  # else too small a rate to change a float
            return Power(scale, 1.0, offset)
    return Constant(value)


def OneCycleMomentum(
    cycle_min_mom: float = 0.8,
    cycle_max_mom: float = 0.9,
    decay_mom_rate: float = 0.0,
    cycle_first_step_size: int = 2000,
    cycle_second_step_size: int | None = None,
    decay_step_size: int = 0,
) -> Schedule:
    """The momentum (Adam's ``betas[0]``) of DeepSpeed's ``OneCycle(cycle_momentum=True)``:
    ``cycle_min_mom`` for update 0 (set by the constructor), then from ``cycle_max_mom`` down
    to ``cycle_min_mom`` while the LR rises and back, then
    ``cycle_max_mom * (1 + decay_mom_rate * k / decay_step_size)``.

    >>> s = OneCycleMomentum(0.8, 0.9, cycle_first_step_size=2)
    >>> [round(s(t), 12) for t in range(7)]
    [0.8, 0.9, 0.85, 0.8, 0.85, 0.9, 0.9]
    """
    low = u.nonnegative("cycle_min_mom", cycle_min_mom)
    high = u.nonnegative("cycle_max_mom", cycle_max_mom)
    up = u.positive("cycle_first_step_size", cycle_first_step_size)
    down = (
        up
        if cycle_second_step_size is None
        else u.positive("cycle_second_step_size", cycle_second_step_size)
    )
    after = _growth(high, decay_mom_rate, "decay_mom_rate", decay_step_size)
    return _after_first_step(low, Sequence((Linear(high, low, up), Linear(low, high, down), after)))
