"""JAX/optax adapters: exact schedules past 2**31 steps, LR logging, clipping transforms.

A steadystep schedule is already an optax schedule: pass it as ``learning_rate=`` to any optax
optimizer (it is traceable under ``jax.jit`` and takes optax's int32 ``count``). This package adds:

* :func:`evaluate` / :func:`as_optax`: evaluation from the *exact* integer step, so float32
  results stay right past 2**24 steps, where a float32 step stops being exact;
* :class:`StepCount`, :func:`step_count`: a two-word int32 counter that does not overflow or
  saturate at 2**31 (optax's ``count`` saturates there);
* :func:`stateful` (for ``optax.inject_hyperparams``) and :func:`scale_by_learning_rate`, and
  :func:`get_learning_rate` to read the LR the last update used from an optimizer state;
* clipping as ``optax.GradientTransformation``: :func:`clip_by_global_norm`,
  :func:`adaptive_grad_clip`, :func:`autoclip`, :func:`zclip`, and :func:`spike_skip`;
* :func:`reduce_on_plateau`: ``optax.contrib.reduce_on_plateau``'s rule with checked arguments.

``import steadystep.jax`` imports JAX and optax; install them with
``pip install 'steadystep[jax]'``.
"""

from __future__ import annotations

try:
    import jax as _jax  # noqa: F401
    import optax as _optax  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without jax
    raise ImportError(
        "steadystep.jax needs JAX and optax. Install them with: pip install 'steadystep[jax]'"
    ) from exc

from ._clip import ClipNormState as ClipNormState
from ._clip import SpikeSkipState as SpikeSkipState
from ._clip import adaptive_grad_clip as adaptive_grad_clip
from ._clip import autoclip as autoclip
from ._clip import clip_by_global_norm as clip_by_global_norm
from ._clip import last_norm as last_norm
from ._clip import spike_skip as spike_skip
from ._clip import zclip as zclip
from ._loss_skip import LossSpikeSkipState as LossSpikeSkipState
from ._loss_skip import loss_spike_skip as loss_spike_skip
from ._optax import ScheduleState as ScheduleState
from ._optax import as_optax as as_optax
from ._optax import get_learning_rate as get_learning_rate
from ._optax import scale_by_learning_rate as scale_by_learning_rate
from ._optax import stateful as stateful
from ._plateau import ReduceOnPlateauState as ReduceOnPlateauState
from ._plateau import reduce_on_plateau as reduce_on_plateau
from ._step import StepCount as StepCount
from ._step import evaluate as evaluate
from ._step import step_count as step_count

__all__ = [
    "ClipNormState",
    "LossSpikeSkipState",
    "ReduceOnPlateauState",
    "ScheduleState",
    "SpikeSkipState",
    "StepCount",
    "adaptive_grad_clip",
    "as_optax",
    "autoclip",
    "clip_by_global_norm",
    "evaluate",
    "get_learning_rate",
    "last_norm",
    "loss_spike_skip",
    "reduce_on_plateau",
    "scale_by_learning_rate",
    "spike_skip",
    "stateful",
    "step_count",
    "zclip",
]
