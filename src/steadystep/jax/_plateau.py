"""`reduce_on_plateau`: optax's metric-driven multiplier on the updates, with checked arguments.

The rule is ``optax.contrib.reduce_on_plateau``'s (optax 0.2.8,
``optax/contrib/_reduce_on_plateau.py``), not torch's: the loss comes in as
``update(updates, state, params, value=loss)``, is averaged over ``accumulation_size`` calls, and
once per window the average is compared with the best average so far. It improves when
``avg < (1 - rtol) * best - atol``; otherwise a bad-evaluation counter grows, and when it reaches
``patience`` the scale is multiplied by ``factor`` (never below ``min_scale``) and a cooldown of
``cooldown`` windows starts, during which bad windows are not counted. ``ss.plateau`` (torch's
rule) multiplies a *schedule*; this multiplies the *updates*, so chain it after the optimizer.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from steadystep import _check as check

__all__ = ["ReduceOnPlateauState", "reduce_on_plateau"]


class ReduceOnPlateauState(NamedTuple):
    """Fields named as optax's ``ReduceLROnPlateauState``, so code reading ``state.scale`` works."""

    scale: jax.Array  # the multiplier the last update used (lowest float dtype of the params)
    best_value: jax.Array  # best window average so far (inf at first)
    plateau_count: jax.Array  # int32 bad windows since the last improvement or reduction
    cooldown_count: jax.Array  # int32 windows of cooldown left
    count: jax.Array  # int32 values in the current window
    avg_value: jax.Array  # running mean of the current window


def _params_dtype(params: Any, pick: str) -> Any:
    """The lowest / highest dtype of the leaves (ordered by promotion), JAX's default if none."""
    dtypes = [jnp.asarray(leaf).dtype for leaf in jax.tree.leaves(params)]
    if not dtypes:
        return jnp.asarray([]).dtype

    def lower(a: Any, b: Any) -> Any:
        return a if jnp.promote_types(a, b) == b else b

    def higher(a: Any, b: Any) -> Any:
        return b if jnp.promote_types(a, b) == b else a

    return functools.reduce(lower if pick == "lowest" else higher, dtypes)


def _increment(count: jax.Array) -> jax.Array:
    """``count + 1``, staying at the int32 maximum instead of wrapping."""
    return jnp.where(count < check.INT32_MAX, count + 1, count).astype(jnp.int32)


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: int = 0,
    accumulation_size: int = 1,
    min_scale: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Scale the updates down by ``factor`` when the value passed to ``update`` stops improving.

    Same arguments, defaults, state fields and numbers as ``optax.contrib.reduce_on_plateau``
    (tested step by step against it under ``jax.jit``); call
    ``update(updates, state, params, value=loss)``. Arguments optax accepts but that cannot work
    are refused: ``patience=0`` (optax would then reduce on *improvements*: its counter is reset
    to 0 there and compared with ``patience`` by equality), ``accumulation_size=0`` (never
    evaluates), ``min_scale`` outside ``[0, 1]`` (above 1 it raises the scale), and non-integer or
    traced ``patience``/``cooldown``/``accumulation_size``.

    A NaN or ``+inf`` value is never an improvement (it counts as a bad window; a NaN inside a
    window makes that window's average NaN). ``-inf`` is an improvement, after which nothing is.
    With ``rtol=1`` the first threshold is ``0 * inf``, NaN, so no value ever improves: optax's
    behaviour, kept.

    Examples:
        >>> import optax, jax.numpy as jnp
        >>> opt = optax.chain(optax.sgd(0.1), reduce_on_plateau(factor=0.5, patience=2))
        >>> state = opt.init(jnp.zeros(1))
        >>> for loss in [1.0, 0.5, 0.6, 0.7]:
        ...     u, state = opt.update(jnp.ones(1), state, value=jnp.float32(loss))
        >>> float(state[1].scale), round(float(u[0]), 6)
        (0.5, -0.05)
    """
    factor = check.positive("factor", factor)
    if factor >= 1:
        raise check.fail("factor", "< 1 (it multiplies the scale at each reduction)", factor)
    patience = check.integer("patience", patience, minimum=1, maximum=check.INT32_MAX)
    rtol = check.nonnegative("rtol", rtol)
    if rtol > 1:
        raise check.fail("rtol", "<= 1", rtol)
    atol = check.nonnegative("atol", atol)
    if rtol == 0 and atol == 0:
        raise ValueError(
            "At least one of `rtol` and `atol` must be > 0 (else an equal value would count as an "
            f"improvement). Received: rtol={rtol!r}, atol={atol!r}"
        )
    cooldown = check.integer("cooldown", cooldown, minimum=0, maximum=check.INT32_MAX)
    accumulation_size = check.integer(
        "accumulation_size", accumulation_size, minimum=1, maximum=check.INT32_MAX
    )
    min_scale = check.nonnegative("min_scale", min_scale)
    if min_scale > 1:
        raise check.fail("min_scale", "<= 1 (the scale starts at 1)", min_scale)

    def init_fn(params: Any) -> ReduceOnPlateauState:
        wide = _params_dtype(params, "highest")
        zero = jnp.zeros((), jnp.int32)
        return ReduceOnPlateauState(
            scale=jnp.ones((), _params_dtype(params, "lowest")),
            best_value=jnp.full((), jnp.inf, wide),
            plateau_count=zero,
            cooldown_count=zero,
            count=zero,
            avg_value=jnp.zeros((), wide),
        )

    def evaluate(state: ReduceOnPlateauState) -> ReduceOnPlateauState:
        avg = state.avg_value
        improved = avg < (1 - rtol) * state.best_value - atol
        bad = jnp.where(improved, 0, _increment(state.plateau_count)).astype(jnp.int32)
        cooling = state.cooldown_count > 0
        reduce = jnp.logical_and(jnp.logical_not(cooling), bad == patience)
        reduced = jnp.maximum(jnp.where(reduce, state.scale * factor, state.scale), min_scale)
        return ReduceOnPlateauState(
            scale=jnp.where(cooling, state.scale, reduced).astype(state.scale.dtype),
            best_value=jnp.where(improved, avg, state.best_value).astype(state.best_value.dtype),
            plateau_count=jnp.where(cooling | reduce, 0, bad).astype(jnp.int32),
            cooldown_count=jnp.where(
                cooling, state.cooldown_count - 1, jnp.where(reduce, cooldown, 0)
            ).astype(jnp.int32),
            count=jnp.zeros((), jnp.int32),
            avg_value=jnp.zeros((), avg.dtype),
        )

    def update_fn(
        updates: Any,
        state: ReduceOnPlateauState,
        params: Any = None,
        *,
        value: Any,
        **extra_args: Any,
    ) -> tuple[Any, ReduceOnPlateauState]:
        del params, extra_args
        count = _increment(state.count)
        dtype = state.avg_value.dtype
        avg = ((state.count * state.avg_value + jnp.asarray(value).astype(dtype)) / count).astype(
            dtype
        )
        state = state._replace(avg_value=avg, count=count)
        state = jax.lax.cond(count == accumulation_size, evaluate, lambda s: s, state)
        return jax.tree.map(lambda g: state.scale * g, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
