"""steadystep.compat.deepspeed against DeepSpeed's own ``deepspeed/runtime/lr_schedules.py``.

DeepSpeed is installed with ``pip install --no-deps`` (README's test command) and its scheduler
file is loaded alone (``tests/_peer_loader.py``). The real schedulers drive a one-parameter torch
optimizer the way the engine does (``step()`` after each optimizer step); the LR (and
``betas[0]``) the optimizer holds for update ``t`` is compared with ``s(t)``. The second half
reproduces the expected values of DeepSpeed's ``tests/unit/runtime/test_lr_schedulers.py``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadystep.compat import deepspeed as cd

from ._peer_loader import deepspeed_lr_schedules

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ds():
    return deepspeed_lr_schedules()


def run(cls, n: int, lr: float = 0.1, field: str = "lr", **kw) -> list[float]:
    """The value of ``field`` the optimizer holds for updates 0..n-1 under DeepSpeed's ``cls``."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = cls(opt, **kw)
    out = []
    for _ in range(n):
        value = opt.param_groups[0][field]
        out.append(value[0] if field == "betas" else value)
        sched.step()
    return out


def close(ours, theirs) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(
    low=st.floats(0.0, 1e-3),
    high=st.floats(1e-3, 1.0),
    w=st.integers(1, 30),
    extra=st.integers(-5, 40),
    warmup_type=st.sampled_from(["log", "linear"]),
    ratios=st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.5)),
)
def test_warmups_match_deepspeed(ds, low, high, w, extra, warmup_type, ratios) -> None:
    n = w + 2 * abs(extra) + 12
    t = np.arange(n)
    kw = {"warmup_min_lr": low, "warmup_num_steps": w, "warmup_type": warmup_type}
    close(cd.WarmupLR(warmup_max_lr=high, **kw)(t), run(ds.WarmupLR, n, warmup_max_lr=high, **kw))
    # warmup_max_lr=None (DeepSpeed's default): the optimizer's own LR, given here as lr
    close(cd.WarmupLR(lr=high, **kw)(t), run(ds.WarmupLR, n, lr=high, **kw))
    total = max(1, w + extra)
    close(
        cd.WarmupDecayLR(total, warmup_max_lr=high, **kw)(t),
        run(ds.WarmupDecayLR, n, total_num_steps=total, warmup_max_lr=high, **kw),
    )
    wmin, cmin = ratios
    cos = {"warmup_num_steps": w, "warmup_type": warmup_type}
    cos |= {"warmup_min_ratio": wmin, "cos_min_ratio": cmin}
    close(
        cd.WarmupCosineLR(high, total, **cos)(t),
        run(ds.WarmupCosineLR, n, lr=high, total_num_steps=total, **cos),
    )


@settings(max_examples=40, deadline=None)
@given(
    low=st.floats(1e-4, 1e-2),
    high=st.floats(1e-2, 1.0),
    first=st.integers(1, 20),
    second=st.one_of(st.none(), st.integers(0, 20)),
    stairs=st.tuples(st.integers(0, 6), st.one_of(st.none(), st.integers(0, 6))),
    rate=st.sampled_from([0.0, 0.01, 0.5]),
    size=st.integers(0, 10),
)
def test_one_cycle_matches_deepspeed(ds, low, high, first, second, stairs, rate, size) -> None:
    shape = {
        "cycle_first_step_size": first,
        "cycle_second_step_size": second,
        "cycle_first_stair_count": stairs[0],
        "cycle_second_stair_count": stairs[1],
        "decay_step_size": size,
    }
    n = 2 * first + (second or first) + 20
    t = np.arange(n)
    lrs = {"cycle_min_lr": low, "cycle_max_lr": high, "decay_lr_rate": rate}
    theirs = run(ds.OneCycle, n, **lrs, **shape, cycle_momentum=False)
    close(cd.OneCycle(**lrs, **shape)(t), theirs)
    moms = {"cycle_min_mom": 0.8, "cycle_max_mom": 0.9, "decay_mom_rate": rate / 10}
    theirs = run(ds.OneCycle, n, field="betas", **lrs, **moms, **shape)
    close(cd.OneCycleMomentum(**moms, **shape)(t), theirs)


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize(
    ("min_lr", "rate", "size"), [(1e-4, 1e-5, 1), (1e-3, 1e-3, 10), (0.01, 2.0, 19)]
)
def test_lr_range_test_matches_deepspeed(ds, min_lr, rate, size, staircase) -> None:
    kw = {
        "lr_range_test_min_lr": min_lr,
        "lr_range_test_step_rate": rate,
        "lr_range_test_step_size": size,
        "lr_range_test_staircase": staircase,
    }
    n = max(50, 3 * size)
    close(cd.LRRangeTest(**kw)(np.arange(n)), run(ds.LRRangeTest, n, **kw))


# -- DeepSpeed's own expected values (tests/unit/runtime/test_lr_schedulers.py) -----------------
def _increasing(values) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def _decreasing(values) -> bool:
    return all(a > b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("warmup_type", ["log", "linear"])
@pytest.mark.parametrize("w", [10, 15, 19, 33])
def test_deepspeed_warmup_expectations(w: int, warmup_type: str) -> None:
    # DeepSpeed records get_lr() after each step: our update t + 1
    s = cd.WarmupLR(0.1, 0.2, w, warmup_type)
    lrs = [s(t + 1) for t in range(4 * w)]
    assert lrs[0] == 0.1 and lrs[w] == 0.2 and all(v == 0.2 for v in lrs[w:])
    d = cd.WarmupDecayLR(2 * w, 0.1, 0.2, w, warmup_type)
    lrs = [d(t + 1) for t in range(4 * w)]
    assert lrs[0] == 0.1 and lrs[w] == 0.2 and _decreasing(lrs[w : 2 * w + 1])


@pytest.mark.parametrize(
    ("total", "w", "cmin", "wmin"),
    [(100, 10, 0.1, 0.2), (200, 20, 0.1, 0.2), (500, 30, 0.0, 0.2), (600, 300, 0.1, 0.0)],
)
def test_deepspeed_warmup_cosine_expectations(total, w, cmin, wmin) -> None:
    lr = 0.0015
    s = cd.WarmupCosineLR(lr, total, wmin, w, cmin)
    lrs = [s(t + 1) for t in range(3 * total)]
    assert abs(lrs[0] - lr * wmin) < 1e-7
    assert abs(lrs[w - 1] - lr) < 1e-7
    assert abs(lrs[total - 1] - lr * cmin) < 1e-7
    assert _increasing(lrs[:w]) and _decreasing(lrs[w:total])
    # today's DeepSpeed holds the floor after total_num_steps (it used to rise again)
    assert all(v == pytest.approx(lr * cmin) for v in lrs[total:])


def test_deepspeed_warmup_cosine_total_equal_to_warmup() -> None:
    s = cd.WarmupCosineLR(0.01, 10, warmup_num_steps=10, cos_min_ratio=0.1)
    assert [s(t + 1) for t in range(10, 15)] == pytest.approx([0.001] * 5)
    assert s(0) == 0.0 and s(2) == pytest.approx(0.01 * math.log(2) / math.log(10))


@pytest.mark.parametrize(
    ("low", "high", "rate", "size", "decay"),
    [(1e-5, 1e-2, 1e-3, 10, 10), (1e-3, 1e-1, 0, 21, 21), (1e-3, 1e-1, 1e-1, 21, 21)],
)
def test_deepspeed_one_cycle_expectations(low, high, rate, size, decay) -> None:
    s = cd.OneCycle(low, high, rate, size, decay_step_size=decay)
    lrs = [s(t) for t in range(max(50, 3 * size))]  # get_lr() before each update: s(t)
    assert lrs[0] == low and lrs[size] == high
    assert _increasing(lrs[:size]) and _decreasing(lrs[size : 2 * size])
    if rate > 0:
        assert _decreasing(lrs[2 * size :])  # DeepSpeed decays after the cycle (it used to grow)


@pytest.mark.parametrize(("rate", "size"), [(1e-3, 10), (0, 21)])
def test_deepspeed_one_cycle_momentum_expectations(rate, size) -> None:
    m = cd.OneCycleMomentum(0.08, 0.09, rate, size, decay_step_size=size)
    moms = [m(t) for t in range(max(50, 3 * size))]
    # Deliberate difference: update 0 uses the constructor's betas (cycle_min_mom), which is
    # what the optimizer holds; DeepSpeed's get_mom() before the first step reports 0.09.
    assert moms[0] == 0.08 and moms[1] < 0.09
    assert moms[size] == pytest.approx(0.08)
    assert _decreasing(moms[1 : size + 1]) and _increasing(moms[size : 2 * size])
    if rate > 0:
        assert _increasing(moms[2 * size :])


def test_deepspeed_one_cycle_stairs_expectations() -> None:
    def lrs(n1, first=8, second=8, n2=None, steps=16):
        s = cd.OneCycle(0.001, 0.01, 0.0, first, second, n1, n2)
        return [s(t + 1) for t in range(steps)]

    continuous = lrs(0)
    assert len(set(continuous[:8])) == 8
    stairs = lrs(2)
    assert stairs[0] == stairs[1] and len(set(stairs[:8])) < 8
    assert lrs(8) == continuous
    cont = lrs(0, 10, 21, 0, 31)
    aligned = lrs(10, 10, 21, 21, 31)
    assert aligned == pytest.approx(cont) and aligned[9] == pytest.approx(0.01)
    first_only, second_only = lrs(2, 10, 21, 0, 31), lrs(0, 10, 21, 3, 31)
    assert first_only[:10] != cont[:10] and first_only[10:] == cont[10:]
    assert second_only[:10] == cont[:10] and second_only[10:30] != cont[10:30]


def test_deepspeed_one_cycle_zero_second_half() -> None:
    s = cd.OneCycle(0.001, 0.1, cycle_first_step_size=100, cycle_second_step_size=0)
    assert s(0) == pytest.approx(0.001) and s(3) > 0.001 and s(100) == pytest.approx(0.001)


def test_deepspeed_tensor_lr_contract_values() -> None:
    # the values of DeepSpeed's TENSOR_LR_CONTRACTS after scheduler.step(1): our update 2
    assert cd.LRRangeTest()(2) == pytest.approx(1e-3 * (1 + 2 / 2000))
    assert cd.OneCycle(0.01, 0.1, cycle_first_step_size=10)(2) == pytest.approx(0.028)
    gamma = math.log(2) / math.log(10)
    assert cd.WarmupLR(warmup_num_steps=10, lr=0.1)(2) == pytest.approx(0.1 * gamma)
    assert cd.WarmupDecayLR(100, 0.0, 0.1, 10)(2) == pytest.approx(0.1 * gamma)
    assert cd.WarmupCosineLR(0.1, 100, warmup_num_steps=10)(2) == pytest.approx(0.1 * gamma)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: cd.WarmupLR(warmup_type="cubic", lr=0.1), "warmup_type"),  # DeepSpeed: log
        (lambda: cd.WarmupLR(), "warmup_max_lr"),
        (lambda: cd.WarmupLR(warmup_max_lr=0.1, lr=0.1), "warmup_max_lr"),
        (lambda: cd.WarmupLR(warmup_num_steps=0, lr=0.1), "warmup_num_steps"),
        (lambda: cd.WarmupLR(warmup_num_steps=None, lr=0.1), "warmup_num_steps"),
        (lambda: cd.WarmupDecayLR(100, warmup_num_steps=-5), "warmup_num_steps"),
        (lambda: cd.WarmupCosineLR(0.1, 100, warmup_num_steps=-5), "warmup_num_steps"),
        (lambda: cd.WarmupCosineLR(0.1, 100, cos_min_ratio=-0.1), "cos_min_ratio"),
        (lambda: cd.OneCycle(0.1, 1.0, cycle_first_step_size=0), "cycle_first_step_size"),
        (lambda: cd.OneCycle(0.1, 1.0, 0.0, 100, -1), "cycle_second_step_size"),
        (lambda: cd.OneCycle(0.1, 1.0, decay_lr_rate=-0.1), "decay_lr_rate"),
        (lambda: cd.OneCycle(0.1, 1.0, cycle_first_stair_count=-1), "cycle_first_stair_count"),
        (lambda: cd.LRRangeTest(lr_range_test_step_size=0), "lr_range_test_step_size"),
        (lambda: cd.LRRangeTest(lr_range_test_step_size=-5), "lr_range_test_step_size"),
        (lambda: cd.LRRangeTest(lr_range_test_staircase=1), "lr_range_test_staircase"),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()
