"""steadystep.compat.timm against timm's own scheduler code.

timm's ``__init__`` needs torchvision, which has no build beside this torch, so timm is
installed with ``pip install --no-deps`` (README's test command) and ``timm/scheduler/*.py`` are
loaded alone (``tests/_peer_loader.py``). The real schedulers drive a one-parameter optimizer the
way timm's train loop does (``step_update(num_updates=t + 1)`` after update ``t``), and the LR
the optimizer holds for update ``t`` is compared with ``s(t)``. The second half reproduces the
expectations of timm's ``tests/test_scheduler.py``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadystep.compat import timm as ct

from ._peer_loader import timm_schedulers

torch = pytest.importorskip("torch")
NAMES = {
    "cosine": "CosineLRScheduler",
    "tanh": "TanhLRScheduler",
    "poly": "PolyLRScheduler",
    "step": "StepLRScheduler",
    "multistep": "MultiStepLRScheduler",
}


@pytest.fixture(scope="module")
def timm():
    return timm_schedulers()


def run(cls, n: int, lr: float, **kw) -> list[float]:
    """The LR the optimizer holds for updates 0..n-1 under timm's ``cls``."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = cls(opt, t_in_epochs=False, **kw)
    out = []
    for t in range(n):
        out.append(opt.param_groups[0]["lr"])
        sched.step_update(num_updates=t + 1)
    return out


def _compare(timm, kind: str, base: float, n: int, **kw) -> None:
    ours = getattr(ct, NAMES[kind])(base, **kw)(np.arange(n))
    theirs = run(getattr(timm, NAMES[kind]), n, base, **kw)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


warmups = st.fixed_dictionaries(
    {},
    optional={
        "warmup_t": st.integers(0, 10),
        "warmup_lr_init": st.floats(0.0, 1e-3),
        "warmup_prefix": st.booleans(),
    },
)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["cosine", "tanh", "poly"]),
    base=st.floats(1e-3, 1.0),
    t_initial=st.integers(1, 30),
    cycle=st.fixed_dictionaries(
        {},
        optional={
            "lr_min": st.floats(0.0, 1e-3),
            "cycle_mul": st.sampled_from([1.0, 1.5, 2.0, 3.0]),
            "cycle_decay": st.floats(0.3, 1.0),
            "cycle_limit": st.integers(1, 4),
        },
    ),
    warm=warmups,
    k=st.sampled_from([0.5, 1.0, 2.0]),
    power=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_cycle_schedulers_match_timm(
    timm, kind: str, base: float, t_initial: int, cycle: dict, warm: dict, k: float, power: float
) -> None:
    kw = {"t_initial": t_initial, **cycle, **warm}
    if kind != "tanh":
        kw["k_decay"] = k
    if kind == "poly":
        kw["power"] = power
    if kind != "tanh" and not kw.get("warmup_prefix", False) and kw.get("warmup_t", 0):
        # overlaid warmup longer than all cycles: steadystep refuses it (the run ends first)
        total = ct.CosineLRScheduler(1.0, t_initial, **cycle).length
        if kw["warmup_t"] > total:
            return
    _compare(timm, kind, base, 8 * t_initial + 12, **kw)


@settings(max_examples=30, deadline=None)
@given(
    base=st.floats(1e-3, 1.0),
    decay_t=st.integers(1, 10),
    milestones=st.lists(st.integers(0, 40), min_size=1, max_size=4).map(sorted),
    rate=st.floats(0.1, 1.0),
    warm=warmups,
)
def test_step_schedulers_match_timm(
    timm, base: float, decay_t: int, milestones: list[int], rate: float, warm: dict
) -> None:
    _compare(timm, "step", base, 60, decay_t=decay_t, decay_rate=rate, **warm)
    _compare(timm, "multistep", base, 60, decay_t=milestones, decay_rate=rate, **warm)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["cosine", "tanh", "poly", "step", "multistep"]),
    noise=st.one_of(
        st.integers(0, 20),
        st.tuples(st.integers(0, 10), st.integers(0, 40)),
        st.tuples(st.floats(0, 10), st.floats(10, 40)),  # the factory's fractions * length
    ),
    pct=st.sampled_from([0.05, 0.3, 0.67]),
    std=st.sampled_from([0.5, 1.0, 2.0]),
    seed=st.integers(0, 2**40),
    warm=warmups,
)
def test_noise_matches_timm_bit_for_bit(timm, kind, noise, pct, std, seed, warm) -> None:
    kw = {"t_initial": 30} if kind in ("cosine", "tanh", "poly") else {"decay_t": 7}
    if kind == "multistep":
        kw = {"decay_t": [5, 12]}
    if not warm.get("warmup_prefix", kind in ("step", "multistep")) and kind != "tanh":
        warm = {**warm, "warmup_t": min(warm.get("warmup_t", 0), 30)}
    kw |= {"noise_range_t": noise, "noise_pct": pct, "noise_std": std, "noise_seed": seed}
    ours = getattr(ct, NAMES[kind])(0.1, **kw, **warm)(np.arange(50))
    theirs = run(getattr(timm, NAMES[kind]), 50, 0.1, **kw, **warm)
    assert ours.tolist() == pytest.approx(theirs, rel=1e-12, abs=0)


def test_golden_values() -> None:
    """Hand-computed from the formulas in timm's cosine_lr.py / tanh_lr.py / multistep_lr.py."""
    s = ct.CosineLRScheduler(0.1, t_initial=10, lr_min=0.01, warmup_t=2, warmup_lr_init=0.0)
    assert s(0) == 0.0 and s(1) == pytest.approx(0.05)  # ramps to base, not to s(2)
    assert s(5) == pytest.approx(0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi * 0.5)))
    assert s(10) == pytest.approx(0.01)  # cycle_limit=1: lr_min after the cycle
    k = ct.CosineLRScheduler(1.0, t_initial=10, k_decay=2.0)
    assert k(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    th = ct.TanhLRScheduler(1.0, t_initial=10, warmup_t=4, warmup_lr_init=0.0)
    target = 0.5 * (1 - math.tanh(-7 * 0.6 + 3 * 0.4))
    assert th(2) == pytest.approx(target / 2)  # overlaid tanh warmup ramps to lr at warmup_t
    # update 0 gets the constructor's lr, not _get_lr(0) = lr * (1 - tanh(lb)) / 2
    lb = ct.TanhLRScheduler(1.0, t_initial=10, lb=-1.0)
    assert lb(0) == 1.0 and lb(1) == pytest.approx(0.5 * (1 - math.tanh(-0.9 + 0.3)))
    # milestone m applies at t = m - 1 (bisect_right(decay_t, t + 1)); m <= 1 from update 1
    m = ct.MultiStepLRScheduler(1.0, [1, 3, 3], decay_rate=0.5)
    assert [m(t) for t in range(4)] == [1.0, 0.5, 0.125, 0.125]


# -- timm's own expectations (tests/test_scheduler.py), on t = epochs -----------------------------
CASES = [
    ("CosineLRScheduler", {"t_initial": 100}),
    ("StepLRScheduler", {"decay_t": 10, "decay_rate": 0.5}),
    ("MultiStepLRScheduler", {"decay_t": [10, 20, 30], "decay_rate": 0.5}),
    ("PolyLRScheduler", {"t_initial": 100}),
    ("TanhLRScheduler", {"t_initial": 100}),
]


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_timm_warmup_expectations(name: str, kw: dict) -> None:
    build = getattr(ct, name)
    s = build(0.1, warmup_t=5, warmup_lr_init=0.001, **kw)
    lrs = [s(t) for t in range(5)]
    assert lrs[0] == pytest.approx(0.001) and all(a < b for a, b in itertools.pairwise(lrs))
    prefixed = build(0.1, warmup_t=5, warmup_lr_init=0.001, warmup_prefix=True, **kw)
    assert prefixed(5) == pytest.approx(0.1)
    plain = build(0.1, **kw)
    assert plain(0) == pytest.approx(0.1) and plain(9) <= 0.1 and plain(49) != 0.1


def test_timm_schedule_expectations() -> None:
    c = ct.CosineLRScheduler(0.1, t_initial=100, lr_min=0.001)
    assert c(0) == pytest.approx(0.1) and c(100) == pytest.approx(0.001)
    assert c(50) == pytest.approx(0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * 0.5)))
    c2 = ct.CosineLRScheduler(0.1, t_initial=50, lr_min=0.001, cycle_limit=2)
    assert c2(49) < 0.05 and c2(109) == pytest.approx(0.001)
    assert (
        c2.length == 100
        and ct.CosineLRScheduler(0.1, 100, warmup_t=10, warmup_prefix=True).length == 110
    )
    st_ = ct.StepLRScheduler(0.1, decay_t=10, decay_rate=0.5)
    assert (st_(9), st_(10), st_(20)) == pytest.approx((0.1, 0.05, 0.025))
    ms = ct.MultiStepLRScheduler(0.1, decay_t=[10, 20, 30], decay_rate=0.5)
    assert [ms(t) for t in (8, 11, 21, 31)] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert ms(9) == pytest.approx(0.05)  # timm's convention: milestone 10 applies at t = 9
    p = ct.PolyLRScheduler(0.1, t_initial=100, lr_min=0.001, power=1.0)
    assert p(0) == pytest.approx(0.1) and p(100) == pytest.approx(0.001)
    th = ct.TanhLRScheduler(0.1, t_initial=100, lr_min=0.001)
    assert th(100) < th(0)
    k1, k2 = ct.CosineLRScheduler(0.1, 100), ct.CosineLRScheduler(0.1, 100, k_decay=2.0)
    assert k1(50) != k2(50)
    pk1, pk2 = ct.PolyLRScheduler(0.1, 100), ct.PolyLRScheduler(0.1, 100, k_decay=2.0)
    assert pk1(50) != pk2(50)


@pytest.mark.parametrize(("name", "kw"), [c for c in CASES if c[0] != "MultiStepLRScheduler"])
def test_timm_noise_is_repeatable_and_in_range(name: str, kw: dict) -> None:
    args = {"noise_range_t": (10, 50), "noise_pct": 0.5, "noise_seed": 42, **kw}
    a, b = getattr(ct, name)(0.1, **args), getattr(ct, name)(0.1, **args)
    assert a == b and a(np.arange(60)).tolist() == b(np.arange(60)).tolist()
    plain = getattr(ct, name)(0.1, **kw)
    t = np.arange(60)
    ratio = a(t) / plain(t)
    assert np.all(ratio[:10] == 1.0) and np.all(ratio[50:] == 1.0)
    assert np.all(np.abs(ratio[10:50] - 1) < 0.5) and np.any(ratio[10:50] != 1.0)


def test_timm_factory_arguments_accepted_at_defaults() -> None:
    """timm's create_scheduler_v2 passes these to every scheduler; they change no value."""
    extra = {"t_in_epochs": True, "noise_range_t": None, "noise_pct": 0.67}
    extra |= {"noise_std": 1.0, "noise_seed": 42, "initialize": True}
    for name, kw in CASES:
        build = getattr(ct, name)
        assert build(0.1, **kw, **extra) == build(0.1, **kw)
        assert build(0.1, **kw, t_in_epochs=False, initialize=False) == build(0.1, **kw)


def test_noise_refuses_device_arrays() -> None:
    s = ct.CosineLRScheduler(0.1, 10, noise_range_t=2)
    with pytest.raises(TypeError, match="noise_range_t"):
        s(torch.arange(5))


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: ct.CosineLRScheduler(0.1, 0), "t_initial"),
        (lambda: ct.CosineLRScheduler(0.1, 10, lr_min=-1.0), "lr_min"),
        (lambda: ct.CosineLRScheduler(0.1, 10, cycle_mul=0.5), "mul"),
        (lambda: ct.CosineLRScheduler(0.1, 10, cycle_limit=0), "cycle_limit"),
        (lambda: ct.CosineLRScheduler(0.1, 10, noise_range_t=[1, 2, 3]), "noise_range_t"),
        (lambda: ct.CosineLRScheduler(0.1, 10, noise_range_t=-1), "noise_range_t"),
        (lambda: ct.CosineLRScheduler(0.1, 10, noise_pct=0.0), "noise_pct"),
        (lambda: ct.CosineLRScheduler(0.1, 10, noise_std=-1.0), "noise_std"),
        (lambda: ct.CosineLRScheduler(0.1, 10, noise_seed=1.5), "noise_seed"),
        (lambda: ct.CosineLRScheduler(0.1, 10, t_in_epochs=1), "t_in_epochs"),
        (lambda: ct.StepLRScheduler(0.1, 10, initialize="yes"), "initialize"),
        (lambda: ct.CosineLRScheduler(0.1, 10, warmup_t=-1), "warmup_t"),
        (lambda: ct.TanhLRScheduler(0.1, 10, lb=3.0, ub=-7.0), "lb"),
        (lambda: ct.PolyLRScheduler(0.1, 10, power=0.0), "power"),
        (lambda: ct.StepLRScheduler(0.1, 0), "decay_t"),
        (lambda: ct.MultiStepLRScheduler(0.1, [5, 2]), "decay_t"),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()
