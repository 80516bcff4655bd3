"""Lightning: GradientClipping callback, per-update scheduler config, LearningRateMonitor names,
LightningCLI YAML (class_path/init_args) building a steadystep Scheduler from spec text."""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

import steadystep as ss  # noqa: E402
from steadystep.integrations.lightning import (  # noqa: E402
    GradientClipping,
    configure_optimizers,
    scheduler_config,
)

# Lightning 2.6 builds torch's deprecated LeafSpec (a Lightning issue, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`:FutureWarning")

SPEC = "warmup(cosine(0.1, 0.01, steps=fraction(1.0, of='rest')), steps=fraction(0.25))"
STEPS = 8


def rows(n: int, spike_at: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x, y = torch.randn(4, generator=g), torch.randn((), generator=g)
        if i == spike_at:
            x = x * math.inf
        out.append((x, y))
    return out


class Module(pl.LightningModule):
    def __init__(self, tensor: bool = False, total: int | None = None) -> None:
        super().__init__()
        self.total = total
        self.body = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 1)
        self.tensor = tensor
        self.used: list[list[float]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(self.body(x)).squeeze(-1), y)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.SGD(
            [
                {"params": self.body.parameters(), "name": "body"},
                {"params": self.head.parameters(), "name": "head"},
            ],
            lr=1.0,
        )
        opt.register_step_pre_hook(
            lambda o, a, k: self.used.append([float(g["lr"]) for g in o.param_groups])
        )
        self.sched = ss.torch.Scheduler(
            opt,
            SPEC,
            total_steps=self.total or self.trainer.estimated_stepping_batches,
            tensor=self.tensor,
        )
        return {"optimizer": opt, "lr_scheduler": scheduler_config(self.sched)}


def trainer(tmp_path: Path, callbacks: list[Any], **kwargs: Any) -> Any:
    from lightning.pytorch.loggers import CSVLogger

    defaults: dict[str, Any] = {
        "max_steps": STEPS,
        "accelerator": "cpu",
        "devices": 1,
        "logger": CSVLogger(str(tmp_path), name="run", version=0),
        "log_every_n_steps": 1,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
    }
    return pl.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


def metrics(tmp_path: Path) -> list[dict[str, str]]:
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_clipping_callback_schedule_and_lr_monitor(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor

    module = Module()
    clip = GradientClipping(0.5)
    t = trainer(tmp_path, [clip, LearningRateMonitor(logging_interval="step")])
    t.fit(module, torch.utils.data.DataLoader(rows(64), batch_size=4))
    expected = ss.parse(SPEC, total_steps=STEPS)(np.arange(STEPS)).tolist()
    assert [u[0] for u in module.used] == expected  # stepped per update, fractions resolved
    logged = metrics(tmp_path)
    keys = set().union(*logged)
    assert {"lr-SGD/body", "lr-SGD/head", "grad/norm", "grad/clipped", "grad/skipped"} <= keys
    lrs = [float(r["lr-SGD/head"]) for r in logged if r.get("lr-SGD/head")]
    assert lrs == pytest.approx(expected[: len(lrs)])
    norms = [float(r["grad/norm"]) for r in logged if r.get("grad/norm")]
    assert len(norms) == STEPS and all(n > 0 for n in norms)
    clipped = [float(r["grad/clipped"]) for r in logged if r.get("grad/clipped")]
    assert clipped == [float(n > 0.5) for n in norms]


def test_skip_leaves_the_model_and_the_schedule_alone(tmp_path: Path) -> None:
    module = Module()
    clip = GradientClipping(1.0, nonfinite="skip")
    t = trainer(tmp_path, [clip], max_steps=3, logger=False)
    t.fit(module, torch.utils.data.DataLoader(rows(12, spike_at=4), batch_size=4))
    # batch 1 holds an inf input: its update is skipped, the schedule does not count it
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert module.sched.last_epoch == 2


def test_adaptive_clipper_state_survives_a_resume(tmp_path: Path) -> None:
    def run(steps: int, ckpt: str | None = None) -> tuple[Any, Any]:
        torch.manual_seed(0)
        # the run is 6 updates long, also when stopped after 3 (a schedule resolved over 3
        # would differ, and load_state_dict refuses it)
        module, clip = Module(total=6), GradientClipping("zclip", {"warmup_steps": 2})
        t = trainer(tmp_path, [clip], max_steps=steps, logger=False)
        t.fit(module, torch.utils.data.DataLoader(rows(12), batch_size=4), ckpt_path=ckpt)
        if ckpt is None:
            t.save_checkpoint(tmp_path / f"{steps}.ckpt")
        return module, clip

    _, first = run(3)
    saved = first.rule.clipper.state_dict()
    resumed, clip = run(6, str(tmp_path / "3.ckpt"))
    assert resumed.sched.last_epoch == 6
    assert int(saved["count"]) == 3
    assert int(clip.rule.clipper.state_dict()["count"]) == 6  # continued, not restarted
    _, idle = run(3, str(tmp_path / "3.ckpt"))  # nothing left to train: state as saved
    loaded = idle.rule.state_dict()["clipper"]
    for key, value in saved.items():
        assert torch.equal(loaded[key], value) if torch.is_tensor(value) else loaded[key] == value

    partial = GradientClipping(functools.partial(ss.torch.AutoClip, percentile=50.0))
    trainer(tmp_path, [partial], max_steps=2, logger=False).fit(
        Module(), torch.utils.data.DataLoader(rows(64), batch_size=4)
    )
    assert isinstance(partial.rule.clipper, ss.torch.AutoClip)


def test_bad_configurations_are_clear_errors(tmp_path: Path) -> None:
    loader = torch.utils.data.DataLoader(rows(8), batch_size=4)
    clip = GradientClipping(1.0)
    with pytest.raises(RuntimeError, match="more than one stateful callback of type `GradientCl"):
        trainer(tmp_path, [clip, GradientClipping(2.0)], logger=False).fit(Module(), loader)
    with pytest.raises(ValueError, match=r"gradient_clip_val=0\.5"):
        trainer(tmp_path, [clip], logger=False, gradient_clip_val=0.5).fit(Module(), loader)
    with pytest.raises(ValueError, match="Argument `clip` must be one of"):
        GradientClipping("zclp")
    with pytest.raises(ValueError, match="Argument `clip` must be > 0"):
        GradientClipping(-1.0)
    with pytest.raises(TypeError, match="Argument `scheduler` must be a steadystep"):
        scheduler_config(torch.optim.lr_scheduler.StepLR(torch.optim.SGD(Module().parameters()), 2))


CLI_YAML = """
seed_everything: 0
trainer:
  max_steps: {steps}
  accelerator: cpu
  devices: 1
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
optimizer:
  class_path: torch.optim.SGD
  init_args:
    lr: 1.0
lr_scheduler:
  class_path: steadystep.torch.Scheduler
  init_args:
    schedule: {schedule}
    total_steps: {steps}
"""


class CLIModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.used: list[float] = []

    def on_train_start(self) -> None:
        opt = self.trainer.optimizers[0]
        opt.register_step_pre_hook(lambda o, a, k: self.used.append(o.param_groups[0]["lr"]))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(rows(64), batch_size=4)


def run_cli(tmp_path: Path, schedule: str, monkeypatch: Any) -> Any:
    from lightning.pytorch.cli import LightningCLI

    class CLI(LightningCLI):
        configure_optimizers = staticmethod(configure_optimizers)

    monkeypatch.setattr("sys.argv", ["train.py"])  # not pytest's own arguments
    config = tmp_path / "config.yaml"
    config.write_text(CLI_YAML.format(steps=STEPS, schedule=schedule))
    return CLI(
        CLIModule,
        args=["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}"],
        save_config_callback=None,
    )


# LightningCLI 2.6 calls jsonargparse APIs that jsonargparse 4.53 deprecates (not ours)
cli_warnings = pytest.mark.filterwarnings(
    "ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning"
)


@cli_warnings
def test_lightning_cli_yaml_builds_a_steadystep_scheduler(tmp_path: Path, monkeypatch) -> None:
    cli = run_cli(tmp_path, f'"{SPEC}"', monkeypatch)
    scheduler = cli.trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step"
    assert scheduler.scheduler.schedules == [ss.parse(SPEC, total_steps=STEPS)]
    expected = ss.parse(SPEC, total_steps=STEPS)(np.arange(STEPS)).tolist()
    assert cli.model.used == pytest.approx(expected)


@cli_warnings
def test_lightning_cli_dict_schedule_and_wrong_type(tmp_path: Path, monkeypatch) -> None:
    cli = run_cli(tmp_path, "{type: cosine, start: 0.1, end: 0.0, steps: 8}", monkeypatch)
    assert cli.trainer.lr_scheduler_configs[0].scheduler.schedules == [ss.cosine(0.1, 0.0, 8)]
    with pytest.raises(ValueError, match="'cosin'"):
        run_cli(tmp_path, "{type: cosin, start: 0.1, end: 0.0, steps: 8}", monkeypatch)
