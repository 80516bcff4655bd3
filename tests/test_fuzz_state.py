"""Fuzzing ``load_state_dict`` of the torch ``Scheduler`` and the adaptive clippers.

A state dict read from a checkpoint is input like any other: whatever it holds, loading it
either raises ``ValueError``/``TypeError`` and leaves the object as it was, or succeeds and
leaves an object that works (steps, clips) and saves again. Inputs are valid state dicts with
entries dropped, added or replaced by random values (numbers, strings, lists, dicts, tensors of
random shapes and dtypes), plus arbitrary dicts.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_fuzz_spec import FUZZ, count_input, json_values

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402

SCHEDULE = ss.warmup(ss.cosine(0.1, 0.001, steps=100), steps=10)
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.int32, torch.int64, torch.bool]

tensors = st.builds(
    lambda shape, dtype, fill: torch.full(shape, fill).to(dtype),
    st.lists(st.integers(0, 3), max_size=2).map(tuple),
    st.sampled_from(_DTYPES),
    st.sampled_from([0.0, 1.0, -1.0, 2.5, 1e30, math.inf, math.nan]),
)
values = json_values | tensors | st.lists(tensors, max_size=2)


@st.composite
def mutated_states(
    draw: st.DrawFn, valid: dict[str, Any], values: st.SearchStrategy[Any] = values
) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.dictionaries(st.text(max_size=8), values, max_size=5) | values)
    state = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(valid)) | st.text(max_size=6))
        if draw(st.integers(0, 3)) == 0:
            state.pop(key, None)
        else:
            state[key] = draw(values)
    return state


def _model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def _scheduler() -> Any:
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    sched = ss.torch.Scheduler(opt, SCHEDULE)
    sched.last_epoch = 7
    return sched


_VALID_SCHEDULER = _scheduler().state_dict()


def _check_scheduler_load(state: Any) -> None:
    count_input("Scheduler.load_state_dict")
    sched = _scheduler()
    before = sched.state_dict()
    lr = sched.optimizer.param_groups[0]["lr"]
    try:
        sched.load_state_dict(state)
    except (ValueError, TypeError):
        assert sched.state_dict() == before  # a refused state changes nothing
        assert sched.optimizer.param_groups[0]["lr"] == lr
        return
    step = sched.state_dict()["step"]
    assert isinstance(step, int) and step >= 0
    assert sched.optimizer.param_groups[0]["lr"] == SCHEDULE(step)
    assert ss.parse(sched.state_dict()["schedules"][0]) == SCHEDULE


@FUZZ
@given(mutated_states(_VALID_SCHEDULER, json_values))
def test_scheduler_load_state_dict(state: Any) -> None:
    _check_scheduler_load(state)


@FUZZ
@given(mutated_states(_VALID_SCHEDULER, values))
def test_scheduler_load_state_dict_with_tensors(state: Any) -> None:
    _check_scheduler_load(state)


@pytest.mark.parametrize(
    ("key", "value"), [("relative", torch.zeros(2)), ("step", 10**30), ("step", 2**63)]
)
def test_scheduler_refuses_what_fuzzing_found(key: str, value: Any) -> None:
    """Once a RuntimeError (a tensor flag: `tensor != bool`) and an OverflowError (np.arange)."""
    sched = _scheduler()
    with pytest.raises((ValueError, TypeError)):
        sched.load_state_dict({**_VALID_SCHEDULER, key: value})
    assert sched.state_dict() == _VALID_SCHEDULER


CLIPPERS = {
    "ZClip": lambda p: ss.torch.ZClip(p, warmup_steps=2),
    "AutoClip": lambda p: ss.torch.AutoClip(p, history=8),
    "SpikeSkip": lambda p: ss.torch.SpikeSkip(p, window=8, min_history=3),
    "AGC": lambda p: ss.torch.AGC(p),
}


def _clipper(name: str) -> tuple[Any, Any]:
    model = _model()
    clipper = CLIPPERS[name](list(model.parameters()))
    for scale in (1.0, 2.0, 1.5):
        for p in model.parameters():
            p.grad = torch.full_like(p, scale)
        clipper.clip()
    return model, clipper


def _valid_clipper_state(name: str) -> dict[str, Any]:
    return _clipper(name)[1].state_dict()


def _check_clipper_load(name: str, state: Any) -> None:
    count_input(f"{name}.load_state_dict")
    model, clipper = _clipper(name)
    before = clipper.state_dict()
    try:
        clipper.load_state_dict(state)
    except (ValueError, TypeError):
        after = clipper.state_dict()
        assert after.keys() == before.keys()
        for key, value in before.items():
            other = after[key]
            same = torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
            assert same, f"a refused state changed {key!r}"
        return
    for p in model.parameters():  # a loaded clipper must still clip finite gradients
        p.grad = torch.full_like(p, 0.5)
    norm = clipper.clip()
    assert torch.isfinite(norm)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    clipper.state_dict()


@pytest.mark.parametrize("name", sorted(CLIPPERS))
def test_clipper_load_state_dict(name: str) -> None:
    @FUZZ
    @given(mutated_states(_valid_clipper_state(name)))
    def run(state: Any) -> None:
        _check_clipper_load(name, state)

    run()


_DROP = object()


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("AutoClip", "values", _DROP),  # once a KeyError
        ("ZClip", "mean", torch.zeros(3)),  # once a broken clip()
        ("SpikeSkip", "count", torch.tensor(1.5)),
        ("AGC", "clipping", None),  # once accepted, then a ValueError at clip()
    ],
)
def test_clipper_refuses_what_fuzzing_found(name: str, key: str, value: Any) -> None:
    state = _valid_clipper_state(name)
    if value is _DROP:
        del state[key]
    else:
        state[key] = value
    _check_clipper_load(name, state)  # refused, and nothing changed
    with pytest.raises((ValueError, TypeError)):
        _clipper(name)[1].load_state_dict(state)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("AGC", "eps"),
        ("AutoClip", "percentile"),
        ("ZClip", "warmup_steps"),
        ("SpikeSkip", "min_history"),
    ],
)
def test_clippers_refuse_huge_int_hyperparameters(name: str, key: str) -> None:
    clipper = _clipper(name)[1]
    with pytest.raises((ValueError, TypeError)):
        clipper.load_state_dict({**clipper.state_dict(), key: 10**400})
        clipper.clip()
