"""`PlateauScheduler`: a :class:`Scheduler` that training tools recognise as ``ReduceLROnPlateau``.

The Hugging Face Trainer feeds evaluation metrics only to schedulers that are instances of
``torch.optim.lr_scheduler.ReduceLROnPlateau`` (``Trainer._evaluate``), and Lightning sets an
lr_scheduler config's ``reduce_on_plateau`` from the same ``isinstance`` test. This class passes
that test; nothing of ``ReduceLROnPlateau`` runs (the :class:`Scheduler`'s methods come first).
"""

from __future__ import annotations

from typing import Any

from torch.optim.lr_scheduler import ReduceLROnPlateau

from ._scheduler import Scheduler

__all__ = ["PlateauScheduler"]


class PlateauScheduler(Scheduler, ReduceLROnPlateau):
    """A :class:`Scheduler` with a plateau, that ``isinstance(s, ReduceLROnPlateau)`` accepts.

    Same arguments as :class:`Scheduler`; at least one schedule must contain a
    :func:`steadystep.plateau`. Tools that recognise it call only ``step(metric)`` (after each
    evaluation), not ``step()`` after each update, so the value moves only at evaluations: right
    for a plateau on a constant, which is torch's ``ReduceLROnPlateau``. With a schedule that
    moves between evaluations (a warmup, a cosine) also call ``step()`` after every update (a
    Trainer callback's ``on_step_end``; a second Lightning lr_scheduler config with
    ``"interval": "step"``). See ``docs/plateau.md``.
    """

    def __init__(self, optimizer: Any, schedule: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, schedule, **kwargs)
        if self._metrics.rule is None:
            raise ValueError(
                "PlateauScheduler needs a schedule with a plateau, e.g. "
                "steadystep.plateau(steadystep.constant(1e-3), patience=5). "
                f"Received: schedule={schedule!r}"
            )
