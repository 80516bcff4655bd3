"""Reduce on plateau: a metric-driven factor on top of any schedule, as a pure value.

The metric changes only one number, ``reductions``; the value is a pure function of the step
and that number, so warmup, decay and floors compose with it and resuming is exact. The
controller that decides when to reduce (:meth:`Plateau.update`) is framework-free and its whole
state (:class:`PlateauState`) is a handful of numbers, so every adapter (torch, optax, Keras)
computes the same decisions.

Semantics are torch's ``ReduceLROnPlateau`` (``torch/optim/lr_scheduler.py``, read at
pytorch/pytorch HEAD 2026-12): a metric is *better* than ``best`` when

- ``mode="min"``, ``threshold_mode="rel"``: ``metric < best * (1 - threshold)``
- ``mode="min"``, ``threshold_mode="abs"``: ``metric < best - threshold``
- ``mode="max"``: the mirror images (``> best * (1 + threshold)``, ``> best + threshold``);

a worse one counts a bad evaluation; during cooldown the cooldown counter falls by one and bad
evaluations are forgotten; when more than ``patience`` evaluations in a row were bad a reduction
is *triggered*, the cooldown starts (``cooldown`` evaluations) and the count restarts. NaN is
never better (every comparison with NaN is false), so a NaN metric counts as bad, as in torch.
The first ``ignore_first`` metrics are not looked at (counted as evaluations only): timm's
``PlateauLRScheduler`` ignores the metrics of its warmup epochs.

A triggered reduction is *applied* to a schedule when it lowers the value in use by more than
``eps`` (torch ignores reductions smaller than ``eps``); see :func:`apply_reduction`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _check as check
from ._base import Array, Namespace, Schedule

MODES = ("min", "max")
SEMANTICS = ("torch", "keras")
THRESHOLD_MODES = ("rel", "abs")
#: the options that decide *when* to reduce (shared by every group of one scheduler)
RULE_FIELDS = (
    "patience",
    "mode",
    "threshold",
    "threshold_mode",
    "cooldown",
    "ignore_first",
    "semantics",
)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class PlateauState:
    """The controller's whole state: JSON-safe numbers (``best`` is ``±inf`` before the first
    finite metric, as torch's ``mode_worse``).

    ``evaluations`` counts metrics fed (torch's ``last_epoch``), ``triggered`` the reductions
    triggered (whether or not a schedule applied them).
    """

    best: float
    num_bad_epochs: int = 0
    cooldown_counter: int = 0
    evaluations: int = 0
    triggered: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, name: str = "state") -> PlateauState:
        """Rebuild a state from :meth:`to_dict` output, checking every field."""
        fields = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, Mapping) or sorted(d) != sorted(fields):
            keys = sorted(d) if isinstance(d, Mapping) else type(d).__name__
            raise ValueError(
                f"`{name}` must be a plateau state with keys {fields}. Received: {keys}"
            )
        best = d["best"]
        if not check.is_python_number(best) or math.isnan(best):
            raise ValueError(f'`{name}["best"]` must be a number. Received: {best!r}')
        ints = {k: _count(f'{name}["{k}"]', d[k]) for k in fields if k != "best"}
        return cls(best=float(best), **ints)


def _count(name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a JSON round trip through some tools turns 3 into 3.0
    return check.integer(name, value)


@dataclass(frozen=True, repr=False)
class Plateau(Schedule, spec_name="plateau"):
    """``schedule``, lowered by ``factor`` each time the metric stops improving.

    With ``b = schedule(t)`` and ``k = reductions`` (the reductions applied so far) the value is

        ``min(b, max(b * factor * ... * factor, min_lr))``   (``k`` multiplications)

    so ``k = 0`` is ``schedule`` itself, ``min_lr`` bounds the reduction (never the schedule:
    a schedule already below ``min_lr`` is left alone, as torch never raises an LR), and on a
    constant schedule the values are torch ``ReduceLROnPlateau``'s bit for bit (torch multiplies
    the LR by ``factor`` once per reduction; so does this, in the same order).

    The other fields are the controller's options (see the module docstring); feed metrics
    through an adapter (``steadystep.torch.Scheduler.step(metric)``, ...), or by hand with
    :meth:`update` and :func:`apply_reduction`.

    >>> s = warmup(plateau(constant(0.1), factor=0.5, patience=1), steps=2)
    >>> [s(t) for t in range(4)]
    [0.0, 0.05, 0.1, 0.1]
    >>> p = find_plateau(s)
    >>> state = p.initial_state()
    >>> for metric in (1.0, 1.0, 1.0):          # two bad evaluations in a row: patience 1
    ...     state, reduce = p.update(state, metric)
    >>> reduce, state.triggered
    (True, 1)
    >>> s = apply_reduction(s, step=3)
    >>> [s(t) for t in range(4)]
    [0.0, 0.025, 0.05, 0.05]

    References: torch ``torch/optim/lr_scheduler.py`` (``ReduceLROnPlateau``).
    """

    schedule: Schedule
    factor: float = 0.1
    patience: int = 10
    mode: str = "min"
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
    eps: float = 1e-8
    ignore_first: int = 0
    semantics: str = "torch"
    reductions: int = 0
    positional = ("schedule",)

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"Argument `schedule` must be a schedule. Received: schedule={self.schedule!r}"
            )
        if find_plateau(self.schedule) is not None:
            raise ValueError(
                "Argument `schedule` must not contain another plateau (one metric-driven "
                f"factor per schedule). Received: schedule={self.schedule!r}"
            )
        factor = check.number("factor", self.factor)
        if not 0 < factor < 1:
            raise check.fail("factor", "> 0 and < 1", self.factor)
        _set(self, "factor", float(factor))
        _set(self, "patience", check.integer("patience", self.patience))
        _set(self, "mode", check.choice("mode", self.mode, MODES))
        _set(self, "threshold", float(check.nonnegative("threshold", self.threshold)))
        _set(
            self,
            "threshold_mode",
            check.choice("threshold_mode", self.threshold_mode, THRESHOLD_MODES),
        )
        _set(self, "cooldown", check.integer("cooldown", self.cooldown))
        _set(self, "min_lr", float(check.nonnegative("min_lr", self.min_lr)))
        _set(self, "eps", float(check.nonnegative("eps", self.eps)))
        _set(self, "ignore_first", check.integer("ignore_first", self.ignore_first))
        _set(self, "semantics", check.choice("semantics", self.semantics, SEMANTICS))
        if self.semantics == "keras" and self.threshold_mode != "abs":
            raise ValueError(
                "Keras's rule compares with an absolute `min_delta`: semantics='keras' needs "
                f"threshold_mode='abs'. Received: threshold_mode={self.threshold_mode!r}"
            )
        _set(self, "reductions", check.integer("reductions", self.reductions))

    @property
    def length(self) -> float | None:
        return self.schedule.length

    def _eval(self, t: Array, xp: Namespace) -> Array:
        base = self.schedule._eval(t, xp)
        if self.reductions == 0:
            return base
        value = base
        for _ in range(self.reductions):  # torch's order: one multiplication per reduction
            value = value * self.factor
        return xp.minimum(base, xp.maximum(value, self.min_lr))

    # -- the controller ---------------------------------------------------------------------
    def rule(self) -> tuple[Any, ...]:
        """The options that decide when to reduce (equal rules give equal decisions)."""
        return tuple(getattr(self, f) for f in RULE_FIELDS)

    def initial_state(self) -> PlateauState:
        return PlateauState(best=math.inf if self.mode == "min" else -math.inf)

    def is_better(self, metric: float, best: float) -> bool:
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return metric < best * (1.0 - self.threshold)
            return metric < best - self.threshold
        if self.threshold_mode == "rel":
            return metric > best * (self.threshold + 1.0)
        return metric > best + self.threshold

    def _keras_update(self, state: PlateauState, current: float) -> tuple[PlateauState, bool]:
        # keras/src/callbacks/reduce_lr_on_plateau.py: cooldown first, the first metric always
        # improves, and the wait only resets when a reduction really happened (settle())
        best, bad, cooldown = state.best, state.num_bad_epochs, state.cooldown_counter
        if cooldown > 0:
            cooldown, bad = cooldown - 1, 0
        reduce = False
        if state.evaluations == self.ignore_first or self.is_better(current, best):
            best, bad = current, 0
        elif cooldown == 0:
            bad += 1
            reduce = bad >= self.patience
        new = PlateauState(best, bad, cooldown, state.evaluations + 1, state.triggered + reduce)
        return new, reduce

    def settle(self, state: PlateauState, applied: bool) -> PlateauState:
        """The state after a triggered reduction was applied (``applied``) or not, anywhere.

        torch restarts the count and the cooldown either way (done in :meth:`update`); Keras
        only when an LR really changed.
        """
        if self.semantics == "keras" and applied:
            return dataclasses.replace(state, num_bad_epochs=0, cooldown_counter=self.cooldown)
        return state

    def update(self, state: PlateauState, metric: Any) -> tuple[PlateauState, bool]:
        """Feed one metric: the new state and whether a reduction was triggered.

        Then apply it (:func:`apply_reduction`) and pass the outcome to :meth:`settle`.
        """
        if not isinstance(state, PlateauState):
            raise TypeError(
                f"Argument `state` must be a PlateauState. Received: {type(state).__name__}"
            )
        current = metric_value(metric)
        if state.evaluations < self.ignore_first:  # e.g. timm's: metrics during warmup
            return dataclasses.replace(state, evaluations=state.evaluations + 1), False
        best, bad, cooldown = state.best, state.num_bad_epochs, state.cooldown_counter
        if self.semantics == "keras":
            return self._keras_update(state, current)
        if self.is_better(current, best):
            best, bad = current, 0
        else:
            bad += 1
        if cooldown > 0:
            cooldown -= 1
            bad = 0  # bad evaluations during cooldown are ignored
        reduce = bad > self.patience
        if reduce:
            cooldown, bad = self.cooldown, 0
        new = PlateauState(
            best=best,
            num_bad_epochs=bad,
            cooldown_counter=cooldown,
            evaluations=state.evaluations + 1,
            triggered=state.triggered + int(reduce),
        )
        return new, reduce


def plateau(
    schedule: Schedule,
    *,
    factor: float = 0.1,
    patience: int = 10,
    mode: str = "min",
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
    ignore_first: int = 0,
    semantics: str = "torch",
) -> Plateau:
    """Reduce ``schedule`` by ``factor`` when the metric plateaus (torch's defaults).

    ``semantics="keras"`` follows Keras's ``ReduceLROnPlateau`` callback instead (see
    :func:`steadystep.compat.keras.ReduceLROnPlateau`).

    >>> plateau(constant(1e-3), factor=0.5, patience=2)
    plateau(constant(value=0.001), factor=0.5, patience=2)
    """
    return Plateau(
        schedule,
        factor,
        patience,
        mode,
        threshold,
        threshold_mode,
        cooldown,
        min_lr,
        eps,
        ignore_first,
        semantics,
    )


def metric_value(metric: Any) -> float:
    """A metric as a Python float: numbers and one-element arrays/tensors (``float(x)``).

    NaN and infinities are accepted (torch's rules: NaN is never better); anything else is a
    ``TypeError`` naming the value.
    """
    if isinstance(metric, (bool, str, bytes)):
        raise TypeError(f"Argument `metric` must be a number. Received: metric={metric!r}")
    try:
        return float(metric)
    except (TypeError, ValueError):
        raise TypeError(
            "Argument `metric` must be a number or a one-element tensor. "
            f"Received: metric={metric!r} of type {type(metric).__name__}"
        ) from None


# -- the tree: find and replace the plateau inside a composed schedule ----------------------------
def _children(s: Schedule) -> list[tuple[str, Any]]:
    return [(f.name, getattr(s, f.name)) for f in dataclasses.fields(s)]  # type: ignore[arg-type]


def find_plateau(s: Schedule) -> Plateau | None:
    """The :class:`Plateau` inside ``s`` (or ``s`` itself); None if there is none.

    Raises ``ValueError`` if there are several (one metric-driven factor per schedule).
    """
    found = _find_all(s)
    if len(found) > 1:
        raise ValueError(f"A schedule may contain one plateau; this one has {len(found)}: {s!r}")
    return found[0] if found else None


def _find_all(s: Schedule) -> list[Plateau]:
    if isinstance(s, Plateau):
        return [s]
    out: list[Plateau] = []
    for _, value in _children(s):
        items = value if isinstance(value, tuple) else (value,)
        for v in items:
            if isinstance(v, Schedule):
                out.extend(_find_all(v))
    return out


def with_reductions(s: Schedule, reductions: int) -> Schedule:
    """``s`` with its plateau's ``reductions`` set (``s`` itself if it has no plateau)."""
    if isinstance(s, Plateau):
        return s if s.reductions == reductions else dataclasses.replace(s, reductions=reductions)
    changes: dict[str, Any] = {}
    for name, value in _children(s):
        if isinstance(value, Schedule):
            new: Any = with_reductions(value, reductions)
        elif isinstance(value, tuple) and any(isinstance(v, Schedule) for v in value):
            new = tuple(
                with_reductions(v, reductions) if isinstance(v, Schedule) else v for v in value
            )
        else:
            continue
        if new is not value and new != value:
            changes[name] = new
    return dataclasses.replace(s, **changes) if changes else s  # type: ignore[type-var]


def apply_reduction(s: Schedule, step: int, scale: float = 1.0) -> Schedule:
    """``s`` with one more reduction if that lowers its value at ``step`` by more than ``eps``.

    This is torch's rule (``old_lr - new_lr > eps``, ``new_lr = max(old_lr * factor,
    min_lr)``) on the value in use at ``step``; ``scale`` multiplies both values first (the
    group's base with ``relative=True``, so ``eps`` is an LR as in torch). A reduction
    triggered while the plateau has no effect on the value (during a warmup in front of it)
    changes nothing and is dropped, like one smaller than ``eps``.
    """
    p = find_plateau(s)
    if p is None:
        return s
    candidate = with_reductions(s, p.reductions + 1)
    old, new = s(step) * scale, candidate(step) * scale
    if p.semantics == "keras":  # Keras: reduce while the LR is above float32(min_lr)
        return candidate if old > float(np.float32(p.min_lr)) and new < old else s
    return candidate if old - new > p.eps else s
