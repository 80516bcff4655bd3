"""fairseq's ``inverse_sqrt`` and ``tri_stage`` LR schedulers, exactly, without fairseq.

fairseq sets the LR for ``num_updates = 0`` at construction and calls
``step_update(num_updates)`` after every update, so ``s(t)`` is ``step_update(t)``: the LR of
update ``t``. Argument names are fairseq's config fields (``lr`` is ``cfg.lr[0]``).

>>> from steadystep.compat import fairseq
>>> s = fairseq.inverse_sqrt(5e-4, warmup_updates=4000)
>>> s(0), s(2000), s(4000), s(16000)
(0.0, 0.00025, 0.0005, 0.00025)

References: facebookresearch/fairseq ``fairseq/optim/lr_scheduler/inverse_square_root_schedule.py``
and ``tri_stage_lr_scheduler.py``.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceType

from ..schedules import Constant, Exponential, InverseSqrt, Linear, Schedule, Warmup
from . import _util as u

__all__ = ["inverse_sqrt", "tri_stage"]


def inverse_sqrt(lr: float, warmup_updates: int = 4000, warmup_init_lr: float = -1) -> Schedule:
    """Linear warmup from ``warmup_init_lr`` (default 0) to ``lr`` over ``warmup_updates``, then
    ``lr * sqrt(warmup_updates / t)``.

    ``warmup_init_lr < 0`` means 0 (fairseq's default). ``warmup_updates=0`` divides by zero
    in fairseq and is refused here.
    """
    peak = u.positive("lr", lr)
    w = u.steps("warmup_updates", warmup_updates, minimum=1)
    start = u.number("warmup_init_lr", warmup_init_lr)
    return Warmup(InverseSqrt(peak, w), w, start=max(start, 0.0))


def tri_stage(
    lr: float,
    warmup_steps: int = 4000,
    hold_steps: int = 20000,
    decay_steps: int = 60000,
    init_lr_scale: float = 0.01,
    final_lr_scale: float = 0.01,
    phase_ratio: SequenceType[float] | None = None,
    max_update: int | None = None,
) -> Schedule:
    """Three stages: linear warmup from ``init_lr_scale * lr`` to ``lr``, hold ``lr``,
    exponential decay to ``final_lr_scale * lr`` over ``decay_steps`` (reached at the last
    decay step, inclusive), then hold it.

    With ``phase_ratio`` (three fractions summing to 1) and ``max_update`` the stage lengths
    are ``int(max_update * ratio)``, as fairseq computes them.

    >>> s = tri_stage(1.0, warmup_steps=2, hold_steps=2, decay_steps=2, final_lr_scale=0.25)
    >>> [s(t) for t in range(8)]
    [0.01, 0.505, 1.0, 1.0, 1.0, 0.5, 0.25, 0.25]

    References: Park et al. 2019, "SpecAugment" (the tri-stage schedule).
    """
    peak = u.positive("lr", lr)
    if phase_ratio is not None:
        if max_update is None:
            raise ValueError(
                "Argument `max_update` must be set with `phase_ratio`. Received: max_update=None"
            )
        ratios = u.check.numbers_tuple("phase_ratio", phase_ratio)
        if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6 or min(ratios) < 0:
            raise u.fail("phase_ratio", "three fractions >= 0 summing to 1", list(ratios))
        total = u.steps("max_update", max_update, minimum=1)
        warmup_steps, hold_steps, decay_steps = (int(total * r) for r in ratios)
    w = u.steps("warmup_steps", warmup_steps)
    h = u.steps("hold_steps", hold_steps)
    d = u.steps("decay_steps", decay_steps, minimum=1)
    init = u.positive("init_lr_scale", init_lr_scale) * peak
    final_scale = u.positive("final_lr_scale", final_lr_scale)
    if final_scale > 1:
        raise u.fail("final_lr_scale", "<= 1", final_lr_scale)
    decay = Exponential(peak, final_scale, d, end=peak * final_scale)
    return u.chain([(Linear(init, peak, max(w, 1)), w), (Constant(peak), h)], decay)
