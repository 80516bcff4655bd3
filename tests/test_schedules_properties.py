"""Properties of every schedule: round trips, purity, backends agree, joins, bounds, monotone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import steadystep as ss
from tests import strategies as gen

SAMPLE = np.unique(np.concatenate([np.arange(0, 1200), np.arange(1200, 20_000, 97), [10**9]]))


@given(gen.any_schedule)
def test_spec_text_round_trip(s: ss.Schedule) -> None:
    text = repr(s)
    again = ss.parse(text)
    assert again == s and hash(again) == hash(s)
    assert repr(again) == text


@given(gen.any_schedule)
def test_dict_round_trip_through_json(s: ss.Schedule) -> None:
    d = s.to_dict()
    assert ss.parse(json.loads(json.dumps(d, allow_nan=False))) == s
    assert ss.parse(json.dumps(d)) == s  # JSON text is accepted too


@settings(max_examples=60)
@given(gen.any_schedule)
def test_scalar_equals_vectorised(s: ss.Schedule) -> None:
    steps = SAMPLE[::7]
    vector = s(steps)
    scalar = np.array([s(int(t)) for t in steps])
    # element-wise identical maths; NumPy may use a different (SIMD) cos/pow kernel per array
    # length, so allow a few ulps rather than demand bit equality
    np.testing.assert_array_max_ulp(scalar, vector, maxulp=4)
    assert np.all(np.isfinite(vector))


@settings(max_examples=60)
@given(gen.any_schedule)
def test_vectorised_order_does_not_matter(s: ss.Schedule) -> None:
    steps = SAMPLE[::5]
    shuffled = np.random.default_rng(0).permutation(steps)
    np.testing.assert_array_max_ulp(s(shuffled), s(steps)[np.argsort(np.argsort(shuffled))], 4)


@settings(max_examples=40, deadline=None)
@given(gen.any_schedule)
def test_torch_matches_numpy(s: ss.Schedule) -> None:
    torch = pytest.importorskip("torch")
    steps = SAMPLE[::11]
    out = s(torch.as_tensor(steps))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), s(steps), rtol=1e-12, atol=0)


@settings(max_examples=10, deadline=None)
@given(gen.any_schedule)
def test_jax_matches_numpy_in_float32_and_float64(s: ss.Schedule) -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    steps = SAMPLE[SAMPLE < 2**24][::13]  # exactly representable as float32 steps
    expected = s(steps)
    out = jax.jit(s)(jnp.asarray(steps, dtype=jnp.int32))
    assert out.dtype == jnp.float32
    # float32 rounding relative to the schedule's scale (a value that should be 0 may be 1e-8)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(out), expected, rtol=2e-4, atol=2e-6 * scale)
    with jax.enable_x64(True):
        out64 = s(jnp.asarray(steps))
        assert out64.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out64), expected, rtol=1e-12, atol=0)


def test_numpy_backends_agree_on_one_composite() -> None:
    torch = pytest.importorskip("torch")
    s = ss.warmup(ss.cosine(1e-3, 1e-5, steps=9000), steps=1000) >> ss.constant(1e-5)
    ints = torch.arange(0, 12_000, 3)
    np.testing.assert_allclose(s(ints).numpy(), s(ints.numpy()), rtol=1e-14, atol=0)


@given(gen.finite_primitives(), gen.finite_primitives())
def test_sequence_starts_each_part_at_its_own_zero(a: ss.Schedule, b: ss.Schedule) -> None:
    s = a >> b
    n = int(a.length)
    assert s(n) == b(0)
    assert s(n - 1) == a(n - 1)
    assert s(n + int(b.length) + 5) == b(int(b.length))


@given(gen.finite_primitives(), st.integers(1, 300), st.sampled_from(["linear", "cosine"]))
def test_warmup_is_monotone_and_continuous(s: ss.Schedule, n: int, shape: str) -> None:
    w = ss.warmup(s, steps=n, shape=shape)
    ramp = w(np.arange(n + 1))
    assert np.all(np.diff(ramp) >= 0)
    assert ramp[0] == 0.0 and ramp[-1] == s(0)  # lands exactly on the peak: no jump at the join


@given(gen.finite_primitives())
def test_values_stay_within_the_endpoints(s: ss.Schedule) -> None:
    ends = [s(0), s(int(s.length))]
    v = s(np.arange(int(s.length) + 10))
    assert v.min() >= min(ends) * (1 - 1e-15) and v.max() <= max(ends) * (1 + 1e-15)


@given(gen.finite_primitives())
def test_decays_are_monotone(s: ss.Schedule) -> None:
    v = s(np.arange(int(s.length) + 2))
    d = np.diff(v)
    assert np.all(d <= 0) or np.all(d >= 0)


@given(gen.any_schedule, st.integers(0, 10**6))
def test_pure_function_of_the_step(s: ss.Schedule, t: int) -> None:
    # no state: the same step gives the same value whatever was evaluated before
    first = s(t)
    s(np.arange(0, 5000, 3))
    assert s(t) == first and ss.parse(repr(s))(t) == first


@given(gen.schedules)
def test_schedules_are_immutable(s: ss.Schedule) -> None:
    import dataclasses

    field = dataclasses.fields(s)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(s, field, 1.0)


def test_equality_is_structural() -> None:
    a = ss.warmup(ss.cosine(1e-3, 0.0, steps=10), steps=2)
    assert a == ss.warmup(ss.cosine(0.001, 0, steps=10), steps=2)
    assert a != ss.warmup(ss.cosine(1e-3, 0.0, steps=11), steps=2)
    assert len({a, ss.parse(repr(a))}) == 1
    assert (ss.linear(0, 1, 2) >> ss.constant(1, 2)) >> ss.constant(0.5) == ss.linear(0, 1, 2) >> (
        ss.constant(1, 2) >> ss.constant(0.5)
    )


def test_repr_is_readable_spec_text() -> None:
    s = ss.warmup(ss.cosine(1e-3, 1e-5, steps=9000), steps=1000) >> ss.constant(1e-5) * 0.5
    assert repr(s) == (
        "warmup(cosine(start=0.001, end=1e-05, steps=9000), steps=1000)"
        " >> constant(value=1e-05) * 0.5"
    )
    assert repr((ss.linear(0, 1, 2) >> ss.constant(1.0)) * 2) == (
        "(linear(start=0, end=1, steps=2) >> constant(value=1.0)) * 2"
    )


def test_float_steps_and_unsigned_arrays() -> None:
    s = ss.linear(1.0, 0.0, 10)
    assert s(5.0) == s(5) == 0.5
    np.testing.assert_array_equal(s(np.arange(5, dtype=np.uint32)), s(np.arange(5)))
    assert math.isclose(s(np.float32(5)), 0.5)


def test_float32_backends_keep_precision_of_constants() -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    # a Python int constant past int32 must not overflow in JAX
    long = ss.cosine(1.0, 0.0, steps=3 * 2**31)
    np.testing.assert_allclose(np.asarray(long(jnp.arange(3))), long(np.arange(3)), rtol=1e-6)
    # rate ** t rounds the rate to float32 first (2e-4 off at t=16000); exp(t*log(rate)) does not
    s = ss.exponential(1.0, rate=0.999, every=1)
    assert abs(float(jax.jit(s)(jnp.int32(16_000))) / s(16_000) - 1) < 1e-5
