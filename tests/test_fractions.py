"""Lengths written as fractions of the run: resolution, round trips, presets, errors."""

from __future__ import annotations

import json

import pytest

import steadystep as ss
from steadystep.cli import main

F = ss.fraction


def test_fraction_of_run_and_of_rest() -> None:
    s = ss.warmup(ss.cosine(1.0, 0.0, steps=F(1.0, of="rest")), steps=F(0.06))
    plain = s.resolve(10_000)
    assert plain == ss.warmup(ss.cosine(1.0, 0.0, steps=9_400), steps=600)
    assert plain.length == 10_000
    assert ss.parse(repr(s), total_steps=10_000) == plain


@pytest.mark.parametrize("total", [7, 99, 100, 101, 12_345])
def test_parts_sharing_the_rest_never_outgrow_the_run(total: int) -> None:
    s = (
        ss.linear(0.0, 1.0, steps=F(0.1))
        >> ss.constant(1.0, steps=F(0.5, of="rest"))
        >> ss.cosine(1.0, 0.0, steps=F(0.5, of="rest"))
    )
    r = s.resolve(total)
    assert r.parts[0].steps == int(0.1 * total + 0.5)
    assert total - 1 <= r.length <= total  # shares of the rest round down
    assert r == ss.parse(repr(s), total_steps=total)


def test_a_fraction_that_rounds_to_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"total_steps=4: Argument `steps` must be > 0"):
        ss.parse("linear(0.0, 1.0, steps=fraction(0.1)) >> constant(1.0)", total_steps=4)


def test_round_trips_keep_the_fractions() -> None:
    cases = [
        ss.warmup(ss.cosine(1e-3, 1e-5, steps=F(0.94)), steps=F(0.06)),
        ss.cosine(1.0, 0.0, steps=F(0.9)) * 0.5,
        ss.constant(0.1, steps=10) >> ss.linear(0.1, 0.0, steps=F(1.0, of="rest")),
        ss.presets.wsd(
            1e-3, warmup_steps=F(0.01), stable_steps=F(1.0, of="rest"), decay_steps=F(0.2)
        ),
        ss.presets.bert(1e-4, F(1.0), F(0.06)),
        ss.presets.one_cycle(0.1, total_steps=F(1.0)),
    ]
    for s in cases:
        assert isinstance(s, ss.Unresolved)
        assert ss.parse(repr(s)) == s
        assert ss.parse(s.to_dict()) == s
        assert ss.parse(json.dumps(s.to_dict())) == s
        assert ss.parse(repr(s), total_steps=1000) == s.resolve(1000)


def test_presets_resolve_like_their_whole_step_forms() -> None:
    total = 2_000
    assert ss.presets.bert(1e-4, F(1.0), F(0.06)).resolve(total) == ss.presets.bert(
        1e-4, total, 120
    )
    wsd = ss.presets.wsd(
        1.0, warmup_steps=F(0.05), stable_steps=F(1.0, of="rest"), decay_steps=F(0.2)
    )
    assert wsd.resolve(total) == ss.presets.wsd(1.0, 100, 1_500, 400)
    assert ss.presets.one_cycle(1.0, F(1.0)).resolve(total) == ss.presets.one_cycle(1.0, total)
    sgdr = ss.presets.sgdr(1.0, 0.0, period=F(0.25, of="rest"), warmup_steps=F(0.2))
    assert sgdr.resolve(total) == ss.presets.sgdr(1.0, 0.0, period=400, warmup_steps=400)


def test_plain_specs_pass_through() -> None:
    s = ss.cosine(1.0, 0.0, steps=10)
    assert ss.parse(repr(s), total_steps=5) == s  # a plain schedule is not changed by a total
    assert ss.parse(s, total_steps=100) is s


def test_unresolved_evaluation_names_the_missing_total() -> None:
    s = ss.parse("cosine(1.0, 0.0, steps=fraction(0.5))")
    with pytest.raises(ValueError, match=r"total_steps=N.*resolve"):
        s(3)
    with pytest.raises(ValueError, match="fractions of the run"):
        ss.parse("warmup(constant(1.0), steps=fraction(0.1))")([0, 1])


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            "linear(0.0, 1.0, steps=fraction(0.7)) >> cosine(1.0, 0.0, steps=fraction(0.5))",
            "past the run (total_steps=100)",
        ),
        (
            "warmup(cosine(1.0, 0.0, steps=fraction(1.0, of='rest')), steps=120)",
            "nothing is left for fraction",
        ),
        ("cosine(1.0, 0.0, steps=fraction(0.001))", "Argument `steps` must be > 0"),
        (
            "wsd(1.0, warmup_steps=fraction(0.5), stable_steps=fraction(0.5), decay_steps=10)",
            "past the run",
        ),
    ],
)
def test_fractions_past_the_run_are_errors(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ss.parse(spec, total_steps=100)


def test_bad_fractions() -> None:
    with pytest.raises(ValueError, match=r"Argument `value` must be in \[0, 1\].*value=1.5"):
        ss.fraction(1.5)
    with pytest.raises(ValueError, match="Argument `of` must be one of"):
        ss.fraction(0.5, of="remaining")
    with pytest.raises(ss.SpecError, match="Argument `value`"):
        ss.parse("cosine(1.0, 0.0, steps=fraction(-0.1))")
    with pytest.raises(ValueError, match=r"from_epochs.*counts epochs"):
        ss.from_epochs(ss.cosine(1.0, 0.0, steps=F(0.5)), steps_per_epoch=10)
    with pytest.raises(TypeError, match="total_steps"):
        ss.parse("cosine(1.0, 0.0, steps=fraction(0.5))", total_steps=10.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"cosine.*missing"):
        ss.cosine(1.0, steps=F(0.5))  # type: ignore[call-arg]


def test_cli_resolves_fractions_with_steps(capsys: pytest.CaptureFixture[str]) -> None:
    spec = "warmup(cosine(1.0, 0.0, steps=fraction(1.0, of='rest')), steps=fraction(0.1))"
    assert main(["show", spec, "--steps", "10000", "--at", "1000", "9999"]) == 0
    out = capsys.readouterr().out
    assert "1000  1" in out
    assert main(["plot", spec, "--steps", "100"]) == 0
    assert main(["show", spec]) == 2
    assert "--steps is needed" in capsys.readouterr().err


def test_torch_scheduler_takes_spec_text_dicts_and_a_total() -> None:
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    spec = "warmup(cosine(0.1, 0.0, steps=fraction(1.0, of='rest')), steps=fraction(0.1))"
    sched = ss.torch.Scheduler(opt, spec, total_steps=50)
    assert sched.schedules == [ss.parse(spec, total_steps=50)]
    as_dict = ss.cosine(0.1, 0.0, steps=10).to_dict()
    assert ss.torch.Scheduler(opt, as_dict).schedules == [ss.cosine(0.1, 0.0, steps=10)]
    assert ss.torch.Scheduler(opt, [repr(ss.constant(0.2))]).schedules == [ss.constant(0.2)]
    with pytest.raises(ValueError, match="Argument `total_steps` is needed"):
        ss.torch.Scheduler(opt, spec)
    with pytest.raises(ss.SpecError, match="unknown schedule 'cosin'"):
        ss.torch.Scheduler(opt, "cosin(1.0, 0.0, steps=3)")
