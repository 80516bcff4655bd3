"""DeepSpeed's LR schedules (``deepspeed.runtime.lr_schedules``), exactly, without DeepSpeed.

Step convention: DeepSpeed's scheduler starts at ``last_batch_iteration = -1``, sets an initial
LR at construction, and the engine calls ``lr_scheduler.step()`` *after* each optimizer step.
So update 0 uses the constructor's LR and update ``t >= 1`` uses the LR DeepSpeed computes at
``last_batch_iteration = t - 1``:

- ``WarmupLR``/``WarmupDecayLR``: update 0 and update 1 both get ``warmup_min_lr``;
- ``WarmupCosineLR``: update 0 gets LR 0 (``get_lr`` returns ``[0.0]`` before the first step);
- ``OneCycle`` and ``LRRangeTest`` evaluate at ``last_batch_iteration + 1``, so update ``t``
  gets their formula at ``t`` (update 0: ``cycle_min_lr``, ``lr_range_test_min_lr``).

``warmup_num_steps`` is raised to at least 2, as DeepSpeed does (``log(1) = 0``). The LR
arguments are absolute. Where DeepSpeed reads the optimizer's LR (``WarmupLR``'s
``warmup_max_lr=None``, its default; ``WarmupCosineLR``'s ratios), pass that LR as ``lr``.

>>> s = WarmupLR(warmup_min_lr=0.0, warmup_max_lr=1.0, warmup_num_steps=4, warmup_type="linear")
>>> [s(t) for t in range(7)]
[0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]

References: deepspeedai/DeepSpeed ``deepspeed/runtime/lr_schedules.py`` (``WarmupLR._get_gamma``,
``WarmupDecayLR._get_gamma``, ``WarmupCosineLR.get_lr_ratio``, ``OneCycle._get_scale_factor``,
``_get_decay_lr``, ``_get_decay_mom``, ``LRRangeTest._get_increase``); the commit checked is in
``docs/compat.md``.
"""

from __future__ import annotations

from typing import Any

from ..schedules import Constant, CosineWave, Linear, LogRamp, Schedule, Sequence, Warmup
from ..schedules._shapes import LinearFactor, StairCycle
from . import _util as u

__all__ = [
    "LRRangeTest",
    "OneCycle",
    "OneCycleMomentum",
    "WarmupCosineLR",
    "WarmupDecayLR",
    "WarmupLR",
]

_TYPES = ("log", "linear")


def _after_first_step(initial: float, body: Schedule) -> Schedule:
    """``initial`` for update 0, then ``body`` at iteration ``t - 1``."""
    return Sequence((Constant(initial, 1), body), (1,))


def _ramp(low: float, high: float, warmup_num_steps: Any, warmup_type: Any) -> tuple[Schedule, int]:
    w = max(2, u.steps("warmup_num_steps", warmup_num_steps, minimum=1))
    kind = u.choice("warmup_type", warmup_type, _TYPES)
    return (LogRamp(low, high, w) if kind == "log" else Linear(low, high, w)), w


def _max_lr(warmup_max_lr: Any, lr: Any) -> float:
    """``warmup_max_lr``, or (DeepSpeed's ``None``) the optimizer's LR given as ``lr``."""
    if warmup_max_lr is not None:
        if lr is not None:
            raise ValueError(
                "Arguments `warmup_max_lr` and `lr` are exclusive: `lr` (the optimizer's LR) "
                f"stands for DeepSpeed's warmup_max_lr=None. Received: "
                f"warmup_max_lr={warmup_max_lr!r}, lr={lr!r}"
            )
        return u.number("warmup_max_lr", warmup_max_lr)
    if lr is None:
        raise ValueError(
            "Argument `warmup_max_lr` is None, so DeepSpeed warms up to the optimizer's own LR: "
            "pass it as `lr` (or give warmup_max_lr). Received: warmup_max_lr=None, lr=None"
        )
    return u.number("lr", lr)


def WarmupLR(
    warmup_min_lr: float = 0.0,
    warmup_max_lr: float | None = None,
    warmup_num_steps: int = 1000,
    warmup_type: str = "log",
    *,
    lr: float | None = None,
) -> Schedule:
    """From ``warmup_min_lr`` to ``warmup_max_lr`` over ``warmup_num_steps`` iterations, then
    constant. ``"log"``: ``min + (max - min) * log(i + 1) / log(W)``; ``"linear"``:
    ``min + (max - min) * i / W`` (``i`` = iteration = update - 1).

    ``warmup_max_lr=None`` (DeepSpeed's default) warms up to the optimizer's LR, given as
    ``lr``: ``WarmupLR(lr=optimizer.param_groups[0]["lr"])``.

    >>> s = WarmupLR(warmup_num_steps=2, warmup_type="linear", lr=0.1)
    >>> [s(t) for t in range(4)]
    [0.0, 0.0, 0.05, 0.1]
    """
    low = u.number("warmup_min_lr", warmup_min_lr)
    ramp, _ = _ramp(low, _max_lr(warmup_max_lr, lr), warmup_num_steps, warmup_type)
    return _after_first_step(low, ramp)


def WarmupDecayLR(
    total_num_steps: int,
    warmup_min_lr: float = 0.0,
    warmup_max_lr: float | None = 0.001,
    warmup_num_steps: int = 1000,
    warmup_type: str = "log",
    *,
    lr: float | None = None,
) -> Schedule:
    """:func:`WarmupLR`, then linear decay to ``warmup_min_lr`` at iteration
    ``total_num_steps`` (the total includes the warmup), held after. The default
    ``warmup_max_lr`` is 0.001, as in DeepSpeed; ``warmup_max_lr=None`` with ``lr`` as in
    :func:`WarmupLR`.

    >>> s = WarmupDecayLR(6, 0.0, 1.0, warmup_num_steps=2, warmup_type="linear")
    >>> [s(t) for t in range(9)]
    [0.0, 0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    total = u.steps("total_num_steps", total_num_steps, minimum=1)
    low = u.number("warmup_min_lr", warmup_min_lr)
    high = _max_lr(warmup_max_lr, lr)
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
    """``lr`` (the optimizer's LR) times a ratio: warmup from ``warmup_min_ratio`` to 1 over
    ``warmup_num_steps`` iterations, then a cosine from 1 to ``cos_min_ratio`` at iteration
    ``total_num_steps``, held there after.

    The cosine runs one iteration ahead (``(i - W + 1) / max(1, total - W)``, clamped to 1), so
    ``total_num_steps <= warmup_num_steps`` gives ``cos_min_ratio`` right after the warmup.

    >>> s = WarmupCosineLR(1.0, 6, warmup_num_steps=2, cos_min_ratio=0.0, warmup_type="linear")
    >>> [round(s(t), 6) for t in range(9)]
    [0.0, 0.0, 0.5, 0.853553, 0.5, 0.146447, 0.0, 0.0, 0.0]
    """
    base = u.nonnegative("lr", lr)
    total = u.steps("total_num_steps", total_num_steps, minimum=1)
    low = u.number("warmup_min_ratio", warmup_min_ratio)
    floor = u.nonnegative("cos_min_ratio", cos_min_ratio)
    ramp, w = _ramp(low, 1.0, warmup_num_steps, warmup_type)
    span = max(1, total - w)
    wave = CosineWave(1.0, floor, span, 0.5, offset=1.0)
    ratio = Sequence((ramp, u.chain([(wave, span - 1)], Constant(floor))), (w,))
    return _after_first_step(0.0, ratio * base)


def _post_cycle(value: float, rate: Any, rate_name: str, size: Any, inverse: bool) -> Schedule:
    """``value / f`` (LR) or ``value * f`` (momentum), ``f = 1 + rate * k / decay_step_size``
    for ``k`` iterations after the cycle; constant where DeepSpeed skips the decay (a zero
    rate or a zero ``decay_step_size``)."""
    r = u.nonnegative(rate_name, rate)
    k = u.nonnegative("decay_step_size", size)
    if r == 0 or k == 0:
        return Constant(value)
    return LinearFactor(value, r, k, inverse=inverse)


def _cycle(
    low: float, high: float, first: Any, second: Any, first_stairs: Any, second_stairs: Any
) -> StairCycle:
    up = u.positive("cycle_first_step_size", first)
    down = up if second is None else u.nonnegative("cycle_second_step_size", second)
    n1 = u.steps("cycle_first_stair_count", first_stairs)
    n2 = n1 if second_stairs is None else u.steps("cycle_second_stair_count", second_stairs)
    return StairCycle(low, high, up, down, n1, n2)


def OneCycle(
    cycle_min_lr: float,
    cycle_max_lr: float,
    decay_lr_rate: float = 0.0,
    cycle_first_step_size: int = 2000,
    cycle_second_step_size: int | None = None,
    cycle_first_stair_count: int = 0,
    cycle_second_stair_count: int | None = None,
    decay_step_size: int = 0,
) -> Schedule:
    """The LR of DeepSpeed's ``OneCycle``: up from ``cycle_min_lr`` to ``cycle_max_lr`` over
    ``cycle_first_step_size`` updates, back down over ``cycle_second_step_size`` (default: the
    same; 0 drops straight back), in stairs if ``cycle_*_stair_count > 0``; then
    ``cycle_min_lr / (1 + decay_lr_rate * k / decay_step_size)`` ``k`` updates after the cycle.
    The momentum is :func:`OneCycleMomentum`.

    >>> s = OneCycle(0.0, 1.0, cycle_first_step_size=2)
    >>> [s(t) for t in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    >>> [OneCycle(1.0, 2.0, 1.0, 1, decay_step_size=1)(t) for t in (2, 3, 4)]
    [1.0, 0.5, 0.3333333333333333]
    """
    low = u.number("cycle_min_lr", cycle_min_lr)
    high = u.number("cycle_max_lr", cycle_max_lr)
    cycle = _cycle(
        low,
        high,
        cycle_first_step_size,
        cycle_second_step_size,
        cycle_first_stair_count,
        cycle_second_stair_count,
    )
    after = _post_cycle(low, decay_lr_rate, "decay_lr_rate", decay_step_size, inverse=True)
    return Sequence((cycle, after), (cycle.up + cycle.down,))


def OneCycleMomentum(
    cycle_min_mom: float = 0.8,
    cycle_max_mom: float = 0.9,
    decay_mom_rate: float = 0.0,
    cycle_first_step_size: int = 2000,
    cycle_second_step_size: int | None = None,
    cycle_first_stair_count: int = 0,
    cycle_second_stair_count: int | None = None,
    decay_step_size: int = 0,
) -> Schedule:
    """The momentum (Adam's ``betas[0]``) of DeepSpeed's ``OneCycle(cycle_momentum=True)``:
    ``cycle_min_mom`` for update 0 (set by the constructor), then from ``cycle_max_mom`` down
    to ``cycle_min_mom`` while the LR rises and back, then
    ``cycle_max_mom * (1 + decay_mom_rate * k / decay_step_size)`` (DeepSpeed grows it).

    >>> s = OneCycleMomentum(0.8, 0.9, cycle_first_step_size=2)
    >>> [round(s(t), 12) for t in range(6)]
    [0.8, 0.85, 0.8, 0.85, 0.9, 0.9]
    """
    low = u.number("cycle_min_mom", cycle_min_mom)
    high = u.number("cycle_max_mom", cycle_max_mom)
    cycle = _cycle(
        high,
        low,
        cycle_first_step_size,
        cycle_second_step_size,
        cycle_first_stair_count,
        cycle_second_stair_count,
    )
    after = _post_cycle(high, decay_mom_rate, "decay_mom_rate", decay_step_size, inverse=False)
    body = Sequence((cycle, after), (cycle.up + cycle.down,))
    # update 0 only: the constructor's value (a one-step warmup from it, on the same clock)
    return Warmup(body, 1, start=low, overlay=True) if low != high else body


def LRRangeTest(
    lr_range_test_min_lr: float = 1e-3,
    lr_range_test_step_size: int = 2000,
    lr_range_test_step_rate: float = 1.0,
    lr_range_test_staircase: bool = False,
) -> Schedule:
    """DeepSpeed's LR range test: ``lr_range_test_min_lr * (1 + rate * t / step_size)``
    (``floor(t / step_size)`` with ``lr_range_test_staircase=True``), growing without end.

    >>> s = LRRangeTest(0.1, lr_range_test_step_size=2, lr_range_test_staircase=True)
    >>> [s(t) for t in range(5)]
    [0.1, 0.1, 0.2, 0.2, 0.30000000000000004]

    References: Smith 2018, "A disciplined approach to neural network hyper-parameters: Part 1".
    """
    return LinearFactor(
        u.positive("lr_range_test_min_lr", lr_range_test_min_lr),
        u.nonnegative("lr_range_test_step_rate", lr_range_test_step_rate),
        u.steps("lr_range_test_step_size", lr_range_test_step_size, minimum=1),
        stairs=u.flag("lr_range_test_staircase", lr_range_test_staircase),
    )
