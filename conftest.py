"""Doctests see the public schedule names, as a user who ran ``from steadystep import *`` would."""

import numpy as np
import pytest

import steadystep


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, object]) -> None:
    doctest_namespace.update(
        {name: getattr(steadystep, name) for name in steadystep.schedules.__all__}
    )
    doctest_namespace.update(ss=steadystep, np=np)
