"""Test-session set-up: one Keras backend; doctests see the public schedule names."""

import os

import numpy as np
import pytest

# Keras fixes its backend at first import, for the whole process: choose it once here, before any
# test module imports keras, so the result does not depend on which test a worker runs first.
# (test_keras.py checks the other backend in a subprocess.)
os.environ.setdefault("KERAS_BACKEND", "torch")

import steadystep


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, object]) -> None:
    doctest_namespace.update(
        {name: getattr(steadystep, name) for name in steadystep.schedules.__all__}
    )
    doctest_namespace.update(ss=steadystep, np=np)
