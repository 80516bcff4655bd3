"""Test-session set-up: one Keras backend; doctests see the public schedule names; ``spawn``."""

import os
import subprocess
from collections.abc import Callable, Iterator

import numpy as np
import pytest

# Keras fixes its backend at first import, for the whole process: choose it once here, before any
# test module imports keras, so the result does not depend on which test a worker runs first.
# (test_keras.py checks the other backend in a subprocess.)
os.environ.setdefault("KERAS_BACKEND", "torch")

import steadystep

# CI runs the property tests on hypothesis's fixed example sequence, so a submission's result
# does not depend on the draw; everywhere else every run draws new examples (that is where the
# fuzzers keep finding things; a found failure is kept in .hypothesis/ and replayed).
if os.environ.get("CI"):
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, object]) -> None:
    doctest_namespace.update(
        {name: getattr(steadystep, name) for name in steadystep.schedules.__all__}
    )
    doctest_namespace.update(ss=steadystep, np=np)


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``spawn(argv, **env)`` starts a subprocess with text pipes and ``env`` added to the
    environment; any still running when the test ends is killed, so that a failed assertion
    never leaves one behind (its pipes would fail a later test on a ResourceWarning)."""
    procs: list[subprocess.Popen[str]] = []

    def start(argv: list[str], **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
