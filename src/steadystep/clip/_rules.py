"""Pure maths of the adaptive clipping rules: AGC, AutoClip, ZClip, spike detection.

Each stateful rule is a pair of functions ``*_init`` / ``*_step`` over a small
``NamedTuple`` state of 0/1-dim arrays (a JAX pytree as is, a set of tensors for
PyTorch). No function branches on an array value: the same code runs eagerly on
NumPy or PyTorch (on device, without a host sync) and under ``jax.jit``. The
PyTorch clippers in ``steadystep.torch`` and the optax transforms in
``steadystep.jax`` are thin adapters over these functions.

A *threshold* is the largest norm allowed this step; ``inf`` means "do not clip".
Every adapter turns it into the coefficient ``min(1, threshold / (norm + 1e-6))``.

References:
    Brock, De, Smith, Simonyan (2021). High-Performance Large-Scale Image
    Recognition Without Normalization (AGC). https://arxiv.org/abs/2102.06171
    Seetharaman, Wichern, Pardo, Le Roux (2020). AutoClip: Adaptive Gradient
    Clipping for Source Separation Networks. MLSP. https://arxiv.org/abs/2007.14469
    Kumar, Owen, Chowdhury, Güra (2025). ZClip: Adaptive Spike Mitigation for LLM
    Pre-Training. https://arxiv.org/abs/2504.02507
    Team OLMo (2024). 2 OLMo 2 Furious. https://arxiv.org/abs/2501.00656 (skipping
    steps whose gradient norm is an outlier of its recent history).

Sources read to pin down behaviour (not copied): timm ``timm/utils/agc.py``,
optax ``optax/contrib/_adaptive_grad_clip`` and ``optax/transforms/_clipping.py``,
bluorion-com/ZClip ``zclip/zclip.py``, allenai/OLMo-core
``src/olmo_core/optim/skip_step_optimizer.py``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from array_api_compat import array_namespace, device

from .. import _check as check
from ._norm import l2_norm

#: the largest norm history kept (float32 entries: 64 MiB)
HISTORY_MAX = 2**24

__all__ = [
    "NormHistory",
    "ZClipState",
    "adaptive_grad_clip",
    "agc_scale",
    "autoclip_init",
    "autoclip_step",
    "history_init",
    "history_mean_std",
    "history_percentile",
    "history_push",
    "spike_init",
    "spike_min_history",
    "spike_step",
    "unitwise_norm",
    "zclip_init",
    "zclip_step",
]

Array = Any
_TINY = 1e-6  # floor of a gradient norm in a denominator (timm and torch use 1e-6 too)


def _xp_dev(like: Array | None) -> tuple[Any, Any]:
    if like is None:
        return array_namespace(np.asarray(0.0)), None
    return array_namespace(like), device(like)


# --------------------------------------------------------------------------- AGC


def unitwise_norm(x: Array, *, output_axis: int = 0) -> Array:
    """L2 norm of each output unit of ``x``, shaped to broadcast against ``x``.

    Vectors and scalars (biases, gains) are one unit. For ``ndim >= 2`` the norm is
    over every axis except ``output_axis``: ``0`` for PyTorch's ``[out, in, ...]``
    weights, ``-1`` for Flax/Haiku ``[..., in, out]`` kernels. Half precision is
    accumulated in float32.

    Examples:
        >>> import numpy as np
        >>> unitwise_norm(np.array([[3.0, 4.0], [0.0, 1.0]])).ravel().tolist()
        [5.0, 1.0]
    """
    xp = array_namespace(x)
    if x.ndim <= 1:
        return l2_norm(xp, x)
    keep = output_axis % x.ndim
    return l2_norm(xp, x, tuple(i for i in range(x.ndim) if i != keep))


def _check_agc(clipping: float, eps: float) -> None:
    check.positive("clipping", clipping)
    check.at_least("eps", eps, 0.0)


def agc_scale(
    grad: Array,
    param: Array,
    *,
    clipping: float = 0.01,
    eps: float = 1e-3,
    output_axis: int = 0,
) -> Array:
    """Per-unit factor of adaptive gradient clipping (Brock et al. 2021, eq. 3).

    ``max_i = clipping * max(||W_i||, eps)``;
    ``factor_i = max_i / ||G_i||`` where ``||G_i|| > max_i``, else ``1``.

    Examples:
        >>> import numpy as np
        >>> w, g = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [0.001, 0.0]])
        >>> agc_scale(g, w, clipping=0.01).ravel().round(6).tolist()
        [0.01, 1.0]
    """
    _check_agc(clipping, eps)
    w_norm = unitwise_norm(param, output_axis=output_axis)
    g_norm = unitwise_norm(grad, output_axis=output_axis)
    return agc_factor(g_norm, w_norm, clipping=clipping, eps=eps)


def agc_factor(g_norm: Array, w_norm: Array, *, clipping: float, eps: float) -> Array:
    """:func:`agc_scale` from the unit norms ``||G_i||`` and ``||W_i||`` (computed elsewhere,
    e.g. summed over the shards of a distributed tensor)."""
    xp = array_namespace(g_norm, w_norm)
    max_norm = xp.maximum(w_norm, xp.asarray(eps, dtype=w_norm.dtype)) * clipping
    max_norm = xp.astype(max_norm, g_norm.dtype)
    ratio = max_norm / xp.maximum(g_norm, xp.asarray(_TINY, dtype=g_norm.dtype))
    return xp.where(g_norm > max_norm, ratio, xp.ones_like(ratio))


def adaptive_grad_clip(
    grad: Array,
    param: Array,
    *,
    clipping: float = 0.01,
    eps: float = 1e-3,
    output_axis: int = 0,
) -> Array:
    """``grad`` clipped unit-wise relative to ``param`` (AGC); see :func:`agc_scale`.

    Examples:
        >>> import numpy as np
        >>> g = adaptive_grad_clip(np.array([3.0, 4.0]), np.array([100.0, 0.0]), clipping=0.01)
        >>> g.round(6).tolist()
        [0.6, 0.8]
    """
    xp = array_namespace(grad, param)
    factor = agc_scale(grad, param, clipping=clipping, eps=eps, output_axis=output_axis)
    return grad * xp.astype(factor, grad.dtype)


# ----------------------------------------------------------------- norm history


class NormHistory(NamedTuple):
    """Ring buffer of the last ``len(values)`` finite norms.

    ``values`` is float32 of shape ``(size,)``; ``count`` (int32, 0-dim) is how many
    finite norms were pushed so far, so ``min(count, size)`` entries are valid and
    the next one is written at ``count % size``.
    """

    values: Array
    count: Array


def history_init(size: int, like: Array | None = None) -> NormHistory:
    """An empty history of ``size`` entries, on the framework/device of ``like``."""
    check.integer("size", size, minimum=1, maximum=HISTORY_MAX)
    xp, dev = _xp_dev(like)
    return NormHistory(
        xp.zeros((size,), dtype=xp.float32, device=dev),
        xp.zeros((), dtype=xp.int32, device=dev),
    )


def _slots(xp: Any, h: NormHistory) -> Array:
    return xp.arange(h.values.shape[0], dtype=xp.int32, device=device(h.values))


def _valid_count(xp: Any, h: NormHistory) -> Array:
    return xp.minimum(h.count, xp.asarray(h.values.shape[0], dtype=h.count.dtype))


def history_push(h: NormHistory, norm: Array) -> NormHistory:
    """Append ``norm`` if it is finite (non-finite norms never pollute the statistics)."""
    xp = array_namespace(h.values)
    norm = xp.astype(xp.asarray(norm), h.values.dtype)
    finite = xp.isfinite(norm)
    slot = h.count % h.values.shape[0]
    values = xp.where((_slots(xp, h) == slot) & finite, norm, h.values)
    return NormHistory(values, h.count + xp.astype(finite, h.count.dtype))


def history_percentile(h: NormHistory, q: float) -> Array:
    """``q``-th percentile (0..100, linear interpolation as ``numpy.percentile``) of the
    valid entries; ``inf`` for an empty history.

    Examples:
        >>> import numpy as np
        >>> h = history_init(4)
        >>> for x in [4.0, 1.0, 3.0, 2.0, 10.0]:
        ...     h = history_push(h, np.float32(x))
        >>> float(history_percentile(h, 50.0))  # last four: 1, 3, 2, 10
        2.5
    """
    xp = array_namespace(h.values)
    n = _valid_count(xp, h)
    pad = xp.asarray(np.finfo(np.float32).max, dtype=h.values.dtype)
    ordered = xp.sort(xp.where(_slots(xp, h) < n, h.values, pad))
    last = xp.maximum(n - 1, xp.zeros_like(n))
    pos = xp.astype(last, h.values.dtype) * (float(q) / 100.0)
    low = xp.floor(pos)
    low_i = xp.astype(low, xp.int32)
    high_i = xp.minimum(low_i + 1, last)
    a = xp.take(ordered, xp.reshape(low_i, (1,)))[0]
    b = xp.take(ordered, xp.reshape(high_i, (1,)))[0]
    value = a + (pos - low) * (b - a)
    return xp.where(n > 0, value, xp.asarray(float("inf"), dtype=value.dtype))


def history_mean_std(h: NormHistory) -> tuple[Array, Array]:
    """Mean and unbiased standard deviation of the valid entries (0 when fewer than 2)."""
    xp = array_namespace(h.values)
    n = xp.astype(_valid_count(xp, h), h.values.dtype)
    valid = xp.astype(_slots(xp, h), h.values.dtype) < n
    zero = xp.zeros_like(h.values)
    one = xp.ones_like(n)
    mean = xp.sum(xp.where(valid, h.values, zero)) / xp.maximum(n, one)
    dev = xp.where(valid, h.values - mean, zero)
    var = xp.sum(dev * dev) / xp.maximum(n - 1, one)
    return mean, xp.sqrt(var)


# ------------------------------------------------------------------- AutoClip


def autoclip_init(history_size: int = 1000, like: Array | None = None) -> NormHistory:
    """AutoClip state: a bounded history of gradient norms (Seetharaman et al. 2020)."""
    return history_init(history_size, like)


def autoclip_step(
    state: NormHistory, norm: Array, *, percentile: float = 10.0
) -> tuple[NormHistory, Array]:
    """Record ``norm``, then threshold = ``percentile``-th percentile of the history.

    As in the paper, the current norm is part of the history it is compared with;
    unlike the paper, the history is bounded (a ring buffer of ``len(state.values)``).

    Examples:
        >>> import numpy as np
        >>> s = autoclip_init(8)
        >>> for x in [1.0, 2.0, 3.0]:
        ...     s, thr = autoclip_step(s, np.float32(x), percentile=50.0)
        >>> float(thr)
        2.0
    """
    if (
        not check.is_python_number(percentile)
        or not 0.0 <= check.at_least("percentile", percentile, 0.0) <= 100
    ):
        raise ValueError(
            f"Argument `percentile` must be in [0, 100]. Received: percentile={percentile!r}"
        )
    state = history_push(state, norm)
    return state, history_percentile(state, float(percentile))


# ---------------------------------------------------------------------- ZClip


class ZClipState(NamedTuple):
    """ZClip statistics: EMA ``mean`` and ``var`` of the norm (float32), and ``count``
    (int32) of finite norms seen. During warm-up mean/var are the exact running
    mean and population variance (Welford) of the norms seen so far."""

    mean: Array
    var: Array
    count: Array


def zclip_init(like: Array | None = None) -> ZClipState:
    """Fresh ZClip statistics on the framework/device of ``like``."""
    xp, dev = _xp_dev(like)
    zero = xp.zeros((), dtype=xp.float32, device=dev)
    return ZClipState(
        zero, xp.zeros((), dtype=xp.float32, device=dev), xp.zeros((), dtype=xp.int32, device=dev)
    )


def zclip_step(
    state: ZClipState,
    norm: Array,
    *,
    alpha: float = 0.97,
    z_thresh: float = 2.5,
    warmup_steps: int = 25,
    eps: float = 1e-6,
    mode: Literal["zscore", "percentile"] = "zscore",
    clip_option: Literal["adaptive_scaling", "mean"] = "adaptive_scaling",
    clip_factor: float = 1.0,
    skip_update_on_spike: bool = False,
) -> tuple[ZClipState, Array]:
    """One ZClip step (Kumar et al. 2025): threshold for ``norm``, updated statistics.

    The first ``warmup_steps`` finite norms only build ``mean``/``var`` (threshold
    ``inf``). Afterwards, with ``std = sqrt(var)`` and ``z = (norm - mean) / (std + eps)``:

    * ``mode="zscore"``: a spike is ``z > z_thresh``; its threshold is
      ``clip_factor * (mean + z_thresh * std / (z / z_thresh))`` (``"adaptive_scaling"``,
      stronger outliers are pulled back harder) or ``mean`` (``clip_option="mean"``);
    * ``mode="percentile"``: threshold ``mean + z_thresh * std``, a spike when exceeded.

    The EMA is then fed the clipped norm ``g = min(norm, threshold)``:
    ``mean <- alpha * mean + (1 - alpha) * g``;
    ``var <- alpha * var + (1 - alpha) * (g - mean) ** 2`` (with the new mean), unless
    ``skip_update_on_spike``. Non-finite norms change nothing.

    Examples:
        >>> import numpy as np
        >>> s = zclip_init()
        >>> for x in [1.0, 1.2, 0.8, 1.0]:
        ...     s, thr = zclip_step(s, np.float32(x), warmup_steps=4)
        >>> round(float(s.mean), 6), round(float(s.var), 6), float(thr)
        (1.0, 0.02, inf)
        >>> s, thr = zclip_step(s, np.float32(5.0), warmup_steps=4)
        >>> round(float(thr), 3)  # 1 + 2.5**2 * std / z, std = sqrt(0.02), z = 4 / std
        1.031
    """
    check.positive("alpha", alpha)
    check.positive("z_thresh", z_thresh)
    check.positive("clip_factor", clip_factor)
    if not float(alpha) < 1.0:
        raise ValueError(f"Argument `alpha` must be < 1. Received: alpha={alpha!r}")
    check.integer("warmup_steps", warmup_steps, minimum=1, maximum=check.INT32_MAX)
    if mode not in ("zscore", "percentile"):
        raise ValueError(
            f"Argument `mode` must be 'zscore' or 'percentile'. Received: mode={mode!r}"
        )
    if clip_option not in ("adaptive_scaling", "mean"):
        raise ValueError(
            "Argument `clip_option` must be 'adaptive_scaling' or 'mean'. "
            f"Received: clip_option={clip_option!r}"
        )
    xp = array_namespace(state.mean)
    mean, var = state.mean, state.var
    x = xp.astype(xp.asarray(norm), mean.dtype)
    finite = xp.isfinite(x)
    x = xp.where(finite, x, mean)  # keep inf/NaN out of arithmetic that gets masked anyway
    inf = xp.asarray(float("inf"), dtype=mean.dtype)

    # warm-up: Welford's running mean and population variance
    k = xp.astype(state.count, mean.dtype)
    w_mean = mean + (x - mean) / (k + 1)
    w_var = (var * k + (x - mean) * (x - w_mean)) / (k + 1)

    # after warm-up: z-score test against the EMA statistics
    std = xp.sqrt(var)
    z = (x - mean) / (std + eps)
    if mode == "percentile":
        limit = mean + z_thresh * std
        spike = x > limit
    else:
        spike = z > z_thresh
        if clip_option == "mean":
            limit = mean
        else:
            safe_z = xp.where(spike, z, xp.ones_like(z))
            limit = clip_factor * (mean + z_thresh * std / (safe_z / z_thresh))
    g = xp.where(spike, limit, x)
    e_mean = alpha * mean + (1 - alpha) * g
    e_var = alpha * var + (1 - alpha) * (g - e_mean) ** 2
    if skip_update_on_spike:
        e_mean = xp.where(spike, mean, e_mean)
        e_var = xp.where(spike, var, e_var)

    warm = state.count < warmup_steps
    new_mean = xp.where(finite, xp.where(warm, w_mean, e_mean), mean)
    new_var = xp.where(finite, xp.where(warm, w_var, e_var), var)
    threshold = xp.where(warm | ~spike | ~finite, inf, limit)
    count = state.count + xp.astype(finite, state.count.dtype)
    return ZClipState(new_mean, new_var, count), threshold


# ------------------------------------------------------------ spike detection


def spike_init(window: int = 128, like: Array | None = None) -> NormHistory:
    """Spike-detector state: the last ``window`` finite norms."""
    return history_init(window, like)


def spike_min_history(window: int, min_history: int | None = None) -> int:
    """How many norms :func:`spike_step` needs before it tests for spikes, validated.

    Default ``min(max(20, window // 2), window)``: a window below 20 arms once full. An
    explicit value must be in ``[2, window]`` (a history of ``window`` norms never holds
    more, so a larger value would never test anything).

    Examples:
        >>> spike_min_history(128), spike_min_history(8), spike_min_history(8, 3)
        (64, 8, 3)
    """
    window = check.integer("window", window, minimum=2, maximum=HISTORY_MAX)
    if min_history is None:
        return min(max(20, window // 2), window)
    min_history = check.integer("min_history", min_history, minimum=2, maximum=check.INT32_MAX)
    if min_history > window:
        raise ValueError(
            "Argument `min_history` must be <= window: the history holds the last `window` "
            "norms, so spikes would never be tested. "
            f"Received: min_history={min_history}, window={window}"
        )
    return min_history


def spike_step(
    state: NormHistory, norm: Array, *, sigma: float = 6.0, min_history: int | None = None
) -> tuple[NormHistory, Array]:
    """Is ``norm`` a spike? Then record it.

    As OLMo-core's skip-step optimizer: a spike is ``|norm - mean| > sigma * std``
    over the previous norms of the window (unbiased std), tested only once at least
    ``min_history`` norms were seen (see :func:`spike_min_history`: default
    ``min(max(20, window // 2), window)``). A constant history (``std = 0``) flags any
    different norm; a non-finite norm is always a spike.

    Examples:
        >>> import numpy as np
        >>> s = spike_init(8)
        >>> for x in [1.0, 1.1, 0.9, 1.0]:
        ...     s, spike = spike_step(s, np.float32(x), min_history=3)
        >>> bool(spike)
        False
        >>> s, spike = spike_step(s, np.float32(50.0), min_history=3)
        >>> bool(spike)
        True
    """
    check.positive("sigma", sigma)
    min_history = spike_min_history(state.values.shape[0], min_history)
    xp = array_namespace(state.values)
    x = xp.astype(xp.asarray(norm), state.values.dtype)
    mean, std = history_mean_std(state)
    finite = xp.isfinite(x)
    dev = xp.abs(xp.where(finite, x, mean) - mean)
    enough = _valid_count(xp, state) >= min_history
    spike = (enough & (dev > sigma * std)) | ~finite
    return history_push(state, x), spike
