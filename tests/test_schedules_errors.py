"""Bad input: every public constructor says which argument is wrong and what it received."""

from __future__ import annotations

import re

import numpy as np
import pytest

import steadystep as ss

P = ss.presets
C = ss.constant(1.0)
FINITE = ss.linear(1.0, 0.0, 10)

CASES = [
    # (call, exception, fragment of the message)
    (lambda: ss.constant(float("nan")), ValueError, "`value` must be finite. Received: value=nan"),
    (lambda: ss.constant(1.0, steps=0), ValueError, "`steps` must be > 0. Received: steps=0"),
    (lambda: ss.constant("1"), TypeError, "`value` must be a real number. Received: value='1'"),
    (lambda: ss.linear(0, 1, steps=-5), ValueError, "`steps` must be > 0. Received: steps=-5"),
    (lambda: ss.linear(0, float("inf"), 5), ValueError, "`end` must be finite. Received: end=inf"),
    (
        lambda: ss.linear(True, 1, 5),
        TypeError,
        "`start` must be a real number. Received: start=True",
    ),
    (lambda: ss.cosine(1, 0, steps=0), ValueError, "`steps` must be > 0. Received: steps=0"),
    (lambda: ss.polynomial(0.1, 0.2, 10), ValueError, "`end` must be <= start for a decay"),
    (lambda: ss.polynomial(1, 0, 10, power=0), ValueError, "`power` must be > 0"),
    (lambda: ss.polynomial(1, 0, 10, cycle=1), TypeError, "`cycle` must be True or False"),
    (lambda: ss.one_minus_sqrt(0.1, 0.2, 10), ValueError, "`end` must be <= start"),
    (
        lambda: ss.exponential(1, rate=0, every=10),
        ValueError,
        "`rate` must be > 0. Received: rate=0",
    ),
    (
        lambda: ss.exponential(1, 0.5, every=-1),
        ValueError,
        "`every` must be > 0. Received: every=-1",
    ),
    (
        lambda: ss.exponential(1, 0.5, 1, end=2.0),
        ValueError,
        "`end` must be <= start when rate < 1",
    ),
    (lambda: ss.inverse_sqrt(1, timescale=0), ValueError, "`timescale` must be > 0"),
    (lambda: ss.power(1, -1.0), ValueError, "`offset` must be > 0 when exponent < 0"),
    (
        lambda: ss.piecewise([10, 5], [1, 2, 3]),
        ValueError,
        "`boundaries` must be strictly increasing",
    ),
    (lambda: ss.piecewise([10], [1]), ValueError, "`values` must have len(boundaries) + 1 = 2"),
    (lambda: ss.piecewise([0], [1, 2]), ValueError, "`boundaries[0]` must be > 0"),
    (lambda: ss.piecewise([], [1]), ValueError, "`boundaries` must be non-empty"),
    (lambda: ss.piecewise("10", [1, 2]), TypeError, "`boundaries` must be a list of numbers"),
    (lambda: ss.step(1, every=0, rate=0.1), ValueError, "`every` must be > 0"),
    (
        lambda: ss.multistep(1, [30, 10], 0.1),
        ValueError,
        "`milestones` must be strictly increasing",
    ),
    (lambda: ss.warmup(C, steps=-1), ValueError, "`steps` must be >= 0. Received: steps=-1"),
    (lambda: ss.warmup(C, 10, shape="cubic"), ValueError, "`shape` must be one of 'linear'"),
    (lambda: ss.warmup(C, 10, shape="exponential"), ValueError, "`start` must be > 0"),
    (lambda: ss.warmup(FINITE, 20, overlay=True), ValueError, "`steps` must be <= the schedule's"),
    (
        lambda: ss.warmup(0.1, 10),
        TypeError,
        "`schedule` must be a schedule. Received: schedule=0.1",
    ),
    (lambda: ss.untuned_warmup(C, beta2=1.0), ValueError, "`beta2` must be in [0, 1)"),
    (lambda: ss.sequence([C, FINITE]), ValueError, "`parts[0]` must have a length"),
    (lambda: ss.sequence([FINITE]), ValueError, "`parts` must be a list of at least 2 schedules"),
    (
        lambda: ss.sequence([FINITE, 3]),
        TypeError,
        "`parts[1]` must be a schedule. Received: parts[1]=3",
    ),
    (
        lambda: ss.sequence([C, C], boundaries=[5, 6]),
        ValueError,
        "`boundaries` must have len(parts)",
    ),
    (lambda: ss.sequence([C, C], boundaries=[0]), ValueError, "`boundaries[0]` must be > 0"),
    (lambda: FINITE * 0, ValueError, "`factor` must be > 0. Received: factor=0"),
    (lambda: FINITE * -2.0, ValueError, "`factor` must be > 0. Received: factor=-2.0"),
    (lambda: ss.minimum([C]), ValueError, "`parts` must be a list of at least 2 schedules"),
    (lambda: ss.clamp(C), ValueError, "clamp needs `lower`, `upper` or both"),
    (lambda: ss.clamp(C, lower=2, upper=1), ValueError, "`lower` must be <= upper (1)"),
    (lambda: ss.repeat(C), ValueError, "`schedule` must have a finite length to repeat"),
    (lambda: ss.repeat(FINITE, times=0), ValueError, "`times` must be >= 1. Received: times=0"),
    (lambda: ss.repeat(FINITE, stretch=0.5), ValueError, "`stretch` must be >= 1"),
    (lambda: ss.from_epochs(C, steps_per_epoch=0), ValueError, "`steps_per_epoch` must be > 0"),
    (lambda: ss.from_samples(C, batch_size=2.5), TypeError, "`batch_size` must be an integer"),
    (lambda: ss.from_tokens(C, tokens_per_step=0), ValueError, "`tokens_per_step` must be >= 1"),
    (lambda: P.bert(1e-4, 100, 200), ValueError, "`num_warmup_steps` must be <= num_train_steps"),
    (
        lambda: P.bert(-1e-4, 100, 10),
        ValueError,
        "`init_lr` must be > 0. Received: init_lr=-0.0001",
    ),
    (lambda: P.noam(0.01, warmup_steps=0), ValueError, "`warmup_steps` must be >= 1"),
    (lambda: P.vaswani(0, 4000), ValueError, "`d_model` must be >= 1. Received: d_model=0"),
    (
        lambda: P.wsd(1.0, 10, None, 5),
        ValueError,
        "`decay_steps` must be 0 when stable_steps is None",
    ),
    (lambda: P.wsd(1.0, 10, 10, 10, cooldown="sqrt"), ValueError, "`cooldown` must be one of"),
    (lambda: P.append_cooldown(C, at_step=0, steps=5), ValueError, "`at_step` must be >= 1"),
    (lambda: P.one_cycle(0.1, 100, pct_start=1.5), ValueError, "`pct_start` must be in (0, 1)"),
    (lambda: P.one_cycle(0.1, 100, anneal="exp"), ValueError, "`anneal` must be one of"),
    (lambda: P.one_cycle_momentum(100, 0.95, 0.85), ValueError, "`base_momentum` must be <="),
    (lambda: P.sgdr(1.0, 0.0, period=0), ValueError, "`period` must be >= 1. Received: period=0"),
]


@pytest.mark.parametrize(("call", "error", "fragment"), CASES)
def test_bad_arguments_are_named(call, error, fragment) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        call()


@pytest.mark.parametrize(
    ("step", "error", "fragment"),
    [
        (-1, ValueError, "`step` must be >= 0. Received: step=-1"),
        (2.5, ValueError, "`step` must be a whole number. Received: step=2.5"),
        (float("nan"), ValueError, "`step` must be a whole number"),
        (True, TypeError, "`step` must be a number or an array. Received: step=True"),
        ("3", TypeError, "`step` must be a number or an array"),
        (np.array([0, 1, -2]), ValueError, "`step` must be >= 0. Received: step=-2"),
        (np.array([0.5]), ValueError, "`step` must be whole numbers. Received: step=0.5"),
        (np.array([True]), TypeError, "`step` must hold integers or floats"),
    ],
)
def test_bad_steps(step, error, fragment) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        FINITE(step)


def test_negative_cpu_torch_steps_are_rejected() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="`step` must be >= 0"):
        FINITE(torch.tensor([3, -1]))
    with pytest.raises(TypeError, match="must hold integers or floats"):
        FINITE(torch.tensor([True]))


def test_huge_integers_are_not_finite_numbers() -> None:
    with pytest.raises(ValueError, match="`steps` must be finite"):
        ss.linear(0, 1, steps=10**400)


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("cosin(1, 0, steps=5)", 1, "unknown schedule 'cosin'"),
        ("cosine(1, 0, stepz=5)", 1, "cosine() has no argument 'stepz'"),
        ("cosine(1, 0)", 1, "cosine() is missing argument(s): steps"),
        ("cosine(1, 0, steps=5", 21, "expected ')', found end of spec"),
        ("cosine(1, 0, steps=5) >> 3", 23, "'>>' needs a schedule on its right"),
        ("linear(0, 1, 5) * linear(0, 1, 5)", 17, "'*' needs one schedule and one number"),
        ("__import__('os')", 1, "unknown schedule '__import__'"),
        ("linear(0, 1, 5); 1", 16, "unexpected character ';'"),
        ("linear(0, 1, steps=x)", 20, "unknown name 'x'"),
        ("linear(0, 1, steps=5, steps=6)", 23, "argument 'steps' given twice"),
        ("linear(0, 1, steps=5) extra", 23, "unexpected 'extra' after a complete spec"),
        ("3", 1, "a spec must describe a schedule"),
    ],
)
def test_spec_errors_point_at_the_bad_token(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ss.SpecError) as info:
        ss.parse(text)
    assert info.value.position == column - 1
    assert fragment in info.value.message
    assert isinstance(info.value, ValueError)
    assert f"column {column}" in str(info.value) and "^" in str(info.value)


@pytest.mark.parametrize(
    ("data", "error", "fragment"),
    [
        ({"type": "cosin"}, ValueError, "spec['type'] must be one of"),
        ({"start": 1}, ValueError, "spec['type'] must be one of"),
        ({"type": "linear", "start": 0, "end": 1}, TypeError, "missing argument(s): steps"),
        (
            {"type": "linear", "start": 0, "end": 1, "steps": 5, "x": 1},
            TypeError,
            "no argument 'x'",
        ),
        ({"type": "linear", "start": 0, "end": 1, "steps": -5}, ValueError, "`steps` must be > 0"),
        ({"type": "scale", "schedule": {"type": "nope"}, "factor": 2}, ValueError, "['schedule']"),
        (
            {"type": "linear", "start": object(), "end": 1, "steps": 5},
            TypeError,
            "must be a number",
        ),
        (["linear"], TypeError, "Argument `spec` must be spec text or a dict"),
    ],
)
def test_dict_errors_name_the_path(data, error, fragment) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        ss.parse(data)


def test_parser_never_evaluates_code(tmp_path) -> None:
    marker = tmp_path / "pwned"
    for text in [
        f"__import__('pathlib').Path('{marker}').touch()",
        f"linear(0, 1, steps=open('{marker}', 'w'))",
        "linear(0, 1, steps=(lambda: 5)())",
    ]:
        with pytest.raises(ValueError):
            ss.parse(text)
    assert not marker.exists()
