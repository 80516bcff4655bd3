"""Fuzzing the spec parser: ``ss.parse(text)`` and ``ss.parse(dict)``.

Whatever the input, only ``ValueError``/``TypeError`` may escape (``SpecError`` is a
``ValueError``): never ``RecursionError``, ``OverflowError``, ``MemoryError``, a warning (pytest
turns them into errors), a hang (hypothesis' deadline) or code execution (the parser evaluates
nothing). Whatever parses must print as spec text that parses back to an equal schedule.

CI runs ``FUZZ_EXAMPLES`` inputs per target (default 150); ``benchmarks/fuzz_all.py`` runs the same
targets with 10,000 each, plus an atheris run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import steadystep as ss
from steadystep.schedules._base import REGISTRY
from steadystep.schedules._spec import BUILDERS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms; parsing a <= 2 kB spec takes well under 1 ms: this catches hangs
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: inputs fed to each target in this process (read by benchmarks/fuzz_all.py)
COUNTS: dict[str, int] = {}


def count_input(target: str) -> None:
    COUNTS[target] = COUNTS.get(target, 0) + 1


# -- valid schedules ------------------------------------------------------------------------------
def _num(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats in [lo, hi] (lo > 0) spread over the decades, and a few round integers."""
    floats = st.floats(math.log10(lo), math.log10(hi)).map(lambda e: float(f"{10**e:.6g}"))
    ints = st.integers(max(1, math.ceil(lo)), max(1, math.floor(hi))) if hi >= 1 else st.nothing()
    return floats | ints


lrs = _num(1e-12, 1e3)
lengths = _num(1, 1e12)
short = _num(1, 1e4)
rates = _num(1e-3, 0.999)
counts = st.integers(1, 10_000)


def _increasing(draw: st.DrawFn, n: int) -> list[float]:
    gaps = draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n))
    return list(np.cumsum(gaps).tolist())


@st.composite
def primitives(draw: st.DrawFn) -> ss.Schedule:
    kind = draw(st.sampled_from(sorted(REGISTRY)))
    a, b = sorted([draw(lrs), draw(lrs)], reverse=True)
    if kind == "constant":
        return ss.constant(draw(lrs), steps=draw(st.none() | lengths))
    if kind in ("linear", "cosine"):
        return REGISTRY[kind](*draw(st.permutations([a, b])), draw(lengths))
    if kind == "polynomial":
        power = draw(_num(0.1, 10))
        return ss.polynomial(a, b, draw(lengths), power=power, cycle=draw(st.booleans()))
    if kind == "one_minus_sqrt":
        return ss.one_minus_sqrt(a, b, draw(lengths))
    if kind == "exponential":
        end = draw(st.none() | st.just(b))
        return ss.exponential(a, draw(rates), draw(lengths), draw(st.booleans()), end)
    if kind == "inverse_sqrt":
        return ss.inverse_sqrt(a, draw(lengths))
    if kind == "power":
        return ss.power(a, -draw(_num(0.1, 2)), offset=draw(_num(1, 1e4)))
    if kind == "piecewise":
        interpolate = draw(st.booleans())
        n = draw(st.integers(1, 5))
        values = draw(st.lists(lrs, min_size=n + (not interpolate), max_size=n + 1))
        return ss.piecewise(_increasing(draw, n), values[: n + (not interpolate)], interpolate)
    if kind == "step":
        return ss.step(a, draw(lengths), draw(rates))
    if kind == "multistep":
        return ss.multistep(a, _increasing(draw, draw(st.integers(1, 5))), draw(rates))
    return ss.linear(a, b, draw(short))  # combinators are drawn by `schedules`


def _finite(s: ss.Schedule) -> ss.Schedule:
    if s.length is not None:
        return s
    return ss.sequence([s, ss.constant(1e-3, steps=100)], boundaries=[100])


@st.composite
def _combine(draw: st.DrawFn, inner: st.SearchStrategy[ss.Schedule]) -> ss.Schedule:
    s = draw(inner)
    kind = draw(st.integers(0, 9))
    if kind == 0:
        head = [_finite(x) for x in draw(st.lists(inner, min_size=1, max_size=3))]
        return ss.sequence([*head, s])
    if kind == 1:
        return s * draw(_num(1e-3, 1e3))
    if kind == 2:
        return ss.minimum([s, draw(inner)])
    if kind == 3:
        lo, hi = sorted([draw(lrs), draw(lrs)])
        bounds = draw(st.sampled_from([(lo, None), (None, hi), (lo, hi)]))
        return ss.clamp(s, *bounds)
    if kind == 4:
        times = draw(st.none() | st.integers(1, 50))
        return ss.repeat(_finite(s), times, draw(rates), draw(st.sampled_from([1.0, 1.5, 2])))
    if kind == 5:
        shape = draw(st.sampled_from(["linear", "cosine", "exponential"]))
        start = draw(lrs) if shape == "exponential" else draw(st.just(0.0) | lrs)
        overlay = draw(st.booleans()) and (s.length is None or s.length >= 1)
        steps = draw(short)
        if overlay and s.length is not None:
            steps = min(steps, s.length)
        assume(not (shape == "exponential" and s(0) <= 0))
        return ss.warmup(s, steps, start=start, shape=shape, overlay=overlay)
    if kind == 6:
        return ss.from_epochs(s, draw(_num(1, 1e5)), draw(st.booleans()))
    if kind == 7:
        return ss.from_samples(s, draw(counts))
    if kind == 8:
        return ss.from_tokens(s, draw(counts))
    return ss.sequence([s, draw(inner)], boundaries=[draw(lengths)])


presets = st.one_of(
    st.builds(ss.presets.bert, lrs, st.integers(10, 10**9), st.integers(0, 10)),
    st.builds(ss.presets.noam, lrs, st.integers(1, 10**6)),
    st.builds(ss.presets.vaswani, st.integers(1, 4096), st.integers(1, 10**6)),
)
schedules = st.recursive(primitives() | presets, _combine, max_leaves=6)


# -- inputs the parser must survive ---------------------------------------------------------------
_NAMES = sorted({*REGISTRY, *BUILDERS})
_FIELDS = sorted({f for cls in REGISTRY.values() for f in cls.__dataclass_fields__})
_PAYLOAD_NAMES = ["__import__", "eval", "exec", "open", "os", "lambda", "True", "None", "x"]
_NUMBERS = [
    "0",
    "1",
    "-1",
    "1e-12",
    "1e12",
    "1e308",
    "1e309",
    "-1e999",
    "1_000",
    "1__0",
    "0x10",
    "9" * 400,
    "1" * 5000,
    "1e99999999999",
    ".5",
    "5.",
    "nan",
    "inf",
    "1e",
    "00",
    "1.2.3",
]
_OPS = ["(", ")", "[", "]", ",", "=", "*", "-", ">>", ">", ".", ":", "{", "}", "'", '"', ";"]
tokens = st.lists(
    st.sampled_from(_NAMES + _FIELDS + _PAYLOAD_NAMES + _NUMBERS + _OPS)
    | st.from_regex(r"'[a-z0-9\-]{0,8}'", fullmatch=True)
    | st.sampled_from(_OPS).map(lambda op: op * 40),  # deep nesting / long chains
    max_size=60,
).flatmap(lambda ts: st.sampled_from(["", " ", "\n"]).map(lambda sep: sep.join(ts)))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """Spec text of a valid schedule with a few random edits (the near-misses users type)."""
    text = repr(draw(schedules))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        edit = draw(st.sampled_from(["delete", "insert", "replace", "repeat"]))
        piece = draw(st.sampled_from(_OPS + _NUMBERS[:8] + _NAMES[:5] + ["", " "]))
        if edit == "delete":
            text = text[:i] + text[j:]
        elif edit == "insert":
            text = text[:i] + piece + text[i:]
        elif edit == "replace":
            text = text[:i] + piece + text[j:]
        else:
            text = text[:i] + text[i:j] * draw(st.integers(2, 50)) + text[j:]
    return text


_leaf_values = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.sampled_from([10**400, -(10**4200)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10)
    | st.sampled_from(_NAMES)
)
json_values = st.recursive(
    _leaf_values,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", *_FIELDS]) | st.text(max_size=5), inner, max_size=5
        )
    ),
    max_leaves=20,
)


@st.composite
def dicts(draw: st.DrawFn) -> Any:
    """Random JSON-ish dicts, and valid ``to_dict()`` forms with one entry broken or dropped."""
    if draw(st.booleans()):
        d = draw(st.dictionaries(st.sampled_from(["type", *_FIELDS]), json_values, max_size=6))
        if draw(st.booleans()):
            d["type"] = draw(st.sampled_from(_NAMES))
        return d
    d = draw(schedules).to_dict()
    node = d
    while True:  # walk down to a random nested dict, then break one of its entries
        children = [v for v in node.values() if isinstance(v, dict)]
        children += [
            x for v in node.values() if isinstance(v, list) for x in v if isinstance(x, dict)
        ]
        if not children or draw(st.booleans()):
            break
        node = draw(st.sampled_from(children))
    key = draw(st.sampled_from(sorted(node)) | st.sampled_from(_FIELDS))
    if draw(st.integers(0, 4)) == 0:
        node.pop(key, None)
    else:
        node[key] = draw(json_values)
    return d


# -- the properties -------------------------------------------------------------------------------
def check_parse(spec: Any) -> ss.Schedule | None:
    """``parse(spec)``: a clean error, or a schedule whose spec text round-trips exactly."""
    try:
        s = ss.parse(spec)
    except (ValueError, TypeError) as exc:
        assert str(exc), "errors must say what is wrong"
        if isinstance(exc, ss.SpecError) and exc.position is not None:
            assert 0 <= exc.position <= len(spec)
        return None
    assert isinstance(s, ss.Schedule)
    text = repr(s)
    assert ss.parse(text) == s, text
    assert ss.parse(s.to_dict()) == s, text
    return s


@FUZZ
@given(st.text(max_size=200))
def test_parse_random_text(text: str) -> None:
    count_input("parse(random text)")
    check_parse(text)


@FUZZ
@given(tokens)
def test_parse_token_soup(text: str) -> None:
    count_input("parse(token soup)")
    check_parse(text)


@FUZZ
@given(mutated())
def test_parse_mutated_specs(text: str) -> None:
    count_input("parse(mutated spec)")
    check_parse(text)


@FUZZ
@given(dicts())
def test_parse_dicts(d: Any) -> None:
    count_input("parse(dict)")
    check_parse(d)
    check_parse(json.dumps(d, allow_nan=True))  # JSON text goes through the same path


@FUZZ
@given(schedules)
def test_round_trip_of_valid_schedules(s: ss.Schedule) -> None:
    count_input("parse(repr(s)) == s")
    assert check_parse(repr(s)) == s
    assert ss.parse(s.to_dict()) == s
    assert ss.parse(json.dumps(s.to_dict())) == s
    steps = np.array([0, 1, 7, 1000, 10**6, 10**12])
    np.testing.assert_array_equal(ss.parse(repr(s))(steps), s(steps))


# -- hand-picked inputs that once broke the parser or that would be dangerous ---------------------
PATHOLOGICAL = {
    "5000 minus signs": "-" * 5000 + "1",  # unary minus used to recurse once per '-'
    "5000 minus signs in a call": "constant(" + "-" * 5000 + "1)",
    "3000 scales": "constant(1)" + " * 2" * 3000,  # each '*' nests one level: repr recursed
    "3000 left factors": "2 * " * 3000 + "constant(1)",
    "10000 brackets": "(" * 10_000 + "constant(1)" + ")" * 10_000,
    "10000 open lists": "[" * 10_000,
    "2000-part sequence": "constant(1, 1)" + " >> constant(1, 1)" * 2000,  # was quadratic
    "100000 braces": "{" * 100_000,
    "5000 digits": "1" * 5000,
    "5000-digit argument": "constant(" + "9" * 5000 + ")",
    "inf literal": "constant(1e999)",
    "-inf literal": "constant(-1e999)",
    "400-digit float": "constant(" + "1" * 400 + ".0)",
    "over the length limit": "x" * 100_001,
    "peak overflows": "warmup(power(1e300, 2.0, 1e300), 5)",  # was a RuntimeWarning
    "scaled to inf": "warmup(constant(1e308) * 10.0, 5)",
}


@pytest.mark.parametrize("spec", list(PATHOLOGICAL.values()), ids=list(PATHOLOGICAL))
def test_pathological_specs_fail_cleanly(spec: str) -> None:
    check_parse(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "__import__('os').system('touch {marker}')",
        "open('{marker}', 'w')",
        "eval(\"open('{marker}', 'w')\")",
        "constant(open('{marker}', 'w'))",
        "cosine.__class__",
        "lambda: open('{marker}', 'w')",
        '{{"type": "constant", "value": "__import__(\'os\')"}}',
    ],
)
def test_specs_never_execute_code(spec: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises((ValueError, TypeError)):
        ss.parse(spec.format(marker=marker))
    assert not marker.exists()


def test_deeply_nested_and_cyclic_dicts_fail_cleanly() -> None:
    d: dict[str, Any] = {"type": "constant", "value": 1.0}
    for _ in range(5000):
        d = {"type": "scale", "schedule": d, "factor": 2.0}
    with pytest.raises(ValueError, match="nesting deeper"):
        ss.parse(d)
    cyclic: dict[str, Any] = {"type": "scale", "factor": 2.0}
    cyclic["schedule"] = cyclic
    with pytest.raises(ValueError, match="nesting deeper"):
        ss.parse(cyclic)
    items: list[Any] = []
    items.append(items)
    with pytest.raises(ValueError, match="nesting deeper"):
        ss.parse({"type": "piecewise", "boundaries": items, "values": [1.0, 2.0]})


def test_huge_integer_in_a_dict_fails_with_a_readable_message() -> None:
    with pytest.raises(ValueError, match="value") as info:
        ss.parse({"type": "constant", "value": 10**5000})
    assert len(str(info.value)) < 1000


def test_signs_and_chains_keep_their_meaning() -> None:
    assert ss.parse("constant(--1)") == ss.constant(1)
    assert ss.parse("constant(---2.5)") == ss.constant(-2.5)
    a, b, c = ss.linear(0, 1, 5), ss.cosine(1, 0, 5), ss.constant(0.1)
    assert ss.parse("linear(0, 1, 5) >> cosine(1, 0, 5) >> constant(0.1)") == a >> b >> c
    assert ss.parse("linear(0, 1, 5) >> (cosine(1, 0, 5) >> constant(0.1))") == a >> (b >> c)
    with pytest.raises(ss.SpecError, match="right") as info:
        ss.parse("constant(1, 1) >> 2 >> constant(1)")
    assert info.value.position == 15
    deepest_allowed = "constant(1)" + " * 2" * 63
    assert ss.parse(deepest_allowed) == ss.parse(repr(ss.parse(deepest_allowed)))
    with pytest.raises(ss.SpecError, match="nested deeper than 64"):
        ss.parse(deepest_allowed + " * 2")
