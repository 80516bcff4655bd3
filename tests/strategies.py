"""Hypothesis strategies for random, valid steadystep schedules (shared by several test modules)."""

from __future__ import annotations

from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

import steadystep as ss

values = st.floats(1e-6, 10.0, allow_nan=False, allow_infinity=False)
lengths = st.integers(1, 500)
small_lengths = st.integers(1, 50)


@st.composite
def finite_primitives(draw: Any) -> ss.Schedule:
    """Primitives with a finite length (usable anywhere in a sequence or under repeat)."""
    kind = draw(st.sampled_from(["constant", "linear", "cosine", "polynomial", "one_minus_sqrt"]))
    n = draw(lengths)
    if kind == "constant":
        return ss.constant(draw(values), steps=n)
    a, b = draw(values), draw(values)
    if kind in ("linear", "cosine"):
        return getattr(ss, kind)(a, b, steps=n)
    hi, lo = max(a, b), min(a, b)
    if kind == "polynomial":
        return ss.polynomial(hi, lo, steps=n, power=draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])))
    return ss.one_minus_sqrt(hi, lo, steps=n)


@st.composite
def open_primitives(draw: Any) -> ss.Schedule:
    """Primitives without a length (they can only end a sequence)."""
    kind = draw(
        st.sampled_from(
            ["constant", "exponential", "inverse_sqrt", "power", "piecewise", "step", "multistep"]
        )
    )
    if kind == "constant":
        return ss.constant(draw(values))
    if kind == "exponential":
        rate = draw(st.floats(0.05, 0.999))
        end = draw(st.none() | st.just(0.0) | values)
        start = draw(values)
        assume(end is None or end <= start)
        return ss.exponential(
            start, rate, every=draw(lengths), staircase=draw(st.booleans()), end=end
        )
    if kind == "inverse_sqrt":
        return ss.inverse_sqrt(draw(values), timescale=draw(lengths))
    if kind == "power":
        return ss.power(
            draw(values), exponent=draw(st.sampled_from([-1.0, -0.5, 0.5, 1.0])), offset=1.0
        )
    if kind == "piecewise":
        bounds = sorted(draw(st.sets(st.integers(1, 1000), min_size=1, max_size=4)))
        interpolate = draw(st.booleans())
        n = len(bounds) if interpolate else len(bounds) + 1
        return ss.piecewise(bounds, draw(st.lists(values, min_size=n, max_size=n)), interpolate)
    if kind == "step":
        return ss.step(draw(values), every=draw(lengths), rate=draw(st.floats(0.1, 0.99)))
    milestones = sorted(draw(st.sets(st.integers(1, 1000), min_size=1, max_size=4)))
    return ss.multistep(draw(values), milestones=milestones, rate=draw(st.floats(0.1, 0.99)))


def _build(factory: Any, *args: Any, **kwargs: Any) -> ss.Schedule:
    try:
        return factory(*args, **kwargs)
    except ValueError:
        assume(False)
        raise  # unreachable


@st.composite
def wrapped(draw: Any, children: Any) -> ss.Schedule:
    kind = draw(
        st.sampled_from(
            ["warmup", "sequence", "scale", "minimum", "clamp", "repeat", "epochs", "samples"]
        )
    )
    child = draw(children)
    if kind == "warmup":
        return _build(
            ss.warmup,
            child,
            steps=draw(st.integers(0, 200)),
            start=draw(st.sampled_from([0.0, 1e-6, 0.01])),
            shape=draw(st.sampled_from(["linear", "cosine", "exponential"])),
            overlay=draw(st.booleans()),
        )
    if kind == "sequence":
        head = draw(st.lists(finite_primitives(), min_size=1, max_size=3))
        return ss.sequence([*head, child])
    if kind == "scale":
        return child * draw(st.floats(0.01, 100.0))
    if kind == "minimum":
        return ss.minimum([child, draw(children)])
    if kind == "clamp":
        lower = draw(st.none() | values)
        upper = draw(st.none() | values)
        assume(lower is not None or upper is not None)
        return _build(ss.clamp, child, lower=lower, upper=upper)
    if kind == "repeat":
        assume(child.length is not None)
        return ss.repeat(
            child,
            times=draw(st.none() | st.integers(1, 5)),
            decay=draw(st.floats(0.3, 1.0)),
            stretch=draw(st.sampled_from([1.0, 1.5, 2.0])),
        )
    if kind == "epochs":
        return ss.from_epochs(
            child, steps_per_epoch=draw(st.integers(1, 20)), discrete=draw(st.booleans())
        )
    return ss.from_samples(child, batch_size=draw(st.integers(1, 8)))


schedules = st.recursive(
    finite_primitives() | open_primitives(), lambda children: wrapped(children), max_leaves=6
)
presets = st.one_of(
    st.builds(ss.presets.bert, values, st.integers(10, 1000), st.integers(0, 10)),
    st.builds(ss.presets.noam, values, st.integers(1, 1000)),
    st.builds(
        ss.presets.wsd, values, st.integers(0, 100), st.integers(1, 100), st.integers(1, 100)
    ),
    st.builds(ss.presets.one_cycle, values, st.integers(10, 1000)),
    st.builds(ss.presets.sgdr, values, st.just(0.0), st.integers(1, 100)),
)
any_schedule = schedules | presets
steps = st.integers(0, 5_000)
