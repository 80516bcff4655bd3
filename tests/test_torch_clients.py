"""steadystep.torch.Scheduler in the training tools people use, unmodified: Hugging Face
``Trainer`` (``optimizers=(opt, scheduler)``), Lightning (``"interval": "step"``) and Accelerate.

Each trains a tiny model for a few updates with gradient accumulation and checks the learning
rate every real update used (recorded by an optimizer step pre-hook) against the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from steadystep.torch import Scheduler  # noqa: E402

SCHEDULE = ss.warmup(ss.cosine(0.01, 0.001, steps=6), steps=3)
UPDATES = 6
EXPECTED = SCHEDULE(np.arange(UPDATES)).tolist()


def record_lrs(opt: torch.optim.Optimizer) -> list[float]:
    used: list[float] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: used.append(o.param_groups[0]["lr"]))
    return used


class Tiny(torch.nn.Module):
    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        out = self.lin(x).squeeze(-1)
        loss = torch.nn.functional.mse_loss(out, labels) if labels is not None else None
        return {"loss": loss, "logits": out}


def rows(n: int, bad: int | None = None) -> list[dict[str, torch.Tensor]]:
    """``n`` samples; the inputs of sample ``bad`` are made infinite (a corrupt batch)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(4, generator=g)
        out.append({"x": x * math.inf if i == bad else x, "labels": torch.randn((), generator=g)})
    return out


def training_args(tmp_path: Any, **settings: Any) -> Any:
    """``TrainingArguments`` for a quiet CPU run (batches of 2, no reports, no progress bar,
    no saving or logging unless ``settings`` ask for them)."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    quiet: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 2,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    return transformers.TrainingArguments(**{**quiet, **settings})


@pytest.fixture
def fresh_accelerate_state() -> Iterator[None]:
    accelerate_state = pytest.importorskip("accelerate.state", reason="accelerate not installed")
    accelerate_state.AcceleratorState._reset_state(True)
    accelerate_state.GradientState._reset_state()
    yield
    accelerate_state.AcceleratorState._reset_state(True)
    accelerate_state.GradientState._reset_state()


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_hugging_face_trainer(tmp_path: Any) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    sched = Scheduler(opt, SCHEDULE)
    used = record_lrs(opt)
    args = training_args(tmp_path, gradient_accumulation_steps=2, max_steps=UPDATES)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=rows(64), optimizers=(opt, sched)
    )
    trainer.train()
    assert trainer.lr_scheduler is sched
    assert used == EXPECTED
    assert sched.last_epoch == UPDATES and trainer.state.global_step == UPDATES


# PL 2.6 on torch 2.13 uses a deprecated pytree name
@pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.filterwarnings("ignore:.*(GPU available|TPU available|HPU available)")
@pytest.mark.filterwarnings("ignore:.*smaller than the logging interval")
def test_lightning_trainer(tmp_path: Any) -> None:
    pl = pytest.importorskip("pytorch_lightning", reason="pytorch-lightning not installed")
    used: list[float] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Tiny()

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.net(**batch)["loss"]

        def configure_optimizers(self) -> dict[str, Any]:
            opt = torch.optim.SGD(self.parameters(), lr=1.0, momentum=0.9)
            opt.register_step_pre_hook(lambda o, a, k: used.append(o.param_groups[0]["lr"]))
            sched = Scheduler(opt, SCHEDULE)
            self.sched = sched
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    module = Module()
    trainer = pl.Trainer(
        max_steps=UPDATES,
        accumulate_grad_batches=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    loader = torch.utils.data.DataLoader(rows(64), batch_size=2)
    trainer.fit(module, loader)
    assert used == EXPECTED
    assert module.sched.last_epoch == UPDATES and trainer.global_step == UPDATES


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_accelerate_prepare_and_accumulate() -> None:
    accelerate = pytest.importorskip("accelerate", reason="accelerate not installed")
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    used = record_lrs(opt)
    sched = Scheduler(opt, SCHEDULE)
    loader = torch.utils.data.DataLoader(rows(2 * 2 * UPDATES), batch_size=2)
    model, p_opt, loader, p_sched = accelerator.prepare(model, opt, loader, sched)
    for batch in loader:
        with accelerator.accumulate(model):
            accelerator.backward(model(**batch)["loss"])
            p_opt.step()
            p_sched.step()
            p_opt.zero_grad()
    assert used == EXPECTED
    assert sched.last_epoch == UPDATES
