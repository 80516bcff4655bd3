"""steadystep.compat.transformers against the real transformers.optimization lambdas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import steadystep as ss
from steadystep.compat import transformers as hf

torch = pytest.importorskip("torch")
optimization = pytest.importorskip("transformers.optimization")

LR = 0.5


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def _lambda_values(name: str, steps: np.ndarray, **kwargs: object) -> np.ndarray:
    sched = optimization.get_scheduler(name, _optimizer(), **kwargs)
    fn = sched.lr_lambdas[0]
    return np.array([fn(int(t)) for t in steps], dtype=np.float64)


spans = st.tuples(st.integers(0, 40), st.integers(1, 200)).map(lambda p: (p[0], p[0] + p[1]))


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(
        ["linear", "cosine", "cosine_with_restarts", "constant", "constant_with_warmup"]
    ),
    span=spans,
    cycles=st.integers(1, 4),
)
def test_parity_basic(name: str, span: tuple[int, int], cycles: int) -> None:
    warm, total = span
    kwargs: dict = {}
    if name == "cosine":
        kwargs = {"num_cycles": cycles / 2}
    elif name == "cosine_with_restarts":
        kwargs = {"num_cycles": cycles}
    steps = np.arange(0, 2 * total + 3)
    theirs = _lambda_values(
        name,
        steps,
        num_warmup_steps=warm,
        num_training_steps=total,
        scheduler_specific_kwargs=kwargs,
    )
    ours = hf.get_scheduler(name, warm, total, scheduler_specific_kwargs=kwargs)
    _close(ours(steps), theirs)


@settings(max_examples=25, deadline=None)
@given(
    span=spans,
    lr_end=st.floats(0.0, 0.4),
    power=st.floats(0.5, 3.0),
    timescale=st.one_of(st.none(), st.integers(1, 500)),
)
def test_parity_polynomial_and_inverse_sqrt(
    span: tuple[int, int], lr_end: float, power: float, timescale: int | None
) -> None:
    warm, total = span
    steps = np.arange(0, 2 * total + 3)
    kw = {"lr_end": lr_end, "power": power}
    theirs = _lambda_values(
        "polynomial",
        steps,
        num_warmup_steps=warm,
        num_training_steps=total,
        scheduler_specific_kwargs=kw,
    )
    ours = hf.get_scheduler("polynomial", warm, total, {**kw, "lr_init": LR})
    _close(ours(steps), theirs)
    via_optimizer = hf.get_polynomial_decay_schedule_with_warmup(_optimizer(), warm, total, **kw)
    assert via_optimizer == ours
    kw2 = {} if timescale is None else {"timescale": timescale}
    theirs = _lambda_values(
        "inverse_sqrt", steps, num_warmup_steps=warm, scheduler_specific_kwargs=kw2
    )
    _close(hf.get_scheduler("inverse_sqrt", warm, scheduler_specific_kwargs=kw2)(steps), theirs)


@settings(max_examples=25, deadline=None)
@given(
    span=spans,
    rate=st.floats(0.0, 0.9),
    cycles=st.sampled_from([0.5, 1.0, 1.5]),
    warmup_lr_rate=st.one_of(st.none(), st.floats(0.0, 0.5)),
    use_min_lr=st.booleans(),
)
def test_parity_min_lr(
    span: tuple[int, int],
    rate: float,
    cycles: float,
    warmup_lr_rate: float | None,
    use_min_lr: bool,
) -> None:
    warm, total = span
    steps = np.arange(0, 2 * total + 3)
    kw: dict = {"num_cycles": cycles}
    kw.update({"min_lr": rate * LR} if use_min_lr else {"min_lr_rate": rate})
    theirs = _lambda_values(
        "cosine_with_min_lr",
        steps,
        num_warmup_steps=warm,
        num_training_steps=total,
        scheduler_specific_kwargs=kw,
    )
    ours = hf.get_scheduler("cosine_with_min_lr", warm, total, kw, optimizer=_optimizer())
    _close(ours(steps), theirs)
    kw["warmup_lr_rate"] = warmup_lr_rate
    theirs = _lambda_values(
        "cosine_warmup_with_min_lr",
        steps,
        num_warmup_steps=warm,
        num_training_steps=total,
        scheduler_specific_kwargs=kw,
    )
    ours = hf.get_scheduler("cosine_warmup_with_min_lr", warm, total, {**kw, "lr_init": LR})
    _close(ours(steps), theirs)


@settings(max_examples=30, deadline=None)
@given(
    warm=st.integers(0, 30),
    stable=st.integers(0, 30),
    decay=st.integers(0, 30),
    warmup_type=st.sampled_from(["linear", "cosine", "1-sqrt"]),
    decay_type=st.sampled_from(["linear", "cosine", "1-sqrt"]),
    ratio=st.floats(0.0, 0.5),
    by_total=st.booleans(),
)
def test_parity_wsd(
    warm: int,
    stable: int,
    decay: int,
    warmup_type: str,
    decay_type: str,
    ratio: float,
    by_total: bool,
) -> None:
    kw: dict = {
        "num_decay_steps": decay,
        "warmup_type": warmup_type,
        "decay_type": decay_type,
        "min_lr_ratio": ratio,
    }
    total = warm + stable + decay
    if not by_total:
        kw["num_stable_steps"] = stable
    steps = np.arange(0, total + 5)
    theirs = _lambda_values(
        "warmup_stable_decay",
        steps,
        num_warmup_steps=warm,
        num_training_steps=total if by_total else None,
        scheduler_specific_kwargs=kw,
    )
    ours = hf.get_scheduler("warmup_stable_decay", warm, total if by_total else None, kw)
    _close(ours(steps), theirs)


def test_stepped_scheduler_matches_step_convention() -> None:
    """After k scheduler steps, torch's LR is what update k uses: LR * s(k)."""
    opt = _optimizer()
    sched = optimization.get_cosine_schedule_with_warmup(opt, 3, 20)
    ours = hf.get_cosine_schedule_with_warmup(opt, 3, 20)
    for k in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(LR * ours(k), rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()


def test_results_are_ordinary_schedules() -> None:
    s = hf.get_scheduler("cosine", 10, 100)
    assert ss.parse(repr(s)) == s
    assert s(np.arange(3)).dtype == np.float64
    t = torch.arange(5)
    assert torch.allclose(s(t), torch.tensor([s(i) for i in range(5)], dtype=torch.float64))


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: hf.get_scheduler("linear", -1, 10), "num_warmup_steps"),
        (lambda: hf.get_scheduler("linear", 1, None), "num_training_steps"),
        (lambda: hf.get_scheduler("cosine", None, 10), "num_warmup_steps"),
        (lambda: hf.get_scheduler("nope", 1, 10), "name"),
        (lambda: hf.get_scheduler("greedy", 1, 10), "name"),
        (lambda: hf.get_scheduler("reduce_lr_on_plateau", 1, 10), "num_warmup_steps"),
        (lambda: hf.get_scheduler("cosine", 1, 10, {"num_cycles": 0}), "num_cycles"),
        (lambda: hf.get_scheduler("polynomial", 1, 10), "lr_init"),
        (lambda: hf.get_scheduler("polynomial", 10, 10, {"lr_init": 1.0}), "num_training_steps"),
        (lambda: hf.get_scheduler("polynomial", 1, 10, {"lr_init": 1e-8}), "lr_end"),
        (lambda: hf.get_scheduler("cosine_with_min_lr", 1, 10), "min_lr"),
        (lambda: hf.get_scheduler("cosine_with_min_lr", 1, 10, {"min_lr_rate": -1}), "min_lr_rate"),
        (
            lambda: hf.get_scheduler("warmup_stable_decay", 5, 6, {"num_decay_steps": 5}),
            "num_training_steps",
        ),
        (
            lambda: hf.get_scheduler(
                "warmup_stable_decay", 5, 20, {"num_decay_steps": 5, "decay_type": "exp"}
            ),
            "decay_type",
        ),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


def test_scheduler_type_enum_accepted() -> None:
    from transformers.trainer_utils import SchedulerType

    assert hf.get_scheduler(SchedulerType.LINEAR, 2, 10) == hf.get_scheduler("linear", 2, 10)


# -- transformers' own expected values (tests/optimization/test_optimization.py) ----------------
def test_transformers_test_suite_values() -> None:
    ctr = hf
    common = {"num_warmup_steps": 2, "num_training_steps": 10}
    cases = [
        (ctr.get_constant_schedule(), [10.0] * 10),
        (
            ctr.get_constant_schedule_with_warmup(num_warmup_steps=4),
            [0.0, 2.5, 5.0, 7.5, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        ),
        (
            ctr.get_linear_schedule_with_warmup(**common),
            [0.0, 5.0, 10.0, 8.75, 7.5, 6.25, 5.0, 3.75, 2.5, 1.25],
        ),
        (
            ctr.get_cosine_schedule_with_warmup(**common),
            [0.0, 5.0, 10.0, 9.61, 8.53, 6.91, 5.0, 3.08, 1.46, 0.38],
        ),
        (
            ctr.get_cosine_with_hard_restarts_schedule_with_warmup(**common, num_cycles=2),
            [0.0, 5.0, 10.0, 8.53, 5.0, 1.46, 10.0, 8.53, 5.0, 1.46],
        ),
        (
            ctr.get_polynomial_decay_schedule_with_warmup(
                **common, power=2.0, lr_end=1e-7, lr_init=10.0
            ),
            [0.0, 5.0, 10.0, 7.656, 5.625, 3.906, 2.5, 1.406, 0.625, 0.156],
        ),
        (
            ctr.get_inverse_sqrt_schedule(num_warmup_steps=2),
            [0.0, 5.0, 10.0, 8.165, 7.071, 6.325, 5.774, 5.345, 5.0, 4.714],
        ),
    ]
    for schedule, expected in cases:  # AdamW(lr=10.0); the compat result is the multiplier
        got = [10.0 * schedule(t) for t in range(10)]
        assert got == pytest.approx(expected, abs=1e-2)
        assert ss.parse(repr(schedule)) == schedule  # transformers: save and reload
