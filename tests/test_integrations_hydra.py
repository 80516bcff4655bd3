"""Hydra/OmegaConf configs build a steadystep Scheduler (``_target_`` + ``_partial_: true``)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hydra_utils = pytest.importorskip("hydra.utils")
omegaconf = pytest.importorskip("omegaconf")

import steadystep as ss  # noqa: E402

CONFIG = """
optimizer:
  _target_: torch.optim.AdamW
  _partial_: true
  lr: 1.0
scheduler:
  _target_: steadystep.torch.Scheduler
  _partial_: true
  schedule: {schedule}
  total_steps: 200
"""

SPEC = "warmup(cosine(0.001, 1e-05, steps=fraction(1.0, of='rest')), steps=fraction(0.06))"


def build(schedule: str) -> ss.torch.Scheduler:
    cfg = omegaconf.OmegaConf.create(CONFIG.format(schedule=schedule))
    model = torch.nn.Linear(2, 1)
    opt = hydra_utils.instantiate(cfg.optimizer)(params=model.parameters())
    return hydra_utils.instantiate(cfg.scheduler)(optimizer=opt)


def test_spec_text_in_a_hydra_config() -> None:
    sched = build(f'"{SPEC}"')
    expected = ss.parse(SPEC, total_steps=200)
    assert sched.schedules == [expected]
    assert expected == ss.warmup(ss.cosine(0.001, 1e-05, steps=188), steps=12)
    lrs = []
    for _ in range(5):
        lrs.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.param_groups[0]["params"][0].grad = torch.ones(1, 2)
        sched.optimizer.step()
        sched.step()
    assert lrs == expected(np.arange(5)).tolist()


def test_dict_schedule_in_a_hydra_config() -> None:
    as_dict = ss.parse(SPEC).to_dict()
    yaml = omegaconf.OmegaConf.to_yaml(omegaconf.OmegaConf.create(as_dict))
    inline = "\n" + "\n".join("    " + line for line in yaml.splitlines())
    sched = build(inline)
    assert sched.schedules == [ss.parse(SPEC, total_steps=200)]


def test_wrong_schedule_type_in_a_hydra_config() -> None:
    with pytest.raises(ValueError, match=r"spec\['type'\] must be one of: .*Received: 'cosin'"):
        build("{type: cosin, start: 1.0, end: 0.0, steps: 10}")
    with pytest.raises(ss.SpecError, match="unknown schedule 'cosin'"):
        build('"cosin(1.0, 0.0, steps=10)"')
    with pytest.raises(TypeError, match="Argument `schedule` must be a steadystep Schedule"):
        build("42")
