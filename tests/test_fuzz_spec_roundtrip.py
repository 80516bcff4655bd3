"""Whatever ``ss.parse`` accepts prints back as spec text that parses to an equal schedule.

The inputs are spec text written the many ways a person (or a config generator) writes it:
every schedule name with positional and keyword arguments, nested combinators (``>>``, ``*`` on
either side, brackets, ``warmup``, ``repeat``, ``minimum``, ...), and numbers at the edges:
``-0.0``, ``--1``, ``1e308``, the largest and smallest floats, subnormals, ``2**53 + 1``, ints
of hundreds or thousands of digits, ``1_000``, ``.5``, ``5.``, ``1E+3``. Those that parse must
print as canonical text that parses to an equal schedule printing the same text (so the sign of
a zero survives too), whose dict form parses back, and whose values are the same.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import steadystep as ss
from steadystep.schedules._base import REGISTRY
from tests.test_fuzz_spec import EXAMPLES, FUZZ, count_input

EDGE_NUMBERS = [
    "0", "-0", "0.0", "-0.0", "--0.0", "---1", "1e308", "-1e308", "1.7976931348623157e308",
    "1e309", "5e-324", "2.2250738585072014e-308", "1e-320", "9007199254740993", "1" + "0" * 300,
    "9" * 4300, "1_000", "1e3", "1E+3", ".5", "5.", "1e15", "1e16", "0.1", "1e-3", "1e-12",
]  # fmt: skip
NICE = ["1", "2", "3", "10", "100", "1000", "0.5", "0.1", "0.9", "0.001", "1e-05"]
numbers = st.one_of(
    st.sampled_from(NICE),
    st.sampled_from(EDGE_NUMBERS),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
_STRINGS = ["linear", "cosine", "exponential", "triangular", "triangular2", "exp_range", "x"]
_BOOLS = {"staircase", "cycle", "interpolate", "discrete", "overlay"}
_LISTS = {"boundaries", "values", "milestones"}
_SCHEDULES = {"schedule"}
_PARTS = {"parts"}
_WORDS = {"curve", "mode", "shape"}


def _value(draw: st.DrawFn, field: str, inner: st.SearchStrategy[str]) -> str:
    if field in _SCHEDULES:
        return draw(inner)
    if field in _PARTS:
        return "[" + ", ".join(draw(st.lists(inner, min_size=1, max_size=3))) + "]"
    if field in _LISTS:
        items = draw(st.lists(numbers, min_size=1, max_size=4))
        return "[" + ",".join(items) + "]"
    if field in _BOOLS:
        return draw(st.sampled_from(["True", "False"]))
    if field in _WORDS:
        return repr(draw(st.sampled_from(_STRINGS)))
    if draw(st.integers(0, 9)) == 0:
        return "None"
    return draw(numbers)


@st.composite
def _call(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    name = draw(st.sampled_from(sorted(REGISTRY)))
    cls = REGISTRY[name]
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    n_positional = draw(st.integers(0, len(cls.positional)))
    args = [_value(draw, f, inner) for f in cls.positional[:n_positional]]
    rest = [f for f in fields if f not in cls.positional[:n_positional]]
    for field in draw(st.lists(st.sampled_from(rest), unique=True, max_size=3)) if rest else []:
        args.append(f"{field}={_value(draw, field, inner)}")
    return f"{name}({', '.join(args)})"


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        _call(inner),
        st.tuples(inner, inner).map(lambda ab: f"{ab[0]} >> {ab[1]}"),
        st.tuples(inner, numbers).map(lambda sk: f"({sk[0]}) * {sk[1]}"),
        st.tuples(numbers, inner).map(lambda ks: f"{ks[0]} * {ks[1]}"),
        inner.map(lambda s: f"({s})"),
    )


_leaves = _call(st.just("constant(1.0, 10)"))
specs = st.recursive(_leaves, _combine, max_leaves=5)


def _values(s: ss.Schedule) -> np.ndarray:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a growing or overflowing schedule may warn
        return np.asarray(s(np.array([0, 1, 7, 1000, 10**6, 10**12])), dtype=np.float64)


@settings(FUZZ, max_examples=EXAMPLES * 2, deadline=10_000)
@given(specs)
def test_whatever_parse_accepts_prints_back_exactly(text: str) -> None:
    count_input("parse(text): repr round trip")
    try:
        s = ss.parse(text)
    except (ValueError, TypeError):
        return
    count_input("parse(text): accepted")
    canonical = repr(s)
    again = ss.parse(canonical)
    assert again == s, (text, canonical)
    assert repr(again) == canonical, text  # a fixed point: -0.0 stays -0.0, 1e308 stays 1e308
    assert ss.parse(s.to_dict()) == s
    assert ss.parse(json.dumps(s.to_dict())) == s
    np.testing.assert_array_equal(_values(again), _values(s))


def test_edge_numbers_round_trip() -> None:
    for number in EDGE_NUMBERS:
        for text in (f"constant({number})", f"constant(1.0, 10) * {number}"):
            try:
                s = ss.parse(text)
            except (ValueError, TypeError):
                continue
            assert repr(ss.parse(repr(s))) == repr(s)
    assert repr(ss.parse("constant(-0.0)")) == "constant(value=-0.0)"
    assert repr(ss.parse("constant(--0.0)")) == "constant(value=0.0)"
    big = "constant(" + "9" * 4300 + ")"  # refused: not finite as a float, but cleanly
    try:
        ss.parse(big)
    except ValueError as exc:
        assert len(str(exc)) < 1000


def test_text_that_would_print_longer_than_the_limit_is_refused() -> None:
    # `1e15` prints as `1000000000000000.0` and arguments print with their names: 90 kB of
    # input would print as 216 kB, which parse could not read back
    text = "minimum([" + ",".join(["constant(1e15)"] * 6000) + "])"
    assert len(text) < 100_000
    try:
        ss.parse(text)
    except ss.SpecError as exc:
        assert "would be 216009 characters" in str(exc)
    else:
        raise AssertionError("parse accepted text it could not read back")
    parts = {"type": "minimum", "parts": [{"type": "constant", "value": 1e15}] * 6000}
    try:
        ss.parse(parts)  # dicts too: whatever parse accepts reads back
    except ss.SpecError as exc:
        assert "over the limit of 100000" in str(exc)
    else:
        raise AssertionError("parse accepted a dict it could not read back")
    ok = ss.parse("minimum([" + ",".join(["constant(1e15)"] * 2000) + "])")
    assert ss.parse(repr(ok)) == ok
