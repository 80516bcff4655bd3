"""steadystep.compat.timm against timm's formulas.

timm needs torchvision, which has no CPU build here, so timm is not installed. The reference
below transcribes ``_get_lr`` of huggingface/pytorch-image-models ``timm/scheduler/cosine_lr.py``,
``tanh_lr.py``, ``poly_lr.py``, ``step_lr.py`` and ``multistep_lr.py`` (warmup from
``scheduler.py``/the constructors): scalar Python maths, the same operations in the same
order, evaluated at every step. When timm is importable the real schedulers are compared too.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadystep.compat import timm as ct


def _cycle(t, t_initial, cycle_mul):
    if cycle_mul != 1:
        i = math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))
        t_i = cycle_mul**i * t_initial
        t_curr = t - (1 - cycle_mul**i) / (1 - cycle_mul) * t_initial
    else:
        i = t // t_initial
        t_i = t_initial
        t_curr = t - (t_initial * i)
    return i, t_i, t_curr


def reference(kind: str, base: float, t: int, **kw) -> float:
    """timm's ``_get_lr(t)`` for one parameter group whose initial LR is ``base``."""
    warmup_t, warmup_lr_init = kw.get("warmup_t", 0), kw.get("warmup_lr_init", 0)
    prefix = kw.get("warmup_prefix", kind in ("step", "multistep"))

    def decay(t):
        if kind == "step":
            return base * kw["decay_rate"] ** (t // kw["decay_t"])
        if kind == "multistep":
            return base * kw["decay_rate"] ** bisect.bisect_right(kw["decay_t"], t)
        i, t_i, t_curr = _cycle(t, kw["t_initial"], kw.get("cycle_mul", 1.0))
        lr_min = kw.get("lr_min", 0.0)
        if i >= kw.get("cycle_limit", 1):
            return lr_min
        lr_max = base * kw.get("cycle_decay", 1.0) ** i
        k = kw.get("k_decay", 1.0)
        if kind == "cosine":
            return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * t_curr**k / t_i**k))
        if kind == "poly":
            return lr_min + (lr_max - lr_min) * (1 - t_curr**k / t_i**k) ** kw["power"]
        tr = t_curr / t_i
        lb, ub = kw.get("lb", -7.0), kw.get("ub", 3.0)
        return lr_min + 0.5 * (lr_max - lr_min) * (1 - math.tanh(lb * (1.0 - tr) + ub * tr))

    if warmup_t and t < warmup_t:
        target = base
        if kind == "tanh" and not prefix:
            target = decay(warmup_t)
        return warmup_lr_init + t * (target - warmup_lr_init) / warmup_t
    return decay(t - warmup_t if prefix else t)


CLASSES = {
    "cosine": ct.CosineLRScheduler,
    "tanh": ct.TanhLRScheduler,
    "poly": ct.PolyLRScheduler,
    "step": ct.StepLRScheduler,
    "multistep": ct.MultiStepLRScheduler,
}


def _compare(kind: str, base: float, n: int, **kw) -> None:
    ours = CLASSES[kind](base, **kw)(np.arange(n))
    theirs = np.array([reference(kind, base, t, **kw) for t in range(n)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


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
def test_cycle_schedulers_match_timm_formulas(
    kind: str, base: float, t_initial: int, cycle: dict, warm: dict, k: float, power: float
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
    _compare(kind, base, 8 * t_initial + 12, **kw)


@settings(max_examples=30, deadline=None)
@given(
    base=st.floats(1e-3, 1.0),
    decay_t=st.integers(1, 10),
    milestones=st.lists(st.integers(1, 40), min_size=1, max_size=4, unique=True).map(sorted),
    rate=st.floats(0.1, 1.0),
    warm=warmups,
)
def test_step_schedulers_match_timm_formulas(
    base: float, decay_t: int, milestones: list[int], rate: float, warm: dict
) -> None:
    _compare("step", base, 60, decay_t=decay_t, decay_rate=rate, **warm)
    _compare("multistep", base, 60, decay_t=milestones, decay_rate=rate, **warm)


def test_golden_values() -> None:
    """Hand-computed from the formulas in timm's cosine_lr.py / tanh_lr.py."""
    s = ct.CosineLRScheduler(0.1, t_initial=10, lr_min=0.01, warmup_t=2, warmup_lr_init=0.0)
    assert s(0) == 0.0 and s(1) == pytest.approx(0.05)  # ramps to base, not to s(2)
    assert s(5) == pytest.approx(0.01 + 0.5 * 0.09 * (1 + math.cos(math.pi * 0.5)))
    assert s(10) == pytest.approx(0.01)  # cycle_limit=1: lr_min after the cycle
    k = ct.CosineLRScheduler(1.0, t_initial=10, k_decay=2.0)
    assert k(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    th = ct.TanhLRScheduler(1.0, t_initial=10, warmup_t=4, warmup_lr_init=0.0)
    target = 0.5 * (1 - math.tanh(-7 * 0.6 + 3 * 0.4))
    assert th(2) == pytest.approx(target / 2)  # overlaid tanh warmup ramps to lr at warmup_t


def test_real_timm_when_installed() -> None:
    timm_scheduler = pytest.importorskip("timm.scheduler")
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = timm_scheduler.CosineLRScheduler(
        opt,
        t_initial=20,
        lr_min=1e-3,
        warmup_t=3,
        warmup_lr_init=1e-4,
        cycle_limit=2,
        t_in_epochs=False,
    )
    ours = ct.CosineLRScheduler(0.1, 20, 1e-3, cycle_limit=2, warmup_t=3, warmup_lr_init=1e-4)
    for t in range(50):
        sched.step_update(t)
        assert opt.param_groups[0]["lr"] == pytest.approx(ours(t), rel=1e-6)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: ct.CosineLRScheduler(0.1, 0), "t_initial"),
        (lambda: ct.CosineLRScheduler(0.1, 10, lr_min=-1.0), "lr_min"),
        (lambda: ct.CosineLRScheduler(0.1, 10, cycle_mul=0.5), "mul"),
        (lambda: ct.CosineLRScheduler(0.1, 10, cycle_limit=0), "cycle_limit"),
        (lambda: ct.CosineLRScheduler(0.1, 10, noise_range_t=5), "noise_range_t"),
        (lambda: ct.CosineLRScheduler(0.1, 10, warmup_t=-1), "warmup_t"),
        (lambda: ct.TanhLRScheduler(0.1, 10, lb=3.0, ub=-7.0), "lb"),
        (lambda: ct.PolyLRScheduler(0.1, 10, power=0.0), "power"),
        (lambda: ct.StepLRScheduler(0.1, 0), "decay_t"),
        (lambda: ct.MultiStepLRScheduler(0.1, [5, 2]), "milestones"),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()
