"""Extreme values: steps up to 1e12 (and past 2**53), learning rates from 1e-12 to 1e3, and
float16/bfloat16 gradients near their overflow. Results are finite and as documented in
``docs/reliability.md``; nothing turns into NaN silently (pytest makes every warning an error).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import steadystep as ss
from tests.test_fuzz_spec import FUZZ, schedules

BIG = 10**12
EXTREME_STEPS = np.array([0, 1, 2, 999, 10**6, 10**9, BIG - 1, BIG, 2 * BIG], dtype=np.int64)


@FUZZ
@given(schedules, st.lists(st.integers(0, BIG), max_size=8))
def test_every_schedule_is_finite_and_nonnegative_up_to_1e12(
    s: ss.Schedule, steps: list[int]
) -> None:
    """Any schedule built from LRs in [1e-12, 1e3] and lengths up to 1e12 steps."""
    t = np.concatenate([EXTREME_STEPS, np.array(steps, dtype=np.int64)])
    if s.length is not None:
        t = np.concatenate([t, np.array([s.length - 1, s.length, s.length + 1]).clip(0)])
        t = np.floor(t)
    values = s(t)
    assert np.all(np.isfinite(values)), (repr(s), t[~np.isfinite(values)])
    assert np.all(values >= 0), repr(s)
    # Python ints give the same value (NumPy's scalar and vector pow may differ in the last ulp)
    assert s(BIG) == pytest.approx(values[list(t).index(BIG)], rel=1e-15, abs=0)


#: (spec, step, documented value): the table in docs/reliability.md
GOLDEN = [
    ("cosine(1000.0, 1e-12, steps=1000000000000)", BIG, 1e-12),
    ("cosine(1000.0, 1e-12, steps=1000000000000)", BIG // 2, 500.0),
    ("linear(1e-12, 1000.0, steps=1000000000000)", 0, 1e-12),
    ("linear(1e-12, 1000.0, steps=1000000000000)", BIG, 1000.0),
    ("warmup(constant(1e-12), steps=1000000000000)", 1, 1e-24),
    ("warmup(constant(1000.0), steps=1000000000000, start=1e-12, shape='exponential')", BIG, 1e3),
    ("polynomial(1000.0, 1e-12, steps=1000000000000, power=2.0)", BIG, 1e-12),
    ("polynomial(1000.0, 1e-12, steps=1, cycle=True)", BIG, 1e-12),
    ("one_minus_sqrt(1000.0, 1e-12, steps=1000000000000)", BIG, 1e-12),
    ("exponential(1000.0, rate=0.5, every=1)", BIG, 0.0),  # underflows to exactly 0
    ("exponential(1000.0, rate=0.5, every=1, end=1e-12)", BIG, 1e-12),
    ("exponential(1e-12, rate=2.0, every=1, end=1000.0)", BIG, 1000.0),  # capped: no overflow
    ("step(1000.0, every=1, rate=0.1)", BIG, 0.0),
    ("inverse_sqrt(1000.0, timescale=1)", BIG - 1, 1e-3),
    ("power(1000.0, exponent=-0.5, offset=1)", BIG - 1, 1e-3),
    ("repeat(cosine(1000.0, 1e-12, steps=1), decay=0.5)", BIG, 0.0),
    ("from_tokens(cosine(1000.0, 1e-12, steps=1000000000000), tokens_per_step=100000)", BIG, 1e-12),
    ("noam(1000.0, 4000)", BIG, 1000.0 * math.sqrt(4000) / (BIG + 1)),
    ("bert(1000.0, 1000000000000, 10000)", BIG, 0.0),
    ("cosine(1000.0, 1e-12, steps=1000000000000)", 2**60, 1e-12),  # steps past 2**53
]


@pytest.mark.parametrize(("spec", "step", "expected"), GOLDEN)
def test_documented_extreme_values(spec: str, step: int, expected: float) -> None:
    s = ss.parse(spec)
    assert s(step) == pytest.approx(expected, rel=1e-9, abs=0)
    assert s(np.array([step]))[0] == s(step)


def test_growth_without_a_cap_overflows_loudly() -> None:
    """``rate > 1`` without ``end`` grows without bound: inf, with NumPy's overflow warning."""
    s = ss.exponential(1e-12, rate=2.0, every=1)
    with pytest.warns(RuntimeWarning, match="overflow"):
        assert s(BIG) == math.inf
    capped = ss.exponential(1e-12, rate=2.0, every=1, end=1e3)
    assert capped(np.arange(0, BIG, BIG // 1000)).max() == 1e3  # no warning


def test_torch_evaluation_matches_at_extremes() -> None:
    torch = pytest.importorskip("torch")
    for spec, step, _ in GOLDEN:
        s = ss.parse(spec)
        assert s(torch.tensor([step])).item() == s(step), spec


# -- half-precision gradients near their overflow ------------------------------------------------
@pytest.mark.parametrize("n", [1, 4096])
def test_float16_gradients_near_overflow_have_a_finite_norm(n: int) -> None:
    """fp16 squares accumulate in fp32: 4096 gradients of 6e4 (fp16 max 65504) have norm 3.84e6,
    which fp16 cannot hold (torch's own clip_grad_norm_ returns inf and zeroes the gradients)."""
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float16))
    w.grad = torch.full((n,), 6e4, dtype=torch.float16)
    result = ss.torch.clip_grad_norm_([w], 1.0, nonfinite="raise", return_result=True)
    assert result.norm.dtype == torch.float32
    assert result.norm.item() == pytest.approx(60000.0 * math.sqrt(n), rel=1e-3)
    assert torch.isfinite(w.grad).all()
    assert w.grad.float().norm().item() == pytest.approx(1.0, rel=1e-2)
    if n > 1:
        theirs = torch.nn.Parameter(torch.zeros(n, dtype=torch.float16))
        theirs.grad = torch.full((n,), 6e4, dtype=torch.float16)
        assert torch.nn.utils.clip_grad_norm_([theirs], 1.0).item() == math.inf


def test_bfloat16_gradients_beyond_float32_range_follow_the_policy() -> None:
    """bf16 reaches 3.4e38; a norm over sqrt(fp32 max) ~ 1.8e19 overflows the fp32 sum of
    squares. Such a finite gradient keeps its finite norm (computed scaled, issue 12) and is
    clipped; only a truly non-finite one goes to the non-finite policy."""
    torch = pytest.importorskip("torch")

    def grads(value: float) -> list[object]:
        w = torch.nn.Parameter(torch.zeros(4096, dtype=torch.bfloat16))
        w.grad = torch.full((4096,), value, dtype=torch.bfloat16)
        return [w]

    fine = ss.torch.clip_grad_norm_(grads(1e17), 1.0, nonfinite="raise")
    assert fine.item() == pytest.approx(64e17, rel=1e-2)
    params = grads(1e19)
    big = ss.torch.clip_grad_norm_(params, 1.0, nonfinite="raise")
    assert big.item() == pytest.approx(64e19, rel=1e-2)
    assert float(params[0].grad.float().norm()) == pytest.approx(1.0, rel=1e-2)  # clipped
    with pytest.raises(RuntimeError, match="non-finite"):
        ss.torch.clip_grad_norm_(grads(math.inf), 1.0, nonfinite="raise")
    params = grads(math.inf)
    opt = torch.optim.SGD(params, lr=0.1)
    result = ss.torch.clip_grad_norm_(
        params, 1.0, nonfinite="skip", optimizer=opt, return_result=True
    )
    assert bool(result.skipped) and result.norm.item() == math.inf
    opt.step()
    assert torch.equal(params[0], torch.zeros(4096, dtype=torch.bfloat16))


@pytest.mark.parametrize("lr", [1e-12, 1e3])
def test_extreme_learning_rates_drive_a_real_optimizer(lr: float) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = ss.torch.Scheduler(opt, ss.warmup(ss.cosine(lr, lr * 1e-3, steps=BIG), steps=BIG))
    sched.last_epoch = BIG  # a resume at step 1e12
    assert opt.param_groups[0]["lr"] == lr
    sched.last_epoch = 2 * BIG
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * 1e-3, rel=1e-12)
    state = sched.state_dict()
    assert state["step"] == 2 * BIG
