"""steadystep.compat.keras (and .tf, whose TF1 functions are the same formulas) against Keras 3.

Keras runs on its torch backend here (no TensorFlow on this machine), in float64.
TF1 ``tf.train.*_decay`` cannot be installed here: its functions are checked against the
Keras schedules TF itself delegates to (``legacy_learning_rate_decay.py``) and against golden
values from the formulas in TensorFlow's ``learning_rate_decay.py``.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadystep.compat import keras as ck
from steadystep.compat import tf as ctf

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() not in ("torch", "jax"), reason="needs Keras on torch or JAX"
)


@pytest.fixture(autouse=True)
def _float64():
    before = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(before)


def _check(name: str, steps: int, *args, **kwargs) -> None:
    ours = getattr(ck, name)(*args, **kwargs)
    theirs = getattr(keras.optimizers.schedules, name)(*args, **kwargs)
    expected = np.array([float(theirs(t)) for t in range(steps)])
    np.testing.assert_allclose(ours(np.arange(steps)), expected, rtol=1e-6, atol=1e-12)


lr = st.floats(1e-3, 1.0)


@settings(max_examples=12, deadline=None)
@given(
    init=lr,
    n=st.integers(1, 30),
    rate=st.floats(0.05, 0.99),
    staircase=st.booleans(),
    end=st.floats(0.0, 1e-3),
    power=st.floats(0.5, 3.0),
    cycle=st.booleans(),
)
def test_parity_decays(
    init: float, n: int, rate: float, staircase: bool, end: float, power: float, cycle: bool
) -> None:
    steps = 3 * n + 3
    _check("ExponentialDecay", steps, init, n, rate, staircase)
    _check("InverseTimeDecay", steps, init, n, rate, staircase)
    _check("PolynomialDecay", steps, init, n, end, power, cycle)


@settings(max_examples=12, deadline=None)
@given(
    init=lr,
    n=st.integers(1, 30),
    alpha=st.floats(0.0, 0.9),
    target=st.one_of(st.none(), st.floats(0.01, 2.0)),
    warm=st.integers(0, 20),
    t_mul=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    m_mul=st.floats(0.3, 1.0),
)
def test_parity_cosine(
    init: float,
    n: int,
    alpha: float,
    target: float | None,
    warm: int,
    t_mul: float,
    m_mul: float,
) -> None:
    steps = warm + 4 * n + 3
    _check("CosineDecay", steps, init, n, alpha, warmup_target=target, warmup_steps=warm)
    _check("CosineDecayRestarts", steps, init, n, t_mul, m_mul, alpha)


@settings(max_examples=12, deadline=None)
@given(
    boundaries=st.lists(st.integers(0, 40), min_size=1, max_size=4, unique=True).map(sorted),
    data=st.data(),
)
def test_parity_piecewise(boundaries: list[int], data) -> None:
    values = data.draw(
        st.lists(st.floats(0.0, 1.0), min_size=len(boundaries) + 1, max_size=len(boundaries) + 1)
    )
    _check("PiecewiseConstantDecay", 50, boundaries, values)


def test_tf1_functions_are_the_keras_formulas() -> None:
    t = np.arange(60)
    np.testing.assert_allclose(
        ctf.polynomial_decay(0.1, 20)(t), ck.PolynomialDecay(0.1, 20, 0.0001)(t)
    )
    np.testing.assert_allclose(
        ctf.cosine_decay_restarts(0.1, 7, alpha=0.1)(t),
        ck.CosineDecayRestarts(0.1, 7, 2.0, 1.0, 0.1)(t),
    )


def test_tf1_golden_values() -> None:
    """Golden values from TensorFlow's learning_rate_decay.py docstrings' formulas."""
    # polynomial_decay, TF1 defaults: end_learning_rate=0.0001, power=1, cycle=False
    s = ctf.polynomial_decay(0.1, 10_000)
    assert s(5_000) == pytest.approx((0.1 - 0.0001) * 0.5 + 0.0001, rel=1e-12)
    assert s(20_000) == pytest.approx(0.0001, rel=1e-12)
    # cycle=True: decay_steps * ceil(global_step / decay_steps)
    c = ctf.polynomial_decay(1.0, 10, end_learning_rate=0.0, cycle=True)
    assert [c(0), c(10), c(15), c(25)] == pytest.approx([1.0, 0.0, 0.25, 1 - 25 / 30])
    # natural_exp_decay: lr * exp(-decay_rate * global_step / decay_steps)
    n = ctf.natural_exp_decay(0.5, 10, 0.3, staircase=True)
    assert n(25) == pytest.approx(0.5 * math.exp(-0.3 * 2), rel=1e-12)
    # inverse_time_decay: lr / (1 + decay_rate * global_step / decay_step)
    i = ctf.inverse_time_decay(0.5, 10, 0.3)
    assert i(25) == pytest.approx(0.5 / (1 + 0.3 * 2.5), rel=1e-12)
    # exponential_decay and piecewise_constant (switch after the boundary)
    assert ctf.exponential_decay(0.5, 10, 0.3)(25) == pytest.approx(0.5 * 0.3**2.5, rel=1e-12)
    p = ctf.piecewise_constant([100_000, 110_000], [1.0, 0.5, 0.1])
    assert [p(100_000), p(100_001), p(110_001)] == [1.0, 0.5, 0.1]
    # cosine_decay: lr * ((1 - alpha) * 0.5 * (1 + cos(pi * min(t, T) / T)) + alpha)
    assert ctf.cosine_decay(0.5, 100, alpha=0.2)(25) == pytest.approx(
        0.5 * (0.8 * 0.5 * (1 + math.cos(math.pi / 4)) + 0.2), rel=1e-12
    )


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: ck.ExponentialDecay(0.1, 0, 0.5), "decay_steps"),
        (lambda: ck.PolynomialDecay(0.1, -5), "decay_steps"),
        (lambda: ck.CosineDecay(0.1, 0), "decay_steps"),
        (lambda: ck.CosineDecayRestarts(0.1, 10, t_mul=0.5), "t_mul"),
        (lambda: ck.CosineDecayRestarts(0.1, 10, alpha=1.5), "alpha"),
        (lambda: ck.PiecewiseConstantDecay([1, 2], [1.0]), "values"),
        (lambda: ck.PiecewiseConstantDecay([-1], [1.0, 0.5]), "boundaries"),
        (lambda: ck.InverseTimeDecay(0.1, 10, -1.0), "decay_rate"),
        (lambda: ctf.natural_exp_decay(0.1, 10, -1.0), "decay_rate"),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


def tf_linear_cosine_decay(lr, step, decay_steps, num_periods, alpha, beta):
    """tensorflow/python/keras/optimizer_v2/legacy_learning_rate_decay.py (linear_cosine_decay)."""
    step = min(step, decay_steps)
    linear_decayed = (decay_steps - step) / decay_steps
    fraction = 2.0 * num_periods * step / decay_steps
    cosine_decayed = 0.5 * (1.0 + math.cos(math.pi * fraction))
    return lr * ((alpha + linear_decayed) * cosine_decayed + beta)


@settings(max_examples=20, deadline=None)
@given(
    lr=lr,
    n=st.integers(1, 50),
    periods=st.floats(0.1, 3.0),
    alpha=st.floats(0.0, 0.5),
    beta=st.floats(0.0, 0.01),
)
def test_tf1_linear_cosine_decay(lr: float, n: int, periods: float, alpha: float, beta: float):
    t = np.arange(2 * n + 3)
    ours = ctf.linear_cosine_decay(lr, n, periods, alpha, beta)(t)
    ref = [tf_linear_cosine_decay(lr, int(i), n, periods, alpha, beta) for i in t]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)


# -- Keras' own expected values (learning_rate_schedule_test.py) ---------------------------------
def test_keras_test_suite_values() -> None:
    import math

    from steadystep.compat import keras as ck

    assert ck.ExponentialDecay(0.05, 10, 0.96)(5) == pytest.approx(0.05 * 0.96**0.5, rel=1e-6)
    stairs = ck.ExponentialDecay(0.1, 3, 0.96, staircase=True)
    assert stairs(1) == pytest.approx(0.1) and stairs(2) == pytest.approx(0.1)
    assert stairs(100) == pytest.approx(0.1 * 0.96 ** (100 // 3), rel=1e-6)
    pw = ck.PiecewiseConstantDecay([100, 110, 120], [1.0, 0.1, 0.01, 0.001])
    assert [pw(t) for t in (0, 100, 105, 110, 120, 999)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.001]
    # Deliberate difference: Keras evaluates its test's step -999.0; steps here are >= 0
    with pytest.raises(ValueError, match="step"):
        pw(-999)
    pb = ck.PiecewiseConstantDecay([1, 2, 3], [0.4, 0.5, 0.6, 0.7])
    assert [pb(t) for t in range(5)] == [0.4, 0.4, 0.5, 0.6, 0.7]
    assert ck.PolynomialDecay(0.05, 10, 0.0)(5) == pytest.approx(0.025)
    assert ck.PolynomialDecay(0.05, 10, 0.001)(10) == pytest.approx(0.001)
    assert ck.PolynomialDecay(0.05, 10, 0.001)(5) == pytest.approx(0.0255)
    assert ck.PolynomialDecay(0.05, 10, 0.001)(15) == pytest.approx(0.001)
    cyc = ck.PolynomialDecay(0.05, 10, 0.001, cycle=True)
    assert cyc(15) == pytest.approx((0.05 - 0.001) * 0.25 + 0.001)
    assert ck.PolynomialDecay(0.05, 10, 0.0, power=0.5)(5) == pytest.approx(0.05 * 0.5**0.5)
    inv = ck.InverseTimeDecay(0.1, 10, 0.96)
    assert [inv(i) for i in range(11)] == pytest.approx(
        [0.1 / (1 + i / 10 * 0.96) for i in range(11)]
    )
    inv_s = ck.InverseTimeDecay(0.1, 10, 0.96, staircase=True)
    assert [inv_s(i) for i in range(11)] == pytest.approx(
        [0.1 / (1 + 0.96 * (i // 10)) for i in range(11)]
    )

    def np_cosine(step, steps, alpha=0.0):
        step = min(step, steps)
        return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * step / steps)) + alpha

    for step in range(0, 1500, 250):
        assert ck.CosineDecay(1.0, 1000)(step) == pytest.approx(np_cosine(step, 1000), abs=1e-6)
        a = ck.CosineDecay(1.0, 1000, 0.1)(step)
        assert a == pytest.approx(np_cosine(step, 1000, 0.1), abs=1e-6)
        w = ck.CosineDecay(0.0, 10, warmup_target=10.0, warmup_steps=1500)(step)
        assert w == pytest.approx(step / 1500 * 10.0)
    for step in range(0, 3000, 250):
        lr = ck.CosineDecay(0.0, 1000, warmup_target=10.0, warmup_steps=2000)(step)
        want = step / 2000 * 10.0 if step < 2001 else 10.0 * np_cosine(step - 2000, 1000)
        assert lr == pytest.approx(want, abs=1e-6)
