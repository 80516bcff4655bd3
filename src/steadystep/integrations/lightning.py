"""Lightning: steadystep schedules stepped per update, and steadystep clipping as a Callback.

>>> from steadystep.integrations.lightning import GradientClipping, scheduler_config

In a ``LightningModule``::

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
        sched = ss.torch.Scheduler(opt, "warmup(cosine(0.001, 0.0, steps=fraction(1.0, "
                                   "of='rest')), steps=fraction(0.05))",
                                   total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": scheduler_config(sched)}

``scheduler_config`` says ``"interval": "step"``: Lightning then calls ``scheduler.step()``
after every optimizer update (its default, ``"epoch"``, would apply a whole epoch of updates at
once). The Lightning package is ``lightning`` (``lightning.pytorch``), else the standalone
``pytorch_lightning``. With LightningCLI, set
``configure_optimizers = staticmethod(configure_optimizers)`` on a ``LightningCLI`` subclass
(see ``docs/integrations.md``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

try:  # the `lightning` package; the standalone `pytorch_lightning` otherwise
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on the install
    import pytorch_lightning as pl  # type: ignore[no-redef]
    from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]

from ..torch import Scheduler
from ._clipping import ClipRule

__all__ = ["GradientClipping", "configure_optimizers", "scheduler_config"]


def scheduler_config(scheduler: Scheduler, *, name: str | None = None) -> dict[str, Any]:
    """Lightning's scheduler config for a steadystep Scheduler: stepped after every update.

    ``name`` is the ``LearningRateMonitor`` prefix (default ``"lr-<Optimizer>"``); each param
    group shows under its ``"name"`` key (``lr-AdamW/head``), so name your groups.
    """
    if not isinstance(scheduler, Scheduler):
        raise TypeError(
            "Argument `scheduler` must be a steadystep.torch.Scheduler. "
            f"Received: scheduler={scheduler!r} of type {type(scheduler).__name__}"
        )
    return {"scheduler": scheduler, "interval": "step", "frequency": 1, "name": name}


def configure_optimizers(
    lightning_module: Any, optimizer: torch.optim.Optimizer, lr_scheduler: Any = None
) -> Any:
    """``LightningCLI.configure_optimizers`` that steps a steadystep Scheduler per update.

    Other schedulers keep LightningCLI's behaviour.
    """
    if isinstance(lr_scheduler, Scheduler):
        return {"optimizer": optimizer, "lr_scheduler": scheduler_config(lr_scheduler)}
    LightningCLI = importlib.import_module(pl.__name__ + ".cli").LightningCLI

    return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)


class GradientClipping(Callback):
    """Clip gradients with steadystep before each optimizer step, and log what it did.

    Args:
        clip: a max norm (``clip_grad_norm_``), an adaptive clipper's name (``"zclip"``,
            ``"autoclip"``, ``"agc"``, ``"spike_skip"``, with ``clip_options``) or a callable
            ``params -> clipper`` such as ``functools.partial(ss.torch.ZClip, z_thresh=2.5)``.
        clip_options: keyword arguments of a named clipper.
        norm_type: p of the p-norm.
        nonfinite: ``"propagate"``, ``"raise"`` or ``"skip"`` (the update with a non-finite
            norm changes nothing; a steadystep Scheduler does not count it).
        log: log ``grad/norm``, ``grad/clipped`` and ``grad/skipped`` with ``pl_module.log``
            each step (device tensors: Lightning reads them at its logging interval).

    Replaces ``Trainer(gradient_clip_val=...)`` (refused together with it). Attached twice, the
    Trainer refuses it ("more than one stateful callback of type `GradientClipping`"). Runs in
    ``on_before_optimizer_step``, after AMP has unscaled the gradients. An adaptive clipper's
    statistics are saved in the checkpoint and restored on resume.
    """

    def __init__(
        self,
        clip: float | str | Callable[..., Any] = 1.0,
        clip_options: Mapping[str, Any] | None = None,
        *,
        norm_type: float | str = 2.0,
        nonfinite: str = "propagate",
        log: bool = True,
    ) -> None:
        self.rule = ClipRule(clip, clip_options, norm_type=norm_type, nonfinite=nonfinite)
        self.log = bool(log)
        self.last: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # attached twice: the Trainer itself refuses two callbacks with one state key
        if trainer.gradient_clip_val:
            raise ValueError(
                "GradientClipping replaces the Trainer's own clipping, but the Trainer has "
                f"gradient_clip_val={trainer.gradient_clip_val!r}. Leave gradient_clip_val unset."
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.rule.bind(optimizer)
        result = self.last = self.rule()
        if self.log:
            pl_module.log_dict(
                {
                    "grad/norm": result.norm,
                    "grad/clipped": result.clipped.float(),
                    "grad/skipped": result.skipped.float(),
                },
                on_step=True,
                on_epoch=False,
            )

    def state_dict(self) -> dict[str, Any]:
        return self.rule.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rule.load_state_dict(state_dict)
