"""Framework-free gradient clipping maths.

Global-norm, per-tensor-norm and value clipping with TensorFlow's semantics, and
the pure rules of the adaptive clippers (AGC, AutoClip, ZClip, spike detection).
Everything works on NumPy, PyTorch and JAX arrays through the Array API and
imports no framework; the in-place PyTorch versions live in ``steadystep.torch``
and the optax transforms in ``steadystep.jax``.
"""

from ._norm import clip_by_global_norm as clip_by_global_norm
from ._norm import clip_by_norm as clip_by_norm
from ._norm import clip_by_value as clip_by_value
from ._norm import global_norm as global_norm
from ._rules import NormHistory as NormHistory
from ._rules import ZClipState as ZClipState
from ._rules import adaptive_grad_clip as adaptive_grad_clip
from ._rules import agc_scale as agc_scale
from ._rules import autoclip_init as autoclip_init
from ._rules import autoclip_step as autoclip_step
from ._rules import history_init as history_init
from ._rules import history_mean_std as history_mean_std
from ._rules import history_percentile as history_percentile
from ._rules import history_push as history_push
from ._rules import spike_init as spike_init
from ._rules import spike_min_history as spike_min_history
from ._rules import spike_step as spike_step
from ._rules import unitwise_norm as unitwise_norm
from ._rules import zclip_init as zclip_init
from ._rules import zclip_step as zclip_step
from ._skip import SkipState as SkipState
from ._skip import skip_init as skip_init
from ._skip import skip_step as skip_step

__all__ = [
    "NormHistory",
    "SkipState",
    "ZClipState",
    "adaptive_grad_clip",
    "agc_scale",
    "autoclip_init",
    "autoclip_step",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "global_norm",
    "history_init",
    "history_mean_std",
    "history_percentile",
    "history_push",
    "skip_init",
    "skip_step",
    "spike_init",
    "spike_min_history",
    "spike_step",
    "unitwise_norm",
    "zclip_init",
    "zclip_step",
]
