"""Skip an update whose loss and/or gradient norm is far above its recent history.

Framework-free (Array API: NumPy, torch on device, JAX under ``jit``), no host sync. The rule
of OLMo-core's skip-step optimizer and levanter's skip step: with ``mean`` and ``std``
(unbiased) of the previous ``window`` finite values of a signal, the signal is an *outlier*
when ``x - mean > sigma * std`` (one-sided: a loss far *below* its history is good news), tested
once ``min_history`` values were seen; a non-finite value is always an outlier. ``signal``
picks what skips the update: ``"loss"``, ``"norm"``, ``"either"`` (default) or ``"both"``
(a non-finite loss or norm skips in every mode). Every finite value is recorded, skipped or not,
as OLMo-core does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace

from .. import _check as check
from ._rules import NormHistory, _valid_count, history_init, history_mean_std, history_push

Array = Any
SIGNALS = ("loss", "norm", "either", "both")


class SkipState(NamedTuple):
    """The last ``window`` finite losses and gradient norms."""

    loss: NormHistory
    norm: NormHistory


def skip_init(window: int = 128, like: Array | None = None) -> SkipState:
    """An empty state on the framework/device of ``like``."""
    return SkipState(history_init(window, like), history_init(window, like))


def _outlier(h: NormHistory, x: Array, sigma: float, min_history: int) -> tuple[Array, Array]:
    xp = array_namespace(h.values)
    x = xp.astype(xp.asarray(x), h.values.dtype)
    mean, std = history_mean_std(h)
    finite = xp.isfinite(x)
    above = xp.where(finite, x, mean) - mean > sigma * std
    enough = _valid_count(xp, h) >= min_history
    return (enough & above) | ~finite, ~finite


def check_rule(signal: Any, sigma: Any, min_history: Any, window: int) -> tuple[str, float, int]:
    signal = check.choice("signal", signal, SIGNALS)
    sigma = check.positive("sigma", sigma)
    if min_history is None:
        min_history = max(20, window // 2)
    min_history = check.integer("min_history", min_history, minimum=2, maximum=check.INT32_MAX)
    return signal, sigma, min_history


def skip_step(
    state: SkipState,
    loss: Array | None = None,
    norm: Array | None = None,
    *,
    signal: str = "either",
    sigma: float = 6.0,
    min_history: int | None = None,
) -> tuple[SkipState, Array]:
    """Should this update be skipped? Then record ``loss`` and ``norm``.

    ``signal`` needs the values it names (``"loss"`` a loss, ``"norm"`` a norm, the others
    both). Returns the new state and a 0-dim bool.

    Examples:
        >>> import numpy as np
        >>> s = skip_init(8)
        >>> for x in [2.0, 2.1, 1.9, 2.0]:
        ...     s, skip = skip_step(s, np.float32(x), np.float32(1.0), min_history=3)
        >>> s, skip = skip_step(s, np.float32(9.0), np.float32(1.0), min_history=3)
        >>> bool(skip)                       # the loss jumped; the norm did not
        True
        >>> s, skip = skip_step(s, np.float32(0.1), np.float32(1.0), min_history=3)
        >>> bool(skip)                       # far below is no outlier
        False
    """
    size = state.loss.values.shape[0]
    signal, sigma, min_history = check_rule(signal, sigma, min_history, size)
    need_loss, need_norm = signal != "norm", signal != "loss"
    if need_loss and loss is None:
        raise ValueError(f"signal={signal!r} needs the loss. Received: loss=None")
    if need_norm and norm is None:
        raise ValueError(f"signal={signal!r} needs the gradient norm. Received: norm=None")
    xp = array_namespace(state.loss.values)
    new_loss, new_norm = state.loss, state.norm
    flags = []
    broken = xp.zeros((), dtype=xp.bool)
    if need_loss:
        out, bad = _outlier(state.loss, loss, sigma, min_history)
        flags.append(out)
        broken = broken | bad
        new_loss = history_push(state.loss, loss)
    if need_norm:
        out, bad = _outlier(state.norm, norm, sigma, min_history)
        flags.append(out)
        broken = broken | bad
        new_norm = history_push(state.norm, norm)
    if signal == "both":
        skip = (flags[0] & flags[1]) | broken
    elif signal == "either":
        skip = flags[0] | flags[1]
    else:
        skip = flags[0]
    return SkipState(new_loss, new_norm), skip
