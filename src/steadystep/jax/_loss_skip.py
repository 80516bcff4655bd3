"""`loss_spike_skip`: skip an optax update whose loss and/or gradient norm spikes.

The rule is :func:`steadystep.clip.skip_step`, the one ``steadystep.torch.LossSpikeSkip`` uses;
the loss comes in as an extra argument, ``opt.update(grads, state, params, loss=loss)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from steadystep import _check as check
from steadystep import clip as rules
from steadystep.clip import _skip
from steadystep.clip._rules import HISTORY_MAX

from ._clip import check_inner

__all__ = ["LossSpikeSkipState", "loss_spike_skip"]


class LossSpikeSkipState(NamedTuple):
    inner_state: Any
    history: rules.SkipState
    skipped: jax.Array  # int32 count of skipped updates


def loss_spike_skip(
    inner: optax.GradientTransformation,
    *,
    signal: str = "either",
    window: int = 128,
    sigma: float = 6.0,
    min_history: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Wrap an optimizer: an update whose loss (or norm, per ``signal``) spikes is skipped.

    A skipped update is all zeros and leaves ``inner``'s state as it was (its moments and its
    count, so a schedule inside ``inner`` does not advance, as ``optax.apply_if_finite``).
    ``signal`` is ``"loss"``, ``"norm"``, ``"either"`` or ``"both"``; pass ``loss=`` to
    ``update`` unless ``signal="norm"``. Works under ``jax.jit``.

    Examples:
        >>> import optax, jax.numpy as jnp
        >>> opt = loss_spike_skip(optax.sgd(0.1), signal="loss", window=8, min_history=3)
        >>> state = opt.init(jnp.zeros(1))
        >>> for loss in [1.0, 1.1, 0.9, 1.0, 50.0]:
        ...     u, state = opt.update(jnp.ones(1), state, loss=jnp.float32(loss))
        >>> float(u[0]), int(state.skipped)
        (0.0, 1)
    """
    check_inner(inner)
    window = check.integer("window", window, minimum=1, maximum=HISTORY_MAX)
    signal, sigma, min_history = _skip.check_rule(signal, sigma, min_history, window)

    def init_fn(params: Any) -> LossSpikeSkipState:
        return LossSpikeSkipState(
            inner.init(params), rules.skip_init(window, jnp.zeros(())), jnp.zeros((), jnp.int32)
        )

    def update_fn(
        updates: Any,
        state: LossSpikeSkipState,
        params: Any = None,
        *,
        loss: Any = None,
        **extra_args: Any,
    ) -> tuple[Any, LossSpikeSkipState]:
        norm = rules.global_norm(jax.tree.leaves(updates)) if signal != "loss" else None
        history, skip = rules.skip_step(
            state.history, loss, norm, signal=signal, sigma=sigma, min_history=min_history
        )
        new_updates, new_inner = optax.with_extra_args_support(inner).update(
            updates, state.inner_state, params, **extra_args
        )
        new_updates = jax.tree.map(lambda u: jnp.where(skip, jnp.zeros_like(u), u), new_updates)
        kept = jax.tree.map(
            lambda old, new: jnp.where(skip, old, new), state.inner_state, new_inner
        )
        return new_updates, LossSpikeSkipState(
            kept, history, state.skipped + skip.astype(jnp.int32)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
