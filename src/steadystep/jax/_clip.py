"""Gradient clipping as optax ``GradientTransformation``s: pytree state, ``optax.chain``, ``jit``.

Thin adapters over the framework-free rules of :mod:`steadystep.clip` (the same functions the
PyTorch clippers use), so the numbers match ``steadystep.torch`` on the same gradients.

Non-finite norms, under ``jit``: raising is impossible without a host sync, so the choice is
between ``"propagate"`` (TensorFlow/torch semantics: the updates become NaN, nothing is hidden)
and ``"skip"`` (zero updates). A zero update placed *before* a stateful optimizer in a chain
still reaches it (Adam's moments decay by one step); to leave the whole optimizer untouched,
wrap it instead: :func:`spike_skip` (spikes and non-finite norms) or ``optax.apply_if_finite``.

References:
    Pascanu, Mikolov, Bengio (2013), https://arxiv.org/abs/1211.5063 (global-norm clipping);
    Brock et al. (2021), https://arxiv.org/abs/2102.06171 (AGC);
    Seetharaman et al. (2020), https://arxiv.org/abs/2007.14469 (AutoClip);
    Kumar et al. (2025), https://arxiv.org/abs/2504.02507 (ZClip);
    Team OLMo (2024), https://arxiv.org/abs/2501.00656 (skipping spike steps).
    optax ``optax/transforms/_clipping.py`` and ``optax/transforms/_conditionality.py``
    (``apply_if_finite``) were read for their conventions, not copied.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from steadystep import _check as check
from steadystep import clip as rules

__all__ = [
    "ClipNormState",
    "SpikeSkipState",
    "adaptive_grad_clip",
    "agc_by_axes",
    "autoclip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "last_norm",
    "spike_skip",
    "unitwise_norm",
    "zclip",
]

Array = Any
_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_ and steadystep.torch


def _norm(updates: Any) -> Array:
    """Global L2 norm; out of float32 range (a finite norm above ~1.8e19, or tiny), it is
    recomputed scaled by the largest magnitude, a second pass that ``lax.cond`` runs only
    when needed."""
    leaves = [jnp.asarray(leaf) for leaf in jax.tree.leaves(updates)]
    return rules.global_norm(leaves, cond=jax.lax.cond)


def _scaled(updates: Any, factor: Array) -> Any:
    return jax.tree.map(lambda u: u * factor.astype(u.dtype), updates)


def _coefficient(threshold: Array, norm: Array) -> Array:
    """``min(1, threshold / (norm + 1e-6))``: the adaptive clippers' (and torch's) coefficient.

    An ``inf`` threshold enforces nothing: 1 even for an inf or NaN norm (``inf / inf``
    would be NaN and turn every finite update into NaN), as ``steadystep.torch``."""
    return jnp.where(threshold == jnp.inf, 1.0, jnp.minimum(threshold / (norm + _EPS), 1.0))


def _check_nonfinite(nonfinite: Any) -> str:
    if nonfinite == "raise":
        raise ValueError(
            "Argument `nonfinite` cannot be 'raise' in steadystep.jax: under jax.jit the norm "
            "is not known on the host, so nothing can be raised without a sync. Use 'skip' "
            "(zero update; wrap the optimizer with steadystep.jax.spike_skip to also keep its "
            "state) or 'propagate' (NaN updates). Received: nonfinite='raise'"
        )
    if nonfinite not in ("propagate", "skip"):
        raise ValueError(
            f"Argument `nonfinite` must be 'propagate' or 'skip'. Received: nonfinite={nonfinite!r}"
        )
    return str(nonfinite)


def clip_by_global_norm(
    max_norm: float, *, nonfinite: Literal["propagate", "skip"] = "propagate"
) -> optax.GradientTransformation:
    """Scale updates so their global L2 norm is at most ``max_norm`` (TensorFlow semantics).

    ``u_i <- u_i * max_norm / max(global_norm, max_norm)``, the formula of
    ``tf.clip_by_global_norm`` (seed write-up ``000``) and ``optax.clip_by_global_norm``;
    ``steadystep.torch.clip_grad_norm_`` uses torch's ``min(1, max_norm / (norm + 1e-6))``,
    which differs by at most ``1e-6 / norm`` relative. Half-precision updates are normed in
    float32. A non-finite norm gives NaN updates (``"propagate"``) or zero updates
    (``"skip"``; see the module docstring for a full skip). Stateless.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = clip_by_global_norm(1.0)
        >>> updates, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))
        >>> [round(float(updates[k][0]), 6) for k in "ab"]
        [0.6, 0.8]
    """
    check.positive("max_norm", max_norm)
    policy = _check_nonfinite(nonfinite)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        leaves, tree = jax.tree.flatten(updates)
        clipped: list[Any]
        clipped, norm = rules.clip_by_global_norm(leaves, max_norm, use_norm=_norm(leaves))
        if policy == "skip":
            ok = jnp.isfinite(norm)
            clipped = [jnp.where(ok, c, jnp.zeros_like(c)) for c in clipped]
        return jax.tree.unflatten(tree, clipped), ClipNormState(jnp.asarray(norm, jnp.float32))

    return optax.GradientTransformation(lambda params: ClipNormState(jnp.zeros(())), update_fn)


class ClipNormState(NamedTuple):
    """State of :func:`clip_by_global_norm`: the pre-clip global norm of the last update
    (float32, 0-dim; 0 before the first). Read it with :func:`last_norm`."""

    norm: Array


def last_norm(state: Any) -> Array | None:
    """The pre-clip norm of the last update, found in an optimizer state (``optax.chain`` too).

    Read from :func:`clip_by_global_norm`'s state, else from the norm history of
    :func:`autoclip` or :func:`spike_skip` (their last *finite* norm); ``None`` if the state
    has neither (:func:`zclip` keeps only running statistics). Nothing is synced: the result
    is a device array.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> tx = optax.chain(clip_by_global_norm(1.0), optax.sgd(0.1))
        >>> state = tx.init(jnp.zeros(2))
        >>> _, state = tx.update(jnp.array([3.0, 4.0]), state)
        >>> float(last_norm(state))
        5.0
    """
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, ClipNormState):
            found.append(node.norm)
        elif isinstance(node, rules.NormHistory):
            size = node.values.shape[0]
            found.append(node.values[(jnp.maximum(node.count, 1) - 1) % size])
        elif isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(state)
    return found[0] if found else None


def adaptive_grad_clip(
    clipping: float = 0.01, eps: float = 1e-3, *, output_axis: int = -1
) -> optax.GradientTransformation:
    """Adaptive gradient clipping (AGC, Brock et al. 2021): unit-wise ``||G_i|| <= c ||W_i||``.

    ``factor_i = clipping * max(||W_i||, eps) / ||G_i||`` where that is < 1, else 1; see
    :func:`steadystep.clip.agc_scale`. ``output_axis`` is the weight's output-unit axis: ``-1``
    for Flax/Haiku kernels (``[..., in, out]``), ``0`` for PyTorch's ``[out, in, ...]`` layout.
    Needs ``params`` in ``update``. Stateless.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = adaptive_grad_clip(0.01)
        >>> g, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(None), jnp.array([100.0, 0.0]))
        >>> [round(float(x), 6) for x in g]
        [0.6, 0.8]
    """
    check.positive("clipping", clipping)
    rules.agc_scale(jnp.ones(1), jnp.ones(1), clipping=clipping, eps=eps)  # validates eps
    if isinstance(output_axis, bool) or not isinstance(output_axis, int):
        raise TypeError(
            f"Argument `output_axis` must be an int. Received: output_axis={output_axis!r}"
        )

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError(
                "adaptive_grad_clip needs the parameters: call update(updates, state, params). "
                "Received: params=None"
            )
        clipped = jax.tree.map(
            lambda g, p: rules.adaptive_grad_clip(
                g, p, clipping=clipping, eps=eps, output_axis=output_axis
            ),
            updates,
            params,
        )
        return clipped, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def autoclip(percentile: float = 10.0, history: int = 1000) -> optax.GradientTransformation:
    """AutoClip (Seetharaman et al. 2020): clip to a percentile of the recent gradient norms.

    Each update records its finite global norm in a ring buffer of ``history`` (the state,
    :class:`steadystep.clip.NormHistory`) and clips to ``threshold = percentile``-th
    percentile of the history (the current norm included) with the coefficient
    ``min(1, threshold / (norm + 1e-6))``. See :func:`steadystep.clip.autoclip_step`.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = autoclip(percentile=50.0, history=8)
        >>> state = tx.init(None)
        >>> for norm in [1.0, 3.0, 2.0]:
        ...     g, state = tx.update(jnp.array([norm]), state)
        >>> round(float(g[0]), 5)  # median of 1, 3, 2
        2.0
    """
    rules.history_init(history)  # validate now, not at init: history, then percentile
    rules.autoclip_step(rules.autoclip_init(1), jnp.float32(1.0), percentile=percentile)

    def init_fn(params: Any) -> rules.NormHistory:
        del params
        return rules.autoclip_init(history, jnp.zeros(()))

    def update_fn(
        updates: Any, state: rules.NormHistory, params: Any = None
    ) -> tuple[Any, rules.NormHistory]:
        del params
        norm = _norm(updates)
        state, threshold = rules.autoclip_step(state, norm, percentile=percentile)
        return _scaled(updates, _coefficient(threshold, norm)), state

    return optax.GradientTransformation(init_fn, update_fn)


def zclip(
    alpha: float = 0.97,
    z_thresh: float = 2.5,
    warmup_steps: int = 25,
    *,
    mode: Literal["zscore", "percentile"] = "zscore",
    clip_option: Literal["adaptive_scaling", "mean"] = "adaptive_scaling",
    clip_factor: float = 1.0,
    skip_update_on_spike: bool = False,
) -> optax.GradientTransformation:
    """ZClip (Kumar et al. 2025): clip norms that are z-score outliers of their EMA statistics.

    The state is :class:`steadystep.clip.ZClipState` (EMA mean, variance, count); the threshold
    rule is :func:`steadystep.clip.zclip_step` and the coefficient
    ``min(1, threshold / (norm + 1e-6))``. The first ``warmup_steps`` updates only gather
    statistics.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = zclip(warmup_steps=4)
        >>> state = tx.init(None)
        >>> for norm in [1.0, 1.2, 0.8, 1.0, 5.0]:
        ...     g, state = tx.update(jnp.array([norm]), state)
        >>> round(float(g[0]), 3)  # the spike is pulled back to mean + 2.5**2 * std / z
        1.031
    """
    options: dict[str, Any] = dict(
        alpha=alpha,
        z_thresh=z_thresh,
        warmup_steps=warmup_steps,
        mode=mode,
        clip_option=clip_option,
        clip_factor=clip_factor,
        skip_update_on_spike=skip_update_on_spike,
    )
    rules.zclip_step(rules.zclip_init(), jnp.float32(1.0), **options)  # validates now

    def init_fn(params: Any) -> rules.ZClipState:
        del params
        return rules.zclip_init(jnp.zeros(()))

    def update_fn(
        updates: Any, state: rules.ZClipState, params: Any = None
    ) -> tuple[Any, rules.ZClipState]:
        del params
        norm = _norm(updates)
        state, threshold = rules.zclip_step(state, norm, **options)
        return _scaled(updates, _coefficient(threshold, norm)), state

    return optax.GradientTransformation(init_fn, update_fn)


class SpikeSkipState(NamedTuple):
    """State of :func:`spike_skip`: the wrapped optimizer's state, the norm history, and
    ``skipped`` (int32): how many updates were skipped so far."""

    inner_state: Any
    history: rules.NormHistory
    skipped: Array


def check_inner(inner: Any) -> None:
    """The transformation a skipping wrapper guards must be an optax one."""
    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(
            "Argument `inner` must be an optax.GradientTransformation (e.g. optax.adam(1e-3)). "
            f"Received: inner={inner!r}"
        )


def spike_skip(
    inner: optax.GradientTransformation,
    *,
    window: int = 128,
    sigma: float = 6.0,
    min_history: int | None = None,
) -> optax.GradientTransformation:
    """Wrap an optimizer so that updates whose gradient norm is a spike are skipped entirely.

    A spike (OLMo-core's rule, :func:`steadystep.clip.spike_step`) is a global norm more than
    ``sigma`` standard deviations from the mean of the last ``window`` norms, once
    ``min_history`` (default ``min(max(20, window // 2), window)``, at most ``window``) were
    seen; a non-finite norm always is one. A skipped update is all zeros and leaves
    ``inner``'s state exactly as it was, so Adam's moments and counts are untouched. The norm
    still enters the history (if finite).

    Examples:
        >>> import optax, jax.numpy as jnp
        >>> opt = spike_skip(optax.sgd(0.1), window=8, min_history=3)
        >>> state = opt.init(jnp.zeros(1))
        >>> for g in [1.0, 1.1, 0.9, 1.0, 50.0]:
        ...     u, state = opt.update(jnp.array([g]), state)
        >>> float(u[0]), int(state.skipped)
        (0.0, 1)
    """
    check_inner(inner)
    rules.spike_step(
        rules.spike_init(window), jnp.float32(1.0), sigma=sigma, min_history=min_history
    )

    def init_fn(params: Any) -> SpikeSkipState:
        return SpikeSkipState(
            inner.init(params),
            rules.spike_init(window, jnp.zeros(())),
            jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: Any, state: SpikeSkipState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, SpikeSkipState]:
        history, spike = rules.spike_step(
            state.history, _norm(updates), sigma=sigma, min_history=min_history
        )
        new_updates, new_inner = optax.with_extra_args_support(inner).update(
            updates, state.inner_state, params, **extra_args
        )
        new_updates = jax.tree.map(lambda u: jnp.where(spike, jnp.zeros_like(u), u), new_updates)
        kept = jax.tree.map(
            lambda old, new: jnp.where(spike, old, new), state.inner_state, new_inner
        )
        return new_updates, SpikeSkipState(kept, history, state.skipped + spike.astype(jnp.int32))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# -- optax's unit-wise AGC over any axes, and clip_by_block_rms ---------------------------------
def _unit_axes(x: Array, axis: Any) -> tuple[int, ...]:
    """The reduction axes of a unit: ``axis`` (an int or a tuple of ints), or optax's defaults
    by rank (whole array for vectors, 0 for rank 2-3, (0, 1, 2) for 4, (0, 1, 2, 3) for 5)."""
    if axis is None:
        if jnp.squeeze(x).ndim <= 1:
            return tuple(range(x.ndim))
        defaults = {2: (0,), 3: (0,), 4: (0, 1, 2), 5: (0, 1, 2, 3)}
        if x.ndim not in defaults:
            raise ValueError(
                f"Argument `axis` must be given for a parameter of rank {x.ndim} (defaults cover "
                f"ranks 1 to 5). Received: axis=None for shape {tuple(x.shape)}"
            )
        return defaults[x.ndim]
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(
                f"Argument `axis` must be an int or a tuple of ints. Received: {axis!r}"
            )
        if not -x.ndim <= a < x.ndim:
            raise check.fail("axis", f"within the rank {x.ndim} of shape {tuple(x.shape)}", axis)
        out.append(a % x.ndim)
    if len(set(out)) != len(out):
        raise check.fail("axis", "without repeats", axis)
    return tuple(out)


def _scaled_root(x: Array, axes: tuple[int, ...], *, mean: bool) -> Array:
    """``sqrt(sum |x|^2)`` (or the mean) over ``axes``, kept as size-1 axes, computed as
    ``m * sqrt(sum (|x| / m)^2)`` with ``m = max |x|`` so that squares cannot overflow."""
    ax = jnp.abs(x)
    m = jnp.max(ax, axis=axes, keepdims=True) if x.size else jnp.zeros((1,) * x.ndim, ax.dtype)
    finite = jnp.isfinite(m) & (m > 0)
    safe = jnp.where(finite, m, 1.0)
    q = jnp.sum(jnp.square(ax / safe), axis=axes, keepdims=True)
    if mean:
        q = q / max(1, math.prod(x.shape[a] for a in axes))
    return jnp.where(finite, m * jnp.sqrt(q), m)  # 0 stays 0, inf/NaN propagate


def unitwise_norm(x: Array, axis: int | tuple[int, ...] | None = None) -> Array:
    """The L2 norm of each unit of ``x`` (a slice over ``axis``), broadcast to ``x``'s shape, as
    ``optax.unitwise_norm`` computes it (same defaults by rank), without overflow.

    Examples:
        >>> import jax.numpy as jnp
        >>> unitwise_norm(jnp.array([[3.0, 1.0], [4.0, 0.0]])).tolist()
        [[5.0, 1.0], [5.0, 1.0]]
        >>> unitwise_norm(jnp.ones((2, 3, 4)), axis=(1, 2)).shape
        (2, 3, 4)
    """
    x = jnp.asarray(x)
    return jnp.broadcast_to(_scaled_root(x, _unit_axes(x, axis), mean=False), x.shape)


def agc_by_axes(
    clipping: float, eps: float = 1e-3, axis: int | tuple[int, ...] | None = None
) -> optax.GradientTransformation:
    """optax's ``adaptive_grad_clip(clipping, eps, axis)``: each unit (a slice over ``axis``,
    optax's defaults by rank when None) of an update is scaled to at most
    ``clipping * max(||W_unit||, eps)`` (norms by :func:`unitwise_norm`; the divisor is kept
    ``>= 1e-6`` as optax does). :func:`adaptive_grad_clip` is the same rule named by the output
    axis. Needs ``params``. Stateless.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = agc_by_axes(0.01, axis=1)
        >>> g, _ = tx.update(jnp.array([[3.0, 4.0]]), tx.init(None), jnp.array([[100.0, 0.0]]))
        >>> [round(float(v), 6) for v in g[0]]
        [0.6, 0.8]
    """
    check.positive("clipping", clipping)
    check.positive("eps", eps)

    def clip_unit(g: Array, p: Array) -> Array:
        g_norm, p_norm = unitwise_norm(g, axis), unitwise_norm(p, axis)
        max_norm = clipping * jnp.maximum(p_norm, eps)
        clipped = g * (max_norm / jnp.maximum(g_norm, 1e-6))
        return jnp.where(g_norm < max_norm, g, clipped)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError(
                "agc_by_axes needs the parameters: call update(updates, state, params). "
                "Received: params=None"
            )
        return jax.tree.map(clip_unit, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def clip_by_block_rms(threshold: float) -> optax.GradientTransformation:
    """optax's ``clip_by_block_rms``: each leaf (a "block") divided by
    ``max(1, rms(leaf) / threshold)``, the RMS computed without overflow. Stateless.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = clip_by_block_rms(1.0)
        >>> g, _ = tx.update({"w": jnp.array([3.0, 4.0]), "b": jnp.array([0.5])}, tx.init(None))
        >>> [round(float(v), 6) for v in g["w"]], float(g["b"][0])
        ([0.848528, 1.131371], 0.5)
    """
    limit = check.positive("threshold", threshold)

    def clip_block(u: Array) -> Array:
        u = jnp.asarray(u)
        rms = _scaled_root(u, tuple(range(u.ndim)), mean=True).reshape(())
        return u / jnp.maximum(1.0, rms / limit)

    def update_fn(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        return jax.tree.map(clip_block, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
