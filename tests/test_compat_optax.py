"""steadystep.compat.optax against optax.schedules (evaluated in float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steadystep.compat import optax as co

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")


STEPS = np.arange(256)


def _theirs(schedule, steps: np.ndarray) -> np.ndarray:
    # eagerly, one step at a time: under jit/vmap XLA divides by a rounded reciprocal, so optax's
    # own staircase switches one step late at some boundaries (49 / 49 < 1), unlike eager optax
    with jax.enable_x64(True):
        return np.array([float(schedule(jax.numpy.asarray(t))) for t in steps])


def _check(name: str, steps: np.ndarray, *args, **kwargs) -> None:
    ours = getattr(co, name)(*args, **kwargs)
    theirs = getattr(optax.schedules, name)(*args, **kwargs)
    np.testing.assert_allclose(ours(steps), _theirs(theirs, steps), rtol=1e-6, atol=1e-12)


values = st.floats(0.0, 2.0)
positive = st.floats(1e-3, 2.0)
lengths = st.integers(1, 60)
begins = st.integers(0, 30)


@settings(max_examples=12, deadline=None)
@given(
    init=values,
    end=values,
    power=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    n=lengths,
    begin=begins,
    rate=st.floats(0.1, 1.5),
    staircase=st.booleans(),
    use_end=st.booleans(),
)
def test_parity_transitions(
    init: float,
    end: float,
    power: float,
    n: int,
    begin: int,
    rate: float,
    staircase: bool,
    use_end: bool,
) -> None:
    steps = STEPS
    _check("polynomial_schedule", steps, init, end, power, n, begin)
    _check("linear_schedule", steps, init, end, n, begin)
    _check("constant_schedule", steps, init)
    _check("warmup_constant_schedule", steps, init, end + 0.1, n)
    start = init + 0.01
    floor = None
    if use_end:
        floor = start * 0.3 if rate < 1 else start * 3
    _check("exponential_decay", steps, start, n, rate, begin, staircase, floor)


@settings(max_examples=12, deadline=None)
@given(
    init=values,
    peak=positive,
    warm=st.integers(0, 30),
    n=lengths,
    alpha=st.floats(0.0, 1.0),
    exponent=st.sampled_from([1.0, 0.5, 2.0]),
)
def test_parity_cosine(
    init: float, peak: float, warm: int, n: int, alpha: float, exponent: float
) -> None:
    steps = STEPS
    _check("cosine_decay_schedule", steps, peak, n, alpha, exponent)
    _check(
        "warmup_cosine_decay_schedule", steps, init, peak, warm, warm + n, alpha * peak, exponent
    )
    _check(
        "warmup_exponential_decay_schedule", steps, init, peak, warm, n, 0.7, 3, True, 0.1 * peak
    )
    kwargs = [
        {"init_value": init, "peak_value": peak, "warmup_steps": warm, "decay_steps": warm + n},
        {"init_value": 0.0, "peak_value": peak / 2, "warmup_steps": 1, "decay_steps": n + 1},
    ]
    _check("sgdr_schedule", STEPS, kwargs)


@settings(max_examples=12, deadline=None)
@given(
    init=positive,
    table=st.dictionaries(st.integers(0, 60), st.floats(0.0, 2.0), max_size=4),
    kind=st.sampled_from(["linear", "cosine"]),
    n=st.integers(1, 200),
    pct=st.floats(0.0, 1.0),
    pct_final=st.floats(0.0, 1.0),
)
def test_parity_piecewise_and_onecycle(
    init: float, table: dict, kind: str, n: int, pct: float, pct_final: float
) -> None:
    steps = STEPS
    _check("piecewise_constant_schedule", steps, init, table)
    _check("piecewise_interpolate_schedule", steps, kind, init, table)
    steps = STEPS
    _check("cosine_onecycle_schedule", steps, n, 0.5, pct)
    lo, hi = sorted([pct, pct_final])
    _check("linear_onecycle_schedule", steps, n, 0.5, lo, hi)


def test_join_schedules_parity() -> None:
    ours = co.join_schedules(
        [co.linear_schedule(0.0, 1.0, 10), co.cosine_decay_schedule(1.0, 20)], [10]
    )
    theirs = optax.schedules.join_schedules(
        [
            optax.schedules.linear_schedule(0.0, 1.0, 10),
            optax.schedules.cosine_decay_schedule(1.0, 20),
        ],
        [10],
    )
    steps = STEPS
    np.testing.assert_allclose(ours(steps), _theirs(theirs, steps), rtol=1e-6, atol=1e-12)


def test_schedule_runs_under_jit_like_optax() -> None:
    s = co.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100)
    jitted = jax.jit(lambda t: s(t))
    np.testing.assert_allclose(
        np.asarray(jitted(jax.numpy.arange(100))), s(np.arange(100)), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        # optax logs and returns a constant for these; we refuse
        (lambda: co.polynomial_schedule(1.0, 0.0, 1.0, 0), "transition_steps"),
        (lambda: co.linear_schedule(1.0, 0.0, 10, transition_begin=-1), "transition_begin"),
        (lambda: co.exponential_decay(1.0, 10, 0.0), "decay_rate"),
        (lambda: co.exponential_decay(1.0, 0, 0.5), "transition_steps"),
        (lambda: co.cosine_decay_schedule(1.0, 0), "decay_steps"),
        (lambda: co.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10), "decay_steps"),
        (lambda: co.piecewise_constant_schedule(1.0, {5: -1.0}), "boundaries_and_scales"),
        (lambda: co.piecewise_interpolate_schedule("cubic", 1.0), "interpolate_type"),
        (lambda: co.linear_onecycle_schedule(100, 1.0, pct_start=0.9, pct_final=0.5), "pct_start"),
        (lambda: co.join_schedules([co.constant_schedule(1.0)] * 2, []), "boundaries"),
        (lambda: co.sgdr_schedule([]), "cosine_kwargs"),
    ],
)
def test_bad_input_names_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()
