"""Norms and clipping of lists of arrays, written once against the Array API.

The formulas follow TensorFlow's documented semantics (``tf.clip_by_global_norm``,
``tf.clip_by_norm``, ``tf.clip_by_value``), as quoted in the seed write-up
``shared/seeds/000_085189bd981e40c7.txt``::

    global_norm = sqrt(sum(l2norm(t) ** 2 for t in tensors))
    t_i <- t_i * clip_norm / max(global_norm, clip_norm)

The behaviour was checked against TensorFlow's docstrings and optax's
``optax/transforms/_clipping.py`` (read, not copied). Every function takes NumPy,
PyTorch or JAX arrays (anything ``array_api_compat.array_namespace`` knows) and
imports no framework itself; JAX arrays may be traced under ``jax.jit`` because
no branch depends on array values.

References:
    Pascanu, Mikolov, Bengio (2013). On the difficulty of training recurrent
    neural networks. ICML. https://arxiv.org/abs/1211.5063
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .. import _check as check

__all__ = ["clip_by_global_norm", "clip_by_norm", "clip_by_value", "global_norm"]

Array = Any


def _namespace(*arrays: Array) -> Any:
    present = [a for a in arrays if a is not None and not check.is_python_number(a)]
    return array_namespace(*present) if present else array_namespace(np.asarray(0.0))


def _widened(xp: Any, t: Array) -> Array:
    """``|t|`` as a real array of at least 32-bit precision (bf16/fp16 sum in fp32)."""
    dtype = t.dtype
    if xp.isdtype(dtype, "complex floating"):
        t = xp.abs(t)
        dtype = t.dtype
    if not xp.isdtype(dtype, "real floating") or xp.finfo(dtype).bits < 32:
        t = xp.astype(t, xp.float32)
    return t


def _power_sum(xp: Any, t: Array, p: float) -> Array:
    """``sum(|t|**p)`` (``max(|t|)`` for ``p = inf``) as a 0-dim array."""
    t = _widened(xp, t)
    if math.isinf(p):
        if math.prod(t.shape) == 0:
            return xp.asarray(0.0, dtype=t.dtype)
        return xp.max(xp.abs(t))
    if p == 2.0:
        return xp.sum(t * t)
    if p == 1.0:
        return xp.sum(xp.abs(t))
    return xp.sum(xp.abs(t) ** p)


def _root(xp: Any, total: Array, p: float) -> Array:
    if math.isinf(p) or p == 1.0:
        return total
    if p == 2.0:
        return xp.sqrt(total)
    return total ** (1.0 / p)


# Overflow and underflow. ``sum(|t|**p)`` overflows for a finite array whose norm is above
# ~1.8e19 in float32 (p = 2; bf16 and fp32 values reach it) and underflows to 0 for tiny
# ones; with p = 1e3 nearly every norm is inf or 0. Where the plain norm is out of range it
# is recomputed scaled by the largest magnitude m, as BLAS nrm2 does:
# ``||t||_p = m * ||t / m||_p``, every ``|t / m| <= 1`` and one equal to 1. No branch
# depends on a value (``where``), so the same code runs under ``jax.jit``.


def _in_range(xp: Any, norm: Array, p: float) -> Array:
    """Where a plain p-norm is exact: finite, and not in its power sum's underflow zone."""
    info = xp.finfo(norm.dtype)
    floor = float((float(info.smallest_normal) / float(info.eps)) ** (1.0 / p))
    return (norm >= floor) & (norm < math.inf)


def _max_abs(xp: Any, t: Array) -> Array:
    if math.prod(t.shape) == 0:
        return xp.zeros((), dtype=t.dtype)
    return xp.max(xp.abs(t))


def _scaled_norm(xp: Any, wide: list[Array], p: float, plain: Array) -> Array:
    """``m * ||t / m||_p`` over the widened arrays ``wide`` (``m``: their largest magnitude),
    ``plain`` where ``m`` is 0, inf or NaN (then the plain norm is already right)."""
    dtype = plain.dtype
    m = xp.max(xp.stack([xp.astype(_max_abs(xp, t), dtype) for t in wide]))
    usable = (m > 0) & (m < math.inf)
    scale = xp.where(usable, m, xp.ones_like(m))
    sums = [xp.astype(_power_sum(xp, xp.astype(t, dtype) / scale, p), dtype) for t in wide]
    inner = _root(xp, xp.sum(xp.stack(sums)), p)
    return xp.where(usable, m * inner, plain)


def _safe(xp: Any, plain: Array, wide: list[Array], p: float) -> Array:
    """``plain`` where it is exact, else the scaled norm (p-norm of ``wide`` together)."""
    if math.isinf(p):
        return plain
    return xp.where(_in_range(xp, plain, p), plain, _scaled_norm(xp, wide, p, plain))


def global_norm(
    tensors: Sequence[Array | None],
    *,
    norm_type: float = 2.0,
    cond: Callable[[Array, Callable[[], Array], Callable[[], Array]], Array] | None = None,
) -> Array:
    """Norm of several arrays taken together, as if they were concatenated.

    ``global_norm = sqrt(sum(l2norm(t) ** 2 for t in tensors))`` for the default
    ``norm_type=2``; any ``p > 0`` and ``inf`` are accepted. ``None`` entries are
    ignored (as in TensorFlow), and an empty list has norm 0. Half-precision inputs
    (float16, bfloat16) are accumulated in float32; the result has the widest
    accumulation dtype (float32, or float64 if an input is float64).

    Args:
        tensors: NumPy, PyTorch or JAX arrays (one framework per call).
        norm_type: the p of the p-norm, ``float('inf')`` for the max-norm.
        cond: a traced conditional ``cond(pred, true_fn, false_fn)`` (``jax.lax.cond``) that
            runs the scaled second pass only where the plain norm is out of range. Without
            it both are computed and one is selected, which needs no host read anywhere.

    Returns:
        A 0-dim array of the input framework.

    Examples:
        >>> import numpy as np
        >>> float(global_norm([np.array([3.0]), np.array([[4.0]]), None]))
        5.0
        >>> float(global_norm([np.array([3.0, -7.0])], norm_type=float("inf")))
        7.0
    """
    p = check.norm_type(norm_type)
    present = [t for t in tensors if t is not None]
    xp = _namespace(*present)
    if not present:
        return xp.asarray(0.0, dtype=xp.float32)
    with np.errstate(over="ignore", under="ignore"):  # out-of-range sums are redone scaled
        plain = _plain_global_norm(xp, present, p)

        def widened() -> list[Array]:  # under `cond`, only in the branch that needs them
            return [_widened(xp, xp.asarray(t)) for t in present]

        if cond is None or math.isinf(p):
            return _safe(xp, plain, widened(), p)
        return cond(
            _in_range(xp, plain, p), lambda: plain, lambda: _scaled_norm(xp, widened(), p, plain)
        )


def _plain_global_norm(xp: Any, present: list[Array], p: float) -> Array:
    """The global norm as ``(sum of |t|**p)**(1/p)``: exact unless out of range."""
    parts = [_power_sum(xp, xp.asarray(t), p) for t in present]
    dtype = xp.result_type(*(part.dtype for part in parts))
    stacked = xp.stack([xp.astype(part, dtype) for part in parts])
    total = xp.max(stacked) if math.isinf(p) else xp.sum(stacked)
    return _root(xp, total, p)


def _check_clip_norm(clip_norm: Any) -> None:
    if check.is_python_number(clip_norm):
        check.positive("clip_norm", clip_norm)


def _scale(xp: Any, norm: Array, clip_norm: Array) -> Array:
    """``clip_norm / max(norm, clip_norm)``, NaN where the norm is not finite."""
    norm = xp.asarray(norm)
    clip = xp.asarray(clip_norm, dtype=norm.dtype)
    scale = clip / xp.maximum(norm, clip)
    return xp.where(xp.isfinite(norm), scale, xp.asarray(math.nan, dtype=norm.dtype))


def clip_by_global_norm(
    tensors: Sequence[Array | None], clip_norm: float | Array, use_norm: Array | None = None
) -> tuple[list[Array | None], Array]:
    """Scale arrays so that their global L2 norm is at most ``clip_norm`` (TensorFlow semantics).

    ``t_i <- t_i * clip_norm / max(global_norm, clip_norm)``: nothing changes when the
    norm is already within the bound. As TensorFlow documents, a non-finite global
    norm (``inf`` or ``NaN``) makes every output NaN, so an overflow is never hidden
    as a zero or silently applied update.

    Args:
        tensors: arrays (``None`` entries are passed through unchanged).
        clip_norm: the bound, a number ``> 0`` or a 0-dim array.
        use_norm: a global norm already computed (skips recomputing it).

    Returns:
        ``(clipped, global_norm)``: the scaled arrays, each in its input dtype, and
        the norm before clipping.

    Examples:
        >>> import numpy as np
        >>> clipped, norm = clip_by_global_norm([np.array([3.0]), np.array([4.0])], 1.0)
        >>> float(norm), [round(float(c[0]), 6) for c in clipped]
        (5.0, [0.6, 0.8])
        >>> clipped, _ = clip_by_global_norm([np.array([3.0])], 10.0)
        >>> float(clipped[0][0])
        3.0
    """
    _check_clip_norm(clip_norm)
    present = [t for t in tensors if t is not None]
    xp = _namespace(*present)
    norm = global_norm(present) if use_norm is None else xp.asarray(use_norm)
    scale = _scale(xp, norm, clip_norm)
    clipped: list[Array | None] = [
        None if t is None else t * xp.astype(scale, xp.asarray(t).dtype) for t in tensors
    ]
    return clipped, norm


def clip_by_norm(
    t: Array, clip_norm: float | Array, axes: int | tuple[int, ...] | None = None
) -> Array:
    """Scale one array so that its L2 norm (over ``axes``) is at most ``clip_norm``.

    ``t <- t * clip_norm / max(l2norm(t, axes), clip_norm)``, as ``tf.clip_by_norm``.
    With ``axes`` the norm is taken per slice (kept dims broadcast back). Non-finite
    norms give NaN, as in :func:`clip_by_global_norm`.

    Examples:
        >>> import numpy as np
        >>> clip_by_norm(np.array([3.0, 4.0]), 1.0).round(6).tolist()
        [0.6, 0.8]
        >>> clip_by_norm(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0, axes=1).round(6).tolist()
        [[0.6, 0.8], [0.3, 0.4]]
    """
    _check_clip_norm(clip_norm)
    xp = _namespace(t)
    t = xp.asarray(t)
    norm = l2_norm(xp, t, axes)
    return t * xp.astype(_scale(xp, norm, clip_norm), t.dtype)


def l2_norm(xp: Any, t: Array, axes: Any = None) -> Array:
    """L2 norm of ``t`` over ``axes`` (all: 0-dim; else kept dims), without over/underflow.

    Widened to at least float32; an out-of-range slice is recomputed scaled by its largest
    magnitude (see :func:`_in_range`).
    """
    keep = axes is not None
    wide = _widened(xp, t)
    with np.errstate(over="ignore", under="ignore"):
        plain = xp.sqrt(xp.sum(wide * wide, axis=axes, keepdims=keep))
        if math.prod(wide.shape) == 0:
            return plain
        m = xp.max(xp.abs(wide), axis=axes, keepdims=keep)
        usable = (m > 0) & (m < math.inf)
        scale = xp.where(usable, m, xp.ones_like(m))
        inner = wide / scale
        scaled = m * xp.sqrt(xp.sum(inner * inner, axis=axes, keepdims=keep))
        return xp.where(_in_range(xp, plain, 2.0) | ~usable, plain, scaled)


def clip_by_value(t: Array, clip_value_min: float | Array, clip_value_max: float | Array) -> Array:
    """Clamp every element into ``[clip_value_min, clip_value_max]`` (``tf.clip_by_value``).

    Examples:
        >>> import numpy as np
        >>> clip_by_value(np.array([-3.0, 0.5, 7.0]), -1.0, 1.0).tolist()
        [-1.0, 0.5, 1.0]
    """
    if check.is_python_number(clip_value_min) and check.is_python_number(clip_value_max):
        lo, hi = float(clip_value_min), float(clip_value_max)
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(
                "Arguments `clip_value_min` and `clip_value_max` must satisfy min <= max. "
                f"Received: clip_value_min={clip_value_min!r}, clip_value_max={clip_value_max!r}"
            )
    xp = _namespace(t)
    return xp.clip(xp.asarray(t), clip_value_min, clip_value_max)
