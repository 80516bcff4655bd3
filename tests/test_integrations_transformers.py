"""Hugging Face Trainer with a steadystep schedule by spec and steadystep clipping, incl. resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import steadystep as ss  # noqa: E402
from steadystep.integrations.transformers import SteadystepTrainer  # noqa: E402

from .test_torch_clients import (  # noqa: E402
    Tiny,
    fresh_accelerate_state,  # noqa: F401
    rows,
    training_args,
)

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

SPEC = "cosine(1.0, 0.1, steps=fraction(1.0, of='rest'))"
LR = 0.05


class RecordLR(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.used: list[float] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.used.append(kwargs["optimizer"].param_groups[0]["lr"])


class StopAt(transformers.TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def make(tmp_path: Path, steps: int = 8, data: Any = None, **kwargs: Any) -> tuple[Any, RecordLR]:
    args = training_args(
        tmp_path,
        learning_rate=LR,
        warmup_steps=0.25,  # a ratio of the run (transformers 4: warmup_ratio=0.25)
        max_steps=steps,
        save_strategy="steps",
        save_steps=4,
        logging_strategy="steps",
        logging_steps=2,
        optim="sgd",
    )
    record = RecordLR()
    trainer = SteadystepTrainer(
        model=Tiny(seed=0),
        args=args,
        train_dataset=rows(64) if data is None else data,
        callbacks=[record],
        **kwargs,
    )
    return trainer, record


def test_schedule_by_spec_with_trainers_total_and_warmup(tmp_path: Path) -> None:
    trainer, record = make(tmp_path, schedule=SPEC, clip=1.0)
    trainer.train()
    sched = trainer.lr_scheduler
    assert isinstance(sched, ss.torch.Scheduler) and sched.last_epoch == 8
    expected = ss.warmup(ss.cosine(1.0, 0.1, steps=6), steps=2)  # 0.25 of the 8 updates
    assert all(s == expected for s in sched.schedules)  # decay / no-decay groups
    assert record.used == pytest.approx((LR * expected(np.arange(8))).tolist())
    logged = [h for h in trainer.state.log_history if "grad_norm" in h]
    assert logged and all(h["grad_norm"] > 0 for h in logged)
    assert logged[0]["learning_rate"] == pytest.approx(LR * expected(1))


def test_resume_from_checkpoint_continues_the_schedule_and_clipper(tmp_path: Path) -> None:
    whole, whole_record = make(
        tmp_path / "whole", schedule=SPEC, clip="zclip", clip_options={"warmup_steps": 2}
    )
    whole.train()
    split, _ = make(
        tmp_path / "split", steps=8, schedule=SPEC, clip="zclip", clip_options={"warmup_steps": 2}
    )
    split.add_callback(StopAt(4))  # interrupted after the first checkpoint of the 8-step run
    split.train()
    resumed, resumed_record = make(
        tmp_path / "split", schedule=SPEC, clip="zclip", clip_options={"warmup_steps": 2}
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "split" / "checkpoint-4"))
    assert resumed.lr_scheduler.last_epoch == 8
    assert resumed_record.used == pytest.approx(whole_record.used[4:])
    state = resumed.steadystep_clip.clipper.state_dict()
    assert int(state["count"]) == 8  # statistics continued from the checkpoint
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b)


def test_a_checkpoint_of_another_schedule_is_refused(tmp_path: Path) -> None:
    first, _ = make(tmp_path, steps=4, schedule=SPEC)
    first.train()
    other, _ = make(tmp_path, steps=8, schedule=SPEC)  # resolves over 8 steps, not 4
    with pytest.raises(ValueError, match="saved with a different schedule"):
        other.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))


def test_skip_a_nonfinite_update(tmp_path: Path) -> None:
    trainer, _ = make(
        tmp_path, steps=4, data=rows(8, bad=2), schedule=SPEC, clip=1.0, nonfinite="skip"
    )
    trainer.args.save_strategy = "no"
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.lr_scheduler.last_epoch == 3  # the skipped update is not counted
    assert trainer.state.global_step == 4


def test_bad_configurations(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Warmup is given twice"):
        trainer, _ = make(tmp_path, schedule="warmup(constant(1.0), steps=fraction(0.1))")
        trainer.train()
    with pytest.raises(ValueError, match=r"spec\['type'\] must be one of"):
        make(tmp_path, schedule={"type": "cosin", "start": 1.0, "end": 0.0, "steps": 3})
    with pytest.raises(TypeError, match="Argument `schedule` must be spec text"):
        make(tmp_path, schedule=3)
    with pytest.raises(ValueError, match="Argument `clip` must be one of"):
        make(tmp_path, clip="zclp")
