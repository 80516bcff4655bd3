"""steadystep.jax.reduce_on_plateau: the same states and updates as optax.contrib's, under jit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
contrib = pytest.importorskip("optax.contrib")
import jax.numpy as jnp  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import steadystep.jax as ssj  # noqa: E402

FIELDS = ("scale", "best_value", "plateau_count", "cooldown_count", "count", "avg_value")


def run(transform: Any, params: Any, values: list[float]) -> tuple[Any, Any]:
    """Feed ``values`` one update at a time under jit; every state and update, stacked."""
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 3, params)

    def go(vals: jax.Array) -> tuple[Any, Any]:
        def step(state: Any, v: jax.Array) -> tuple[Any, Any]:
            updates, state = transform.update(grads, state, params, value=v)
            return state, (state, updates)

        return jax.lax.scan(step, transform.init(params), vals)[1]

    return jax.jit(go)(jnp.asarray(values, jnp.float32))


def assert_same(ours: Any, theirs: Any) -> None:
    (ours_states, ours_updates), (their_states, their_updates) = ours, theirs
    for field in FIELDS:
        a, b = getattr(ours_states, field), getattr(their_states, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field)
    for a, b in zip(jax.tree.leaves(ours_updates), jax.tree.leaves(their_updates), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# values with ties, near-ties (rtol/atol decide) and, rarely, non-finite ones
VALUE = st.one_of(
    st.sampled_from([1.0, 1.0, 0.9999, 0.999, 0.5, 0.0, -0.5]),
    st.floats(-3, 3, width=32),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
VALUES = st.lists(VALUE, min_size=1, max_size=60)
PARAMS = {
    "f32": {"w": jnp.zeros((2,), jnp.float32)},
    "mixed": {"w": jnp.zeros((2,), jnp.float16), "b": jnp.zeros((), jnp.float32)},
    "bf16": [jnp.zeros((3,), jnp.bfloat16)],
}


@settings(max_examples=20, deadline=None)
@given(
    values=VALUES,
    factor=st.sampled_from([0.1, 0.5, 0.9]) | st.floats(0.01, 0.99),
    patience=st.integers(1, 5),
    rtol=st.sampled_from([0.0, 1e-4, 0.1, 0.5, 1.0]),
    atol=st.sampled_from([0.0, 1e-3, 0.1, 1.0]),
    cooldown=st.integers(0, 4),
    accumulation_size=st.integers(1, 3),
    min_scale=st.sampled_from([0.0, 0.01, 0.3, 1.0]) | st.floats(0, 1),
    params=st.sampled_from(sorted(PARAMS)),
)
def test_matches_optax_step_by_step(
    values: list[float],
    factor: float,
    patience: int,
    rtol: float,
    atol: float,
    cooldown: int,
    accumulation_size: int,
    min_scale: float,
    params: str,
) -> None:
    assume(rtol > 0 or atol > 0)
    kwargs = dict(
        factor=factor,
        patience=patience,
        rtol=rtol,
        atol=atol,
        cooldown=cooldown,
        accumulation_size=accumulation_size,
        min_scale=min_scale,
    )
    ours = run(ssj.reduce_on_plateau(**kwargs), PARAMS[params], values)
    theirs = run(contrib.reduce_on_plateau(**kwargs), PARAMS[params], values)
    assert_same(ours, theirs)


def test_reduces_after_patience_then_cools_down() -> None:
    # decreasing, then flat: 2 bad windows reduce, 1 window of cooldown, 2 more bad reduce again
    values = [3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    tx = ssj.reduce_on_plateau(factor=0.5, patience=2, cooldown=1)
    ours = run(tx, jnp.zeros(1), values)
    assert np.asarray(ours[0].scale).tolist() == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert_same(ours, run(contrib.reduce_on_plateau(0.5, 2, cooldown=1), jnp.zeros(1), values))


def test_non_finite_values_follow_optax() -> None:
    # NaN and +inf are never better (bad windows); a NaN inside a window poisons that window's
    # average only; -inf is an improvement after which nothing is better.
    values = [1.0, math.nan, math.inf, 0.5, math.nan, 0.4, -math.inf, -5.0, -6.0, 0.0]
    for acc in (1, 2):
        kwargs = dict(factor=0.5, patience=2, accumulation_size=acc)
        ours = run(ssj.reduce_on_plateau(**kwargs), jnp.zeros(1), values)
        assert_same(ours, run(contrib.reduce_on_plateau(**kwargs), jnp.zeros(1), values))
    states, _ = run(ssj.reduce_on_plateau(factor=0.5, patience=2), jnp.zeros(1), values)
    # 1.0 best; nan, inf bad -> reduce; 0.5 best; nan bad; 0.4 best; -inf best; -5, -6, 0 bad
    assert np.asarray(states.scale).tolist() == [1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert float(states.best_value[-1]) == -math.inf


def test_chains_with_an_optimizer_and_reads_the_scale() -> None:
    opt = optax.chain(optax.sgd(1.0), ssj.reduce_on_plateau(factor=0.5, patience=1))
    state = opt.init(jnp.zeros(2))
    update = jax.jit(opt.update)
    for loss in (1.0, 2.0):
        updates, state = update(jnp.ones(2), state, value=jnp.float32(loss))
    assert isinstance(state[1], ssj.ReduceOnPlateauState)
    assert float(state[1].scale) == 0.5
    np.testing.assert_array_equal(np.asarray(updates), [-0.5, -0.5])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"factor": 0.0}, ValueError, "Argument `factor` must be > 0. Received: factor=0.0"),
        ({"factor": 1.0}, ValueError, "Argument `factor` must be < 1"),
        ({"factor": 1.5}, ValueError, "Received: factor=1.5"),
        ({"factor": math.nan}, ValueError, "Argument `factor` must be finite"),
        ({"factor": "0.1"}, TypeError, "Argument `factor` must be a real number"),
        ({"patience": 0}, ValueError, "Argument `patience` must be >= 1. Received: patience=0"),
        ({"patience": -3}, ValueError, "Received: patience=-3"),
        ({"patience": 2.5}, TypeError, "Argument `patience` must be an integer"),
        ({"patience": True}, TypeError, "Argument `patience` must be an integer"),
        ({"rtol": -0.1}, ValueError, "Argument `rtol` must be >= 0. Received: rtol=-0.1"),
        ({"rtol": 1.5}, ValueError, "Argument `rtol` must be <= 1. Received: rtol=1.5"),
        ({"atol": -1.0}, ValueError, "Argument `atol` must be >= 0. Received: atol=-1.0"),
        ({"atol": math.inf}, ValueError, "Argument `atol` must be finite"),
        ({"rtol": 0.0, "atol": 0.0}, ValueError, "At least one of `rtol` and `atol` must be > 0"),
        ({"cooldown": -1}, ValueError, "Argument `cooldown` must be >= 0. Received: cooldown=-1"),
        ({"cooldown": 1.0}, TypeError, "Argument `cooldown` must be an integer"),
        ({"accumulation_size": 0}, ValueError, "Argument `accumulation_size` must be >= 1"),
        ({"min_scale": -0.1}, ValueError, "Argument `min_scale` must be >= 0"),
        ({"min_scale": 2.0}, ValueError, "Argument `min_scale` must be <= 1"),
        ({"patience": jnp.int32(3)}, TypeError, "Argument `patience` must be an integer"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        ssj.reduce_on_plateau(**kwargs)
    assert message in str(info.value)


def test_value_is_required() -> None:
    tx = ssj.reduce_on_plateau()
    with pytest.raises(TypeError, match="value"):
        tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))


def test_rtol_one_never_improves_as_optax() -> None:
    # the first threshold is (1 - 1) * inf = NaN: no value is ever better, so it just counts
    values = [1.0, 0.5, 0.1, -1.0]
    ours = run(ssj.reduce_on_plateau(factor=0.5, patience=2, rtol=1.0), jnp.zeros(1), values)
    assert np.isinf(np.asarray(ours[0].best_value)).all()
    assert np.asarray(ours[0].scale).tolist() == [1, 0.5, 0.5, 0.25]
    assert_same(ours, run(contrib.reduce_on_plateau(0.5, 2, rtol=1.0), jnp.zeros(1), values))
