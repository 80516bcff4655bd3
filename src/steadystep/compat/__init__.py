"""Other libraries' schedules, exactly, under their own names and argument names.

Each submodule builds ordinary steadystep schedules and imports nothing from the library it
mirrors, so ``steadystep.compat.timm`` works without timm installed. Submodules load on first
use::

    import steadystep as ss
    s = ss.compat.transformers.get_scheduler("cosine", num_warmup_steps=100,
                                             num_training_steps=1000)

Step convention (as everywhere in steadystep): ``s(t)`` is the value used by the update that
has ``t`` updates before it. ``docs/compat.md`` lists, per library, how its own counter maps to
``t`` and the subtle differences between libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = (
    "bert",
    "deepspeed",
    "fairseq",
    "keras",
    "optax",
    "pytorch_warmup",
    "tf",
    "timm",
    "torch",
    "transformers",
)

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'steadystep.compat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
