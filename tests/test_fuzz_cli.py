"""Fuzzing the command line in-process: ``steadystep.cli.main(argv)`` on generated arguments.

The commands that only read a spec (``show``, ``plot`` to the terminal) get random specs (token
soups, mutated valid specs), random option values and random argument lists. The only accepted
outcomes are exit code 0 or 2 (argparse's code for a usage error, also used for a bad spec);
never a traceback, another code, or a hang. The long-running commands (``demo``, ``find-lr``,
``bench``) and ``-o`` (it writes files) are left out.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_fuzz_spec import FUZZ, count_input, mutated, schedules, tokens

cli = pytest.importorskip("steadystep.cli")

_LONG_RUNNING = {"demo", "find-lr", "bench"}
_NUMBERS = st.sampled_from(
    ["0", "-1", "1", "7", "1e3", "10000", "1e12", "99999999999999999999", "x", ""]
)
_SPECS = st.one_of(tokens, mutated(), schedules.map(repr), st.text(max_size=40))
_OPTIONS = st.one_of(
    st.tuples(st.just("--steps"), _NUMBERS),
    st.tuples(st.sampled_from(["--width", "--height"]), _NUMBERS),
    st.tuples(st.just("--set"), st.text(max_size=12)),
    st.tuples(st.just("--set"), st.sampled_from(["steps=10", "a=b", "=", "x=1e999", "steps="])),
    st.tuples(st.sampled_from(["--label", "--title"]), st.text(max_size=12)),
    st.tuples(st.sampled_from(["--log", "--help", "--version", "-h", "--nope"])),
)


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    if draw(st.integers(0, 4)) == 0:  # anything at all
        argv = draw(st.lists(st.text(max_size=12) | st.sampled_from(["show", "plot"]), max_size=6))
    else:
        command = draw(st.sampled_from(["show", "plot"]))
        specs = draw(st.lists(_SPECS, min_size=0, max_size=2 if command == "plot" else 1))
        options = [part for option in draw(st.lists(_OPTIONS, max_size=3)) for part in option]
        argv = [command, *specs, *options]
        if draw(st.booleans()):
            argv = draw(st.permutations(argv))
    if any(a in _LONG_RUNNING or a.startswith(("-o", "--o")) for a in argv):
        return ["show", "constant(1.0)"]
    return list(argv)


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        # a growing schedule (exponential with rate > 1 and no `end`) overflows to inf with
        # NumPy's warning, as documented; any other warning is an error
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        try:
            code: Any = cli.main(argv)
        except SystemExit as exc:  # main() should return, but exiting with 2 is accepted too
            code = exc.code
    return code, err.getvalue()


# `show --steps 1e12` takes ~3 s on this machine (key points over a huge grid): slow, not a hang
@settings(FUZZ, deadline=20_000)
@given(argvs())
def test_cli_arguments(argv: list[str]) -> None:
    count_input("cli.main(argv)")
    code, err = _run(argv)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, err
    if code == 2:
        assert "error" in err.lower() or "usage" in err.lower(), err


def test_a_very_long_spec_is_a_usage_error() -> None:
    assert _run(["show", "x" * 300])[0] == 2


def test_a_too_narrow_text_plot_is_a_usage_error() -> None:
    assert _run(["plot", "constant(1.0)", "--width", "1"])[0] == 2
