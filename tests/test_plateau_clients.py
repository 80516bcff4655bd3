"""Reduce on plateau in the real Hugging Face Trainer and Lightning, on a validation metric."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from steadystep.torch import PlateauScheduler  # noqa: E402

from .test_torch_clients import (  # noqa: E402
    Tiny,
    fresh_accelerate_state,  # noqa: F401
    rows,
    training_args,
)

# threshold 0.9: only a 90% better metric counts, so every evaluation is bad; patience 0
RULE = {"factor": 0.5, "patience": 0, "threshold": 0.9}


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_hugging_face_trainer_reduces_on_eval_loss(tmp_path: Any, monkeypatch: Any) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    try:
        import deepspeed  # noqa: F401
    except ImportError:  # installed without its dependencies: accelerate would still import it
        import accelerate.utils.other

        monkeypatch.setattr(accelerate.utils.other, "is_deepspeed_available", lambda: False)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = PlateauScheduler(opt, ss.plateau(ss.constant(0.01), **RULE))
    used: list[float] = []
    opt.register_step_pre_hook(lambda o, a, k: used.append(o.param_groups[0]["lr"]))
    args = training_args(
        tmp_path, max_steps=6, eval_strategy="steps", eval_steps=2, metric_for_best_model="loss"
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=rows(12),
        eval_dataset=rows(4),
        optimizers=(opt, sched),
    )
    trainer.train()
    # evaluations after updates 2, 4, 6: the first sets `best`, the next two reduce
    assert sched.plateau_state.evaluations == 3 and sched.reductions == [2]
    assert used == [0.01, 0.01, 0.01, 0.01, 0.005, 0.005]
    assert opt.param_groups[0]["lr"] == 0.0025
    assert sched.last_epoch == 6  # updates counted, though the Trainer never calls step()


@pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*does not have many workers")
@pytest.mark.filterwarnings("ignore:.*(GPU available|TPU available|HPU available)")
@pytest.mark.filterwarnings("ignore:.*smaller than the logging interval")
@pytest.mark.filterwarnings("ignore:.*`training_step` returned `None`")
def test_lightning_warmup_then_plateau_on_val_loss(tmp_path: Any) -> None:
    pl = pytest.importorskip("pytorch_lightning", reason="pytorch-lightning not installed")
    used: list[float] = []
    schedule = ss.warmup(ss.plateau(ss.constant(0.01), **RULE), steps=3)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Tiny()

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.net(**batch)["loss"]

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            self.log("val_loss", self.net(**batch)["loss"])

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=1.0)
            opt.register_step_pre_hook(lambda o, a, k: used.append(o.param_groups[0]["lr"]))
            self.sched = ss.torch.Scheduler(opt, schedule)
            # the same scheduler twice: step() after each update (the warmup moves), and
            # step(val_loss) after each epoch's validation (Lightning's "monitor")
            return [opt], [
                {"scheduler": self.sched, "interval": "step"},
                {
                    "scheduler": self.sched,
                    "interval": "epoch",
                    "monitor": "val_loss",
                    "reduce_on_plateau": True,
                },
            ]

    module = Module()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    train = torch.utils.data.DataLoader(rows(8), batch_size=2)  # 4 updates per epoch
    val = torch.utils.data.DataLoader(rows(4), batch_size=2)
    trainer.fit(module, train, val)
    assert module.sched.plateau_state.evaluations == 3 and module.sched.reductions == [2]
    warm = schedule(np.arange(3)).tolist()
    assert used == [*warm, 0.01, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005]
