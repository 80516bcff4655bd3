"""steadystep.compat.torch against torch.optim.lr_scheduler, stepped in a loop."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadystep.compat import torch as ct

torch = pytest.importorskip("torch")
lrs = torch.optim.lr_scheduler


def _optimizer(lr: float, *, adam: bool = False) -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1))]
    if adam:
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _stepped(make, lr: float, n: int, key: str = "lr", *, adam: bool = False) -> np.ndarray:
    """The value of param group ``key`` seen by each of ``n`` updates."""
    opt = _optimizer(lr, adam=adam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation / ordering warnings
        sched = make(opt)
        out = []
        for _ in range(n):
            value = opt.param_groups[0][key]
            out.append(value[0] if isinstance(value, tuple) else value)
            opt.step()
            sched.step()
    return np.array(out, dtype=np.float64)


def _close(ours, theirs) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


lr_values = st.floats(1e-4, 1.0)


@settings(max_examples=20, deadline=None)
@given(
    lr=lr_values,
    step_size=st.integers(1, 10),
    gamma=st.floats(0.1, 0.99),
    milestones=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    total_iters=st.integers(0, 20),
    factor=st.floats(0.05, 1.0),
    power=st.floats(0.5, 3.0),
)
def test_parity_simple(
    lr: float,
    step_size: int,
    gamma: float,
    milestones: list[int],
    total_iters: int,
    factor: float,
    power: float,
) -> None:
    n = 60
    t = np.arange(n)
    _close(
        ct.StepLR(lr, step_size, gamma)(t),
        _stepped(lambda o: lrs.StepLR(o, step_size, gamma), lr, n),
    )
    _close(
        ct.MultiStepLR(lr, milestones, gamma)(t),
        _stepped(lambda o: lrs.MultiStepLR(o, milestones, gamma), lr, n),
    )
    _close(ct.ExponentialLR(lr, gamma)(t), _stepped(lambda o: lrs.ExponentialLR(o, gamma), lr, n))
    _close(
        ct.LinearLR(lr, factor, 1.0 - factor / 2, total_iters)(t),
        _stepped(lambda o: lrs.LinearLR(o, factor, 1.0 - factor / 2, total_iters), lr, n),
    )
    _close(
        ct.ConstantLR(lr, factor, total_iters)(t),
        _stepped(lambda o: lrs.ConstantLR(o, factor, total_iters), lr, n),
    )
    iters = max(total_iters, 1)
    _close(
        ct.PolynomialLR(lr, iters, power)(t),
        _stepped(lambda o: lrs.PolynomialLR(o, iters, power), lr, n),
    )


@settings(max_examples=20, deadline=None)
@given(
    lr=lr_values,
    t_max=st.integers(1, 30),
    eta=st.floats(0.0, 1.0),
    t_mult=st.integers(1, 3),
)
def test_parity_cosine(lr: float, t_max: int, eta: float, t_mult: int) -> None:
    eta_min = eta * lr
    n = 5 * t_max + 7  # well past T_max: torch's recursive form keeps oscillating
    t = np.arange(n)
    _close(
        ct.CosineAnnealingLR(lr, t_max, eta_min)(t),
        _stepped(lambda o: lrs.CosineAnnealingLR(o, t_max, eta_min), lr, n),
    )
    _close(
        ct.CosineAnnealingWarmRestarts(lr, t_max, t_mult, eta_min)(t),
        _stepped(lambda o: lrs.CosineAnnealingWarmRestarts(o, t_max, t_mult, eta_min), lr, n),
    )


@settings(max_examples=20, deadline=None)
@given(
    base=st.floats(1e-4, 0.1),
    span=st.floats(0.0, 1.0),
    up=st.integers(1, 10),
    down=st.one_of(st.none(), st.integers(1, 10)),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.9, 1.0),
)
def test_parity_cyclic(
    base: float, span: float, up: int, down: int | None, mode: str, gamma: float
) -> None:
    top = base + span
    n = 80
    t = np.arange(n)

    def make(o):
        return lrs.CyclicLR(
            o, base, top, step_size_up=up, step_size_down=down, mode=mode, gamma=gamma
        )

    _close(ct.CyclicLR(base, top, up, down, mode, gamma)(t), _stepped(make, base, n))
    _close(
        ct.CyclicMomentum(0.8, 0.9, up, down, mode, gamma)(t), _stepped(make, base, n, "momentum")
    )


@settings(max_examples=25, deadline=None)
@given(
    max_lr=lr_values,
    total=st.integers(4, 120),
    pct=st.floats(0.05, 0.6),
    anneal=st.sampled_from(["cos", "linear"]),
    three=st.booleans(),
    div=st.floats(2.0, 50.0),
    final_div=st.floats(10.0, 1e4),
)
def test_parity_one_cycle(
    max_lr: float, total: int, pct: float, anneal: str, three: bool, div: float, final_div: float
) -> None:
    try:
        ours = ct.OneCycleLR(max_lr, total, None, None, pct, anneal, div, final_div, three)
    except ValueError:
        return  # a phase of length <= 0: torch divides by zero there
    momentum = ct.OneCycleMomentum(total, None, None, pct, anneal, 0.85, 0.95, three)

    def make(o):
        return lrs.OneCycleLR(
            o,
            max_lr,
            total_steps=total,
            pct_start=pct,
            anneal_strategy=anneal,
            div_factor=div,
            final_div_factor=final_div,
            three_phase=three,
        )

    t = np.arange(total)
    _close(ours(t), _stepped(make, max_lr, total))
    _close(momentum(t), _stepped(make, max_lr, total, "momentum"))
    _close(momentum(t), _stepped(make, max_lr, total, "betas", adam=True))


@settings(max_examples=15, deadline=None)
@given(lr=lr_values, warm=st.integers(1, 20), t_max=st.integers(1, 40), gamma=st.floats(0.5, 0.99))
def test_parity_sequential(lr: float, warm: int, t_max: int, gamma: float) -> None:
    n = warm + 2 * t_max + 5
    t = np.arange(n)
    ours = ct.SequentialLR(
        [ct.LinearLR(lr, 0.1, 1.0, warm), ct.CosineAnnealingLR(lr, t_max, 0.0)], [warm]
    )

    def make(o):
        return lrs.SequentialLR(
            o, [lrs.LinearLR(o, 0.1, 1.0, warm), lrs.CosineAnnealingLR(o, t_max)], [warm]
        )

    _close(ours(t), _stepped(make, lr, n))
    ours = ct.SequentialLR([ct.ConstantLR(lr, 0.5, warm), ct.ExponentialLR(lr, gamma)], [warm])

    def make2(o):
        return lrs.SequentialLR(
            o, [lrs.ConstantLR(o, 0.5, warm), lrs.ExponentialLR(o, gamma)], [warm]
        )

    _close(ours(t), _stepped(make2, lr, n))


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: ct.StepLR(0.1, 0), "step_size"),
        (lambda: ct.StepLR(-0.1, 3), "lr"),
        (lambda: ct.MultiStepLR(0.1, [0, 3]), "milestones"),
        (lambda: ct.MultiStepLR(0.1, 3), "milestones"),
        (lambda: ct.LinearLR(0.1, start_factor=0.0), "start_factor"),
        (lambda: ct.LinearLR(0.1, end_factor=1.5), "end_factor"),
        (lambda: ct.ConstantLR(0.1, factor=2.0), "factor"),
        (lambda: ct.PolynomialLR(0.1, total_iters=0), "total_iters"),
        (lambda: ct.CosineAnnealingLR(0.1, T_max=0), "T_max"),
        (lambda: ct.CosineAnnealingWarmRestarts(0.1, T_0=10, T_mult=0), "T_mult"),
        (lambda: ct.CyclicLR(0.1, 1.0, mode="sine"), "mode"),
        (lambda: ct.OneCycleLR(0.1), "total_steps"),
        (lambda: ct.OneCycleLR(0.1, total_steps=10, pct_start=1.5), "pct_start"),
        (lambda: ct.OneCycleLR(0.1, total_steps=10, pct_start=0.1), "pct_start"),
        (lambda: ct.OneCycleLR(0.1, total_steps=10, anneal_strategy="x"), "anneal_strategy"),
        (lambda: ct.SequentialLR([ct.StepLR(1.0, 2), ct.StepLR(1.0, 3)], []), "milestones"),
        (lambda: ct.SWALR(0.1, 0.01, anneal_epochs=-1), "anneal_epochs"),
        (lambda: ct.SWALR(0.1, 0.01, anneal_epochs=2.5), "anneal_epochs"),
        (lambda: ct.SWALR(0.1, 0.01, anneal_strategy="cosine"), "anneal_strategy"),
        (lambda: ct.CyclicLR(0.1, 1.0, scale_fn=abs, scale_mode="epochs"), "scale_mode"),
        (lambda: ct.CyclicLR(0.1, 1.0, scale_fn=0.5), "scale_fn"),
        (lambda: ct.MultiplicativeLR(0.1, [abs]), "lr_lambda"),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


# -- schedules made of Python callables, SWALR ---------------------------------------------------
def _decay_every_3(t: int) -> float:
    return 0.5 ** (t // 3)


@settings(max_examples=15, deadline=None)
@given(lr=lr_values, factor=st.floats(0.8, 1.0), period=st.integers(1, 7))
def test_parity_lambda_and_multiplicative(lr: float, factor: float, period: int) -> None:
    def fn(t: int) -> float:
        return factor ** (t % period) + 0.01 * t

    t = np.arange(60)
    np.testing.assert_array_equal(
        ct.LambdaLR(lr, fn)(t), _stepped(lambda o: lrs.LambdaLR(o, fn), lr, 60)
    )
    # bit for bit: the running product is multiplied in torch's order
    np.testing.assert_array_equal(
        ct.MultiplicativeLR(lr, lambda k: factor)(t),
        _stepped(lambda o: lrs.MultiplicativeLR(o, lambda k: factor), lr, 60),
    )


def test_multiplicative_far_steps_use_the_checkpoints() -> None:
    s = ct.MultiplicativeLR(1.0, lambda k: 1.0 - 1e-5 * (k % 7))
    far = [5000, 1023, 1024, 1025, 2049, 0]
    ref = {}
    p = 1.0
    for k in range(5001):
        if k:
            p = p * (1.0 - 1e-5 * (k % 7))
        ref[k] = p
    assert [s(t) for t in far] == [ref[t] for t in far]
    np.testing.assert_array_equal(s(np.array(far)), [ref[t] for t in far])


def test_multiplicative_refuses_a_function_that_changes() -> None:
    changed = {"yes": False}

    def drifting(k: int) -> float:
        return 0.5 if changed["yes"] else 0.999

    s = ct.MultiplicativeLR(1.0, drifting)
    s(1500)
    changed["yes"] = True  # the cached product up to step 1024 is now stale
    with pytest.raises(ValueError, match="function of the step"):
        s(1100)


def test_callable_schedules_identify_themselves() -> None:
    import steadystep as ss

    s = ct.LambdaLR(0.1, _decay_every_3)
    text = repr(s)
    assert "python_function" in text and "_decay_every_3" in text
    back = ss.parse(text)
    assert back == s and back.fn is None  # equal for resume checks, but text cannot evaluate
    with pytest.raises(ValueError, match="no callable"):
        back(0)
    assert ct.LambdaLR(0.1, lambda t: 1.0) != s  # another function
    assert ct.LambdaLR(0.2, _decay_every_3) != s
    with pytest.raises(TypeError, match="host"):
        s(torch.arange(3))
    with pytest.raises(TypeError, match="lr_lambda"):
        ct.LambdaLR(0.1, 0.5)
    with pytest.raises(ValueError, match="finite"):
        ct.LambdaLR(0.1, lambda t: float("nan"))


def test_callable_schedule_resumes_in_the_torch_scheduler() -> None:
    import steadystep as ss

    def make():
        opt = _optimizer(0.1)
        return opt, ss.torch.Scheduler(opt, ct.LambdaLR(0.1, _decay_every_3))

    opt, sched = make()
    for _ in range(7):
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)  # a real update (the Scheduler skips gradless steps)
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2, sched2 = make()
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.1 * 0.25
    other = ss.torch.Scheduler(_optimizer(0.1), ct.LambdaLR(0.1, lambda t: 1.0))
    with pytest.raises(ValueError, match="different schedule"):
        other.load_state_dict(state)


@settings(max_examples=15, deadline=None)
@given(
    lr=lr_values,
    swa=st.floats(1e-4, 1.0),
    anneal=st.integers(0, 20),
    strategy=st.sampled_from(["cos", "linear"]),
)
def test_parity_swalr(lr: float, swa: float, anneal: int, strategy: str) -> None:
    from torch.optim.swa_utils import SWALR

    def make(o):
        return SWALR(o, swa_lr=swa, anneal_epochs=anneal, anneal_strategy=strategy)

    ours = ct.SWALR(lr, swa, anneal, strategy)(np.arange(40))
    np.testing.assert_allclose(ours, _stepped(make, lr, 40), rtol=1e-12, atol=1e-15)


@settings(max_examples=15, deadline=None)
@given(up=st.integers(1, 8), down=st.one_of(st.none(), st.integers(1, 8)), cycle=st.booleans())
def test_parity_cyclic_custom_scale_fn(up: int, down: int | None, cycle: bool) -> None:
    def scale_fn(x: float) -> float:
        return 1.0 / (1.0 + 0.1 * x)

    mode = "cycle" if cycle else "iterations"

    def make(o):
        return lrs.CyclicLR(
            o, 0.01, 0.1, up, down, scale_fn=scale_fn, scale_mode=mode, cycle_momentum=True
        )

    t = np.arange(60)
    ours = ct.CyclicLR(0.01, 0.1, up, down, scale_fn=scale_fn, scale_mode=mode)(t)
    np.testing.assert_allclose(ours, _stepped(make, 0.01, 60), rtol=1e-12)
    mom = ct.CyclicMomentum(0.8, 0.9, up, down, scale_fn=scale_fn, scale_mode=mode)(t)
    np.testing.assert_allclose(mom, _stepped(make, 0.01, 60, "momentum"), rtol=1e-12)


# -- torch's own expected values (test/optim/test_lrscheduler.py) ---------------------------------
def test_torch_expectations() -> None:
    single = [0.05] * 3 + [0.005] * 3 + [0.0005] * 3 + [0.00005] * 3
    assert [ct.StepLR(0.05, 3, 0.1)(t) for t in range(12)] == pytest.approx(single)
    multi = [0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 3
    assert [ct.MultiStepLR(0.05, [2, 5, 9], 0.1)(t) for t in range(12)] == pytest.approx(multi)
    assert [ct.ConstantLR(0.05, 0.5, 5)(t) for t in range(10)] == pytest.approx(
        [0.025] * 5 + [0.05] * 5
    )
    start, end, iters = 1 / 4, 3 / 5, 4
    linear = [0.05 * (start + i * (end - start) / iters) for i in range(iters)]
    linear += [0.05 * end] * 6
    assert [ct.LinearLR(0.05, start, end, iters)(t) for t in range(10)] == pytest.approx(linear)
    # SWALR: anneal_epochs=1 reaches swa_lr at once; cosine anneal from the LR it starts at
    assert [ct.SWALR(0.05, 0.01, 1)(t) for t in range(3)] == pytest.approx([0.05, 0.01, 0.01])
    lr, swa, a = 0.05 * 0.9**5, 0.01, 5

    def coef(t):
        return 0.0 if t + 1 >= a else (1 + math.cos(math.pi * (t + 1) / a)) / 2

    expected = [lr * coef(t) + swa * (1 - coef(t)) for t in range(9)]
    assert [ct.SWALR(lr, swa, a)(t + 1) for t in range(9)] == pytest.approx(expected)
    mult = ct.MultiplicativeLR(0.05, lambda epoch: 0.9)
    assert [mult(t) for t in range(6)] == pytest.approx([0.05 * 0.9**i for i in range(6)])
    lam = ct.LambdaLR(0.05, lambda epoch: 0.95**epoch)
    assert [lam(t) for t in range(10)] == pytest.approx([0.05 * 0.95**t for t in range(10)])
