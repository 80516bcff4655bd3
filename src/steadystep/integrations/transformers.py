"""Hugging Face Trainer: a steadystep schedule by spec, and steadystep clipping.

>>> from steadystep.integrations.transformers import SteadystepMixin, SteadystepTrainer

``SteadystepTrainer`` is ``transformers.Trainer`` with three more arguments; for another
trainer class (``Seq2SeqTrainer``, TRL's ``SFTTrainer``) mix it in:
``class MyTrainer(SteadystepMixin, SFTTrainer): pass``.

- ``schedule``: spec text, a spec dict or a schedule, a **multiplier** of each group's learning
  rate (``args.learning_rate``; peak 1.0), as Trainer's own schedules are. The warmup of the
  ``TrainingArguments`` (``warmup_steps`` / ``warmup_ratio``, via ``args.get_warmup_steps``) is
  put in front of it: ``warmup(schedule, steps=W)``; lengths written as fractions resolve over
  Trainer's total number of updates, ``of="rest"`` being what the warmup leaves. Built in
  ``create_scheduler``, so ``resume_from_checkpoint`` reloads it like any scheduler (and refuses a
  checkpoint saved with a different schedule).
- ``clip``: a max norm, an adaptive clipper's name (``"zclip"``, ``"autoclip"``, ``"agc"``,
  ``"spike_skip"``, with ``clip_options``) or a callable ``params -> clipper``; it replaces the
  ``max_grad_norm`` clipping (after AMP unscaling), and Trainer logs its pre-clip norm as
  ``grad_norm``. ``nonfinite="skip"`` skips an update with a non-finite norm (the schedule does
  not count it). An adaptive clipper's statistics are saved with each checkpoint
  (``steadystep_clipper.pt``) and restored on resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
import transformers

from ..schedules import Schedule, Unresolved, Warmup, parse
from ..torch import Scheduler
from ._clipping import ClipRule

__all__ = ["SteadystepMixin", "SteadystepTrainer"]

_CLIPPER_FILE = "steadystep_clipper.pt"


class SteadystepMixin:
    """Adds ``schedule=``, ``clip=`` (``clip_options=``, ``nonfinite=``) to a Trainer class."""

    def __init__(
        self,
        *args: Any,
        schedule: str | Mapping[str, Any] | Schedule | None = None,
        clip: float | str | Callable[..., Any] | None = None,
        clip_options: Mapping[str, Any] | None = None,
        nonfinite: str = "propagate",
        **kwargs: Any,
    ) -> None:
        if clip is not None and not hasattr(transformers.Trainer, "_clip_grad_norm"):
            raise RuntimeError(
                "steadystep clipping in Trainer needs transformers with Trainer._clip_grad_norm "
                f"(this is transformers {transformers.__version__}); clip in a callback instead."
            )
        self.steadystep_schedule = None if schedule is None else _check_schedule(schedule)
        self.steadystep_clip = None
        if clip is not None:
            self.steadystep_clip = ClipRule(clip, clip_options, nonfinite=nonfinite)
        super().__init__(*args, **kwargs)

    # -- schedule ------------------------------------------------------------------------------
    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> Any:
        trainer: Any = self
        if trainer.lr_scheduler is None and self.steadystep_schedule is not None:
            optimizer = optimizer if optimizer is not None else trainer.optimizer
            trainer.lr_scheduler = Scheduler(
                optimizer,
                self.full_schedule(num_training_steps),
                relative=True,
            )
            trainer._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)  # type: ignore[misc]

    def full_schedule(self, num_training_steps: int) -> Schedule:
        """The multiplier schedule of a run of ``num_training_steps`` updates (warmup included)."""
        schedule = self.steadystep_schedule
        assert schedule is not None
        warm = self.args.get_warmup_steps(num_training_steps)  # type: ignore[attr-defined]
        if warm:
            if isinstance(schedule, Warmup) or (
                isinstance(schedule, Unresolved) and schedule.name == "warmup"
            ):
                raise ValueError(
                    f"Warmup is given twice: the schedule {schedule!r} starts with a warmup and "
                    f"the TrainingArguments ask for {warm} warmup steps (warmup_steps / "
                    "warmup_ratio). Keep one of them."
                )
            schedule = Warmup(schedule, steps=warm)
        return parse(schedule, total_steps=num_training_steps)

    # -- clipping ------------------------------------------------------------------------------
    def _clip_grad_norm(self, model: torch.nn.Module) -> Any:
        if self.steadystep_clip is None:
            return super()._clip_grad_norm(model)  # type: ignore[misc]
        trainer: Any = self
        trainer.accelerator.unscale_gradients()  # AMP: clip the true gradients
        optimizer = trainer.optimizer
        self.steadystep_clip.bind(getattr(optimizer, "optimizer", optimizer))
        return self.steadystep_clip().norm

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        if self.steadystep_clip is not None and grad_norm is None:  # max_grad_norm = 0
            grad_norm = self._clip_grad_norm(model)
        return super()._get_grad_norm(model, grad_norm=grad_norm)  # type: ignore[misc]

    # -- checkpoints -----------------------------------------------------------------------------
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]
        state = self.steadystep_clip.state_dict() if self.steadystep_clip is not None else {}
        if state and self.args.should_save:  # type: ignore[attr-defined]
            torch.save(state, os.path.join(output_dir, _CLIPPER_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
        if checkpoint is None or self.steadystep_clip is None:
            return
        path = os.path.join(checkpoint, _CLIPPER_FILE)
        if os.path.isfile(path):
            self.steadystep_clip.load_state_dict(torch.load(path, weights_only=True))
        elif self.steadystep_clip.factory is not None:
            raise ValueError(
                f"The checkpoint {checkpoint!r} has no {_CLIPPER_FILE}: it was not saved with "
                "this adaptive clipper, whose statistics would restart from nothing."
            )


def _check_schedule(schedule: Any) -> Schedule:
    if isinstance(schedule, (str, Mapping, Schedule)):
        return parse(schedule)
    raise TypeError(
        "Argument `schedule` must be spec text, a spec dict or a steadystep Schedule. "
        f"Received: schedule={schedule!r} of type {type(schedule).__name__}"
    )


class SteadystepTrainer(SteadystepMixin, transformers.Trainer):
    """``transformers.Trainer`` with ``schedule=``, ``clip=``, ``clip_options=``, ``nonfinite=``."""
