"""Keras 3 adapters: a steadystep schedule as a ``keras.optimizers.schedules.LearningRateSchedule``.

``import steadystep.keras`` imports Keras 3; install it with ``pip install 'steadystep[keras]'``
and choose a backend (``KERAS_BACKEND=jax`` or ``torch``; ``tensorflow`` where installed)
before Keras is first imported. If ``KERAS_BACKEND`` is unset, Keras is not imported yet and
TensorFlow (Keras's default backend) is not installed, this module selects ``jax`` (else
``torch``) when installed, instead of failing. ``clipping`` adds steadystep's global-norm clip,
the adaptive rules (``AGC``, ``AutoClip``, ``ZClip``, ``SpikeSkip``) and a non-finite skip to an
optimizer, ``clip_stats`` reads its norm and counts; ``docs/jax-keras.md`` maps Keras's own
``clipnorm`` / ``global_clipnorm`` to steadystep's functions.
"""

from __future__ import annotations

import importlib.util as _util
import json as _json
import os as _os
import sys as _sys


def _configured_backend() -> str:
    """The backend named in Keras's own ``keras.json`` (Keras's default: tensorflow)."""
    home = _os.environ.get("KERAS_HOME") or _os.path.join(_os.path.expanduser("~"), ".keras")
    try:
        with open(_os.path.join(home, "keras.json")) as f:
            return str(_json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _default_backend() -> None:
    if "KERAS_BACKEND" in _os.environ or "keras" in _sys.modules:
        return
    if _util.find_spec("tensorflow") is not None or _configured_backend() != "tensorflow":
        return
    for name in ("jax", "torch"):
        if _util.find_spec(name) is not None:
            _os.environ["KERAS_BACKEND"] = name
            return


_default_backend()

try:
    import keras as _keras  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without keras
    missing = getattr(exc, "name", "") or ""
    if missing.split(".")[0] in ("keras", ""):
        raise ImportError(
            "steadystep.keras needs Keras 3. Install it with: pip install 'steadystep[keras]'"
        ) from exc
    raise ImportError(
        f"Keras could not import its backend ({missing!r} is missing). Install that backend or "
        "select another one before importing Keras, e.g. KERAS_BACKEND=jax or KERAS_BACKEND=torch "
        "(pip install 'steadystep[keras,jax]')."
    ) from exc

from ._adaptive import AGC as AGC  # noqa: E402
from ._adaptive import AutoClip as AutoClip  # noqa: E402
from ._adaptive import SpikeSkip as SpikeSkip  # noqa: E402
from ._adaptive import ZClip as ZClip  # noqa: E402
from ._clip import clip_stats as clip_stats  # noqa: E402
from ._clip import clipping as clipping  # noqa: E402
from ._plateau import PlateauCallback as PlateauCallback  # noqa: E402
from ._schedule import KerasSchedule as KerasSchedule  # noqa: E402

__all__ = [
    "AGC",
    "AutoClip",
    "KerasSchedule",
    "PlateauCallback",
    "SpikeSkip",
    "ZClip",
    "clip_stats",
    "clipping",
]
