"""steadystep.compat.torch against torch.optim.lr_scheduler, stepped in a loop."""

from __future__ import annotations

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
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()
