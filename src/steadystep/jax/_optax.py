"""Schedules inside optax: an exact plain schedule, a stateful one, a scaling transform, LR logging.

optax runs a schedule on ``count``, an int32 that saturates at 2**31 - 1
(``optax.safe_increment``). Three ways to use a steadystep schedule, from simplest:

* ``optax.adam(learning_rate=s)``: ``s`` itself is an optax schedule (float32 step; exact while
  ``count < 2**24``);
* ``optax.adam(learning_rate=as_optax(s))``: evaluated from the exact int32 count (exact to
  2**31 - 1 updates, then frozen like every optax schedule);
* ``optax.inject_hyperparams(optax.adam)(learning_rate=stateful(s))`` or
  ``optax.chain(optax.scale_by_adam(), scale_by_learning_rate(s))``: the count is a two-word
  :class:`~steadystep.jax.StepCount` (exact to 2**55 updates), and the LR is in the state for
  logging (:func:`get_learning_rate`).

Behaviour of ``optax.inject_hyperparams`` and ``optax.scale_by_learning_rate`` was read in
optax's ``optax/schedules/_inject.py`` and ``optax/_src/alias.py`` (not copied).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from steadystep.schedules._base import Schedule

from ._step import StepCount, evaluate, step_count

__all__ = ["ScheduleState", "as_optax", "get_learning_rate", "scale_by_learning_rate", "stateful"]

Array = Any


def _check_schedule(schedule: Any) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(
            "Argument `schedule` must be a steadystep schedule (e.g. ss.cosine(1e-3, 0.0, "
            f"steps=1000)). Received: schedule={schedule!r} of type {type(schedule).__name__}"
        )
    return schedule


def as_optax(schedule: Schedule) -> Callable[[Array], Array]:
    """``schedule`` as an optax schedule ``count -> value`` evaluated from the exact count.

    Same values as ``schedule(count)`` below 2**24 updates; beyond, the step is never rounded
    to float32 before the schedule's boundaries and cycles are resolved (see
    :func:`steadystep.jax.evaluate`).

    Examples:
        >>> import optax, steadystep as ss
        >>> lr = as_optax(ss.warmup(ss.cosine(1e-3, 0.0, steps=90), steps=10))
        >>> opt = optax.adamw(learning_rate=lr)
        >>> round(float(lr(jnp.asarray(5, jnp.int32))), 9)  # float32
        0.0005
    """
    schedule = _check_schedule(schedule)

    def fn(count: Array) -> Array:
        return evaluate(schedule, count)

    fn.__name__ = f"as_optax({schedule!r})"
    fn.__doc__ = f"optax schedule of steadystep's {schedule!r}"
    return fn


class Stateful:
    """An optax ``StatefulSchedule`` over a :class:`StepCount` (made by :func:`stateful`)."""

    def __init__(self, schedule: Schedule, start: int = 0) -> None:
        self.schedule = _check_schedule(schedule)
        self.start = step_count(start)

    def init(self) -> StepCount:
        return self.start

    def update(self, state: StepCount, **extra_args: Any) -> StepCount:
        del extra_args
        return state.next()

    def __call__(self, state: StepCount, **extra_args: Any) -> Array:
        del extra_args
        return evaluate(self.schedule, state)

    def __repr__(self) -> str:
        return f"stateful({self.schedule!r})"


def stateful(schedule: Schedule, *, start: int = 0) -> Stateful:
    """``schedule`` as an optax stateful schedule for ``optax.inject_hyperparams``.

    Its state is a two-word :class:`StepCount`, so it neither saturates at 2**31 like optax's
    ``count`` nor rounds the step. ``start`` begins the clock later (resuming from a step).
    After ``k >= 1`` updates ``state.hyperparams["learning_rate"]`` holds ``schedule(k - 1)``,
    the LR the latest update used (``schedule(0)`` right after ``init``).

    Examples:
        >>> import optax, steadystep as ss
        >>> lr = stateful(ss.linear(1.0, 0.0, steps=4))
        >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=lr)
        >>> params = {"w": jnp.ones(2)}
        >>> state = opt.init(params)
        >>> for _ in range(3):
        ...     updates, state = opt.update({"w": jnp.ones(2)}, state, params)
        >>> float(get_learning_rate(state))  # the third update used step 2
        0.5
    """
    return Stateful(schedule, start)


class ScheduleState(NamedTuple):
    """State of :func:`scale_by_learning_rate`: the exact ``count`` of updates done and
    ``value``, the schedule value the latest update used (``schedule(0)`` before any)."""

    count: StepCount  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
    value: Array


def scale_by_learning_rate(
    schedule: Schedule, *, flip_sign: bool = True
) -> optax.GradientTransformation:
    """Multiply updates by ``-schedule(count)`` (``flip_sign=False``: by ``+schedule(count)``).

    The chainable counterpart of ``optax.scale_by_learning_rate``, with an exact two-word count
    and the value used kept in :class:`ScheduleState` for :func:`get_learning_rate`.

    Examples:
        >>> import optax, steadystep as ss
        >>> opt = optax.chain(optax.scale_by_adam(), scale_by_learning_rate(ss.constant(0.1)))
        >>> params = jnp.zeros(3)
        >>> state = opt.init(params)
        >>> updates, state = opt.update(jnp.ones(3), state, params)
        >>> round(float(get_learning_rate(state)), 7), int(state[1].count)
        (0.1, 1)
    """
    schedule = _check_schedule(schedule)
    if not isinstance(flip_sign, bool):
        raise TypeError(f"Argument `flip_sign` must be True or False. Received: {flip_sign!r}")
    sign = -1.0 if flip_sign else 1.0

    def init_fn(params: Any) -> ScheduleState:
        del params
        count = step_count(0)
        return ScheduleState(count, evaluate(schedule, count))

    def update_fn(
        updates: Any, state: ScheduleState, params: Any = None
    ) -> tuple[Any, ScheduleState]:
        del params
        value = evaluate(schedule, state.count)
        factor = sign * value
        updates = jax.tree.map(lambda u: (u * factor).astype(u.dtype), updates)
        return updates, ScheduleState(state.count.next(), value)

    return optax.GradientTransformation(init_fn, update_fn)


def get_learning_rate(opt_state: Any, name: str = "learning_rate") -> Array:
    """The LR (or hyperparameter ``name``) the latest update used, read from an optimizer state.

    Finds, anywhere in the state pytree (``optax.chain``, ``optax.multi_transform``, wrappers):
    ``optax.inject_hyperparams``'s ``hyperparams[name]`` or, for ``name="learning_rate"``,
    :class:`ScheduleState.value`. The first one found (depth first) is returned.

    Raises:
        KeyError: nothing in the state holds it.
    """
    found = _find(opt_state, name)
    if found is None:
        raise KeyError(
            f"No hyperparameter {name!r} in the optimizer state. Wrap the optimizer with "
            "optax.inject_hyperparams(...) (e.g. learning_rate=steadystep.jax.stateful(s)) or "
            "chain steadystep.jax.scale_by_learning_rate(s)."
        )
    return found


def _find(node: Any, name: str) -> Any:
    if isinstance(node, ScheduleState):
        return node.value if name == "learning_rate" else None
    hyper = getattr(node, "hyperparams", None)
    if isinstance(hyper, dict) and name in hyper:
        return jnp.asarray(hyper[name])
    if isinstance(node, dict):
        children: Any = node.values()
    elif isinstance(node, (tuple, list)):
        children = node
    else:
        children = getattr(node, "inner_state", None), getattr(node, "inner_states", None)
    for child in children:
        if child is not None:
            found = _find(child, name)
            if found is not None:
                return found
    return None
