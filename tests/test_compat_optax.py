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


# -- clipping under optax's names: parity with optax, optax's own invariants --------------------
def _tree(seed: int, shapes) -> list:
    rng = np.random.default_rng(seed)
    return [jax.numpy.asarray(rng.normal(size=s).astype(np.float32)) for s in shapes]


def _optax_unitwise_norm(x, axis=None):
    from optax.transforms import _clipping  # not re-exported at optax's top level

    return _clipping.unitwise_norm(x, axis)


SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 2, 3, 4), (2, 1, 2, 3, 4)]


@pytest.mark.parametrize("axis", [None, -1, (1, 2)])
def test_agc_matches_optax_over_any_axes(axis) -> None:
    shapes = SHAPES if axis is None else [s for s in SHAPES if len(s) >= 3]
    grads, params = _tree(0, shapes), _tree(1, shapes)
    for clipping in (0.01, 10.0):
        ours, _ = co.adaptive_grad_clip(clipping, axis=axis).update(grads, None, params)
        theirs, _ = optax.adaptive_grad_clip(clipping, axis=axis).update(grads, None, params)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
        for g, p in zip(grads, params, strict=True):
            got = co.unitwise_norm(g, axis)
            np.testing.assert_allclose(got, _optax_unitwise_norm(g, axis), rtol=2e-6)
            assert got.shape == p.shape


def test_block_rms_matches_optax_and_its_invariants() -> None:
    grads = _tree(2, SHAPES)
    for threshold in (1e-3, 1e6):
        ours, _ = co.clip_by_block_rms(threshold).update(grads, None)
        theirs, _ = optax.clip_by_block_rms(threshold).update(grads, None)
        for a, b, g in zip(ours, theirs, grads, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-6)
            rms = float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64)))))
            assert rms <= threshold * (1 + 1e-5)  # clipped to the threshold
            if threshold == 1e6:
                np.testing.assert_array_equal(a, g)  # a huge threshold changes nothing
        twice, _ = co.clip_by_block_rms(threshold).update(ours, None)
        for a, b in zip(twice, ours, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)  # clipping twice = clipping once


def test_clipping_does_not_overflow_where_optax_does() -> None:
    big = jax.numpy.full((4,), 1e30, dtype=jax.numpy.float32)
    assert np.isinf(np.asarray(_optax_unitwise_norm(big))).all()
    np.testing.assert_allclose(co.unitwise_norm(big), 2e30, rtol=1e-6)
    out, _ = co.clip_by_block_rms(1.0).update([big], None)
    np.testing.assert_allclose(out[0], 1.0, rtol=1e-6)
    zero, _ = co.clip_by_block_rms(1.0).update([jax.numpy.zeros(3)], None)
    np.testing.assert_array_equal(zero[0], 0.0)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: co.unitwise_norm(jax.numpy.ones((2, 2, 2, 2, 2, 2))), "axis"),
        (lambda: co.unitwise_norm(jax.numpy.ones((2, 2))), None),
        (lambda: co.unitwise_norm(jax.numpy.ones((2, 2)), axis=2), "axis"),
        (lambda: co.unitwise_norm(jax.numpy.ones((2, 2)), axis=(0, 0)), "axis"),
        (lambda: co.unitwise_norm(jax.numpy.ones((2, 2)), axis=1.0), "axis"),
        (lambda: co.adaptive_grad_clip(0.0), "clipping"),
        (lambda: co.adaptive_grad_clip(0.1, eps=-1.0), "eps"),
        (lambda: co.clip_by_block_rms(0.0), "threshold"),
        (lambda: co.adaptive_grad_clip(0.1).update([jax.numpy.ones(2)], None), "params"),
    ],
)
def test_clipping_bad_input_names_the_argument(call, argument) -> None:
    if argument is None:
        call()  # rank 2: optax's default axis 0
        return
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


# -- optax's own expected values (optax/schedules/_schedule_test.py, _join_test.py) -------------
def test_optax_test_suite_values() -> None:
    t = np.arange(15)
    poly = co.polynomial_schedule(init_value=10.0, end_value=20.0, power=1, transition_steps=10)
    np.testing.assert_allclose(poly(t), list(range(10, 20)) + [20] * 5, atol=1e-3)
    pc = co.piecewise_constant_schedule(0.1, {3: 2.0, 6: 0.5})
    np.testing.assert_allclose(pc(np.arange(10)), [0.1] * 3 + [0.2] * 3 + [0.1] * 4, atol=1e-3)
    neg = co.piecewise_constant_schedule(-0.1, {3: 2.0, 6: 0.5})
    np.testing.assert_allclose(neg(np.arange(10)), -pc(np.arange(10)), atol=1e-3)
    ex = co.exponential_decay(init_value=32.0, transition_steps=1, decay_rate=0.5)
    np.testing.assert_allclose(ex(np.arange(5)), [32, 16, 8, 4, 2], atol=1e-3)
    cos = co.cosine_decay_schedule(init_value=0.1, decay_steps=100, alpha=0.0, exponent=2)
    np.testing.assert_allclose(
        cos(np.array([0, 10, 50, 75, 100])),
        [0.1, 0.09516553580760956, 0.025, 0.0021446612663567066, 0.0],
        rtol=1e-6,
        atol=1e-8,
    )
    giant = co.cosine_decay_schedule(init_value=1000.0, decay_steps=int(1e10), alpha=0.0)
    np.testing.assert_allclose(giant(int(1e9)), 975.52826, rtol=1e-7)
    for init, peak, end in [(10, 0.5, 1e-4), (5, 3, 0.0)]:
        w = co.warmup_cosine_decay_schedule(init, peak, 100, 1000, end)
        assert w(0) == init and w(100) == pytest.approx(peak)
        assert w(1000) == pytest.approx(end, rel=1e-3, abs=1e-12)
    lin = co.piecewise_interpolate_schedule("linear", 200.0, {5: 1.5, 10: 0.25})
    expected = [200.0, 220.0, 240.0, 260.0, 280.0, 300.0, 255.0, 210.0, 165.0, 120.0, 75.0]
    np.testing.assert_allclose(lin(np.arange(13)), [*expected, 75.0, 75.0], atol=1e-3)
    cs = co.piecewise_interpolate_schedule("cosine", 400.0, {5: 1.2, 3: 0.6, 7: 1.0})
    expected = [400.0, 360.0, 280.0, 240.0, 264.0, 288.0, 288.0, 288.0, 288.0]
    np.testing.assert_allclose(cs(np.arange(9)), expected, atol=1e-3)
    assert co.piecewise_interpolate_schedule("linear", 13.0, {})(3) == 13.0
    joined = co.join_schedules(
        [co.constant_schedule(1.0), co.constant_schedule(2.0), co.constant_schedule(1.0)],
        [3, 6],
    )
    assert [joined(t) for t in range(7)] == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0]
    for bad in (("linar", 13.0), ("", 13.0, {5: 3.0}), (None, 13.0, {}), ("linear", 13.0, {5: -3})):
        with pytest.raises((ValueError, TypeError)):
            co.piecewise_interpolate_schedule(*bad)
