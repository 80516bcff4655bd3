"""PyTorch adapters: scheduler, in-place clipping, adaptive clippers, contiguous gradients.

``import steadystep.torch`` imports PyTorch; install it with ``pip install steadystep[torch]``.
Names are loaded lazily from their modules so that one missing piece never hides the others.
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a torch-free environment
    raise ImportError(
        "steadystep.torch needs PyTorch. Install it with: pip install 'steadystep[torch]'"
    ) from exc

# public name -> module (relative to this package) that defines it
_EXPORTS: dict[str, str] = {
    # scheduler (issue 3)
    "Scheduler": "._scheduler",
    "layerwise_lr_decay_groups": "._param_groups",
    # clipping (issue 4)
    "clip_grad_norm_": "._clip",
    "clip_grad_value_": "._clip",
    "ClipResult": "._clip",
    "contiguous_grads": "._contiguous",
    "GradBuffer": "._contiguous",
    "AGC": "._adaptive",
    "AutoClip": "._adaptive",
    "ZClip": "._adaptive",
    "SpikeSkip": "._adaptive",
    # read-only norms and logging (issue 15)
    "grad_norm": "._norms",
    "grad_norms": "._norms",
    "Telemetry": "._telemetry",
    # LR range test (issue 7)
    "find_lr": "._find_lr",
    "LRFinderResult": "._find_lr",
    # checkpointing (issue 9)
    "save_checkpoint": "._checkpoint",
    "load_checkpoint": "._checkpoint",
    # reduce on plateau, loss-aware skipping (issue 14)
    "PlateauScheduler": "._plateau_scheduler",
    "LossSpikeSkip": "._loss_skip",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'steadystep.torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
