"""steadystep: learning-rate warmup, decay, composition and gradient clipping, exact and fast.

``import steadystep`` needs only NumPy. Framework adapters load on first use:
``steadystep.torch``, ``steadystep.jax``, ``steadystep.keras``; the framework-free clipping maths
is ``steadystep.clip`` and other libraries' schedules are ``steadystep.compat``.

>>> import steadystep as ss
>>> s = ss.warmup(ss.cosine(1e-3, 1e-5, steps=9_000), steps=1_000)
>>> s(0), s(1_000), s(10_000)
(0.0, 0.001, 1e-05)
"""

from __future__ import annotations

import importlib
from typing import Any

from .schedules import *  # noqa: F403  (the schedule layer is the core namespace)
from .schedules import __all__ as _schedule_names

__version__ = "0.1.0"

_SUBMODULES = ("clip", "compat", "torch", "jax", "keras", "cli", "experiments")

__all__ = [*_schedule_names, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'steadystep' has no attribute {name!r}")
