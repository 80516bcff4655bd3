"""change_run_length: continue a running schedule to a new total, without a jump."""

from __future__ import annotations

import numpy as np
import pytest

import steadystep as ss

change_run_length = ss.presets.change_run_length
wsd = ss.presets.wsd

CASES = [
    ss.warmup(ss.cosine(1.0, 0.01, steps=90), steps=10),
    ss.warmup(ss.linear(1.0, 0.0, steps=90), steps=10),
    ss.warmup(ss.polynomial(1.0, 0.0, steps=90, power=2.0), steps=10, overlay=False),
    ss.presets.bert(1.0, 100, 10),
    ss.presets.one_cycle(1.0, 100),
    wsd(1.0, warmup_steps=10, stable_steps=70, decay_steps=20),
]


@pytest.mark.parametrize("schedule", CASES, ids=repr)
@pytest.mark.parametrize("at", [5, 30, 85])
@pytest.mark.parametrize("total", [60, 100, 250])
def test_continues_without_a_jump(schedule: ss.Schedule, at: int, total: int) -> None:
    if total <= at:
        with pytest.raises(ValueError, match="Argument `total_steps` must be > at_step"):
            change_run_length(schedule, at, total)
        return
    new = change_run_length(schedule, at, total)
    before = np.arange(at + 1)
    assert np.array_equal(new(before), schedule(before))  # same up to and at the current step
    assert new.length == pytest.approx(total)
    assert new(total) == pytest.approx(schedule(100))  # ends where it ended, at the new total
    t = np.arange(at, total + 1)
    steps = np.abs(np.diff(new(t)))
    old_steps = np.abs(np.diff(schedule(np.arange(0, 101))))
    # no jump: scaled in time by (100 - at) / (total - at) at most
    assert steps.max() <= old_steps.max() * max(1.0, (100 - at) / (total - at)) + 1e-12
    assert ss.parse(repr(new)) == new


def test_wsd_extends_its_stable_phase() -> None:
    run = wsd(1.0, warmup_steps=10, stable_steps=70, decay_steps=20, cooldown="linear")
    assert change_run_length(run, 50, 300) == wsd(1.0, 10, 270, 20, cooldown="linear")
    assert change_run_length(run, 50, 90) == wsd(1.0, 10, 60, 20, cooldown="linear")
    # shortened so much that the stable phase would have ended before step 50: squeeze instead
    squeezed = change_run_length(run, 50, 55)
    assert squeezed(50) == 1.0 and squeezed(55) == 0.0 and squeezed.length == 55
    # already in the cooldown: the rest of the cooldown is stretched
    late = change_run_length(run, 90, 110)
    assert late(90) == run(90) and late(110) == 0.0 and late(100) == pytest.approx(run(95))


def test_linear_decay_stays_linear() -> None:
    old = ss.linear(1.0, 0.0, steps=100)
    new = change_run_length(old, 40, 200)
    fresh = ss.linear(old(40), 0.0, steps=160)
    t = np.arange(40, 201)
    assert np.allclose(new(t), fresh(t - 40), atol=1e-15)


def test_scheduler_loads_the_new_length_at_resume() -> None:
    torch = pytest.importorskip("torch")
    old = ss.warmup(ss.cosine(0.1, 0.0, steps=90), steps=10)
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = ss.torch.Scheduler(opt, old)
    sched.last_epoch = 40
    state = sched.state_dict()
    new = change_run_length(old, 40, 400)
    resumed = ss.torch.Scheduler(torch.optim.SGD([w], lr=0.1), new)
    with pytest.raises(ValueError, match="different schedule"):
        resumed.load_state_dict(state)
    resumed.load_state_dict(state, schedule_changed_ok=True)
    assert resumed.last_epoch == 40
    assert resumed.get_last_lr() == sched.get_last_lr()  # no jump at resume


def test_bad_input() -> None:
    s = ss.cosine(1.0, 0.0, steps=10)
    with pytest.raises(ValueError, match="Argument `at_step` must be < the schedule's length"):
        change_run_length(s, 10, 20)
    with pytest.raises(ValueError, match="open-ended"):
        change_run_length(wsd(1.0, 10), 20, 100)
    with pytest.raises(ValueError, match="fractions of the run"):
        change_run_length(ss.cosine(1.0, 0.0, steps=ss.fraction(0.5)), 2, 20)
    with pytest.raises(TypeError, match="Argument `at_step` must be an integer"):
        change_run_length(s, 2.5, 20)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Argument `schedule`"):
        change_run_length("cosine", 2, 20)  # type: ignore[arg-type]
