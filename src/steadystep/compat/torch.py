"""Closed forms of ``torch.optim.lr_scheduler``: the values torch produces when stepped.

Each function is named after the torch class and keeps its argument names; the optimizer is
replaced by ``lr``, the group's initial LR (torch's ``base_lr``), and the result is the
absolute LR. ``s(t)`` is the LR after ``t`` calls to ``scheduler.step()``, i.e. the LR that
update ``t`` uses when the scheduler is stepped once per update (or per epoch: then ``t``
counts epochs; wrap in ``steadystep.from_epochs(s, steps_per_epoch, discrete=True)``).

No hidden state: resuming, ``SequentialLR`` and chained forms are plain functions of ``t``.

>>> s = CosineAnnealingLR(0.1, T_max=10)
>>> s(0), round(s(5), 12), round(s(10), 12), round(s(15), 12)  # past T_max it climbs again
(0.1, 0.05, 0.0, 0.05)

References: PyTorch ``torch/optim/lr_scheduler.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence as SequenceType
from typing import Any

from ..schedules import (
    Constant,
    Cosine,
    CosineWave,
    Cyclic,
    Exponential,
    Linear,
    Piecewise,
    Plateau,
    Polynomial,
    Repeat,
    Schedule,
    Sequence,
    Shift,
    Step,
    product,
)
from ..schedules._shapes import PythonFunction
from . import _util as u

__all__ = [
    "SWALR",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "CyclicMomentum",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "OneCycleMomentum",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]


def _lr(value: Any) -> float:
    return u.nonnegative("lr", value)


def StepLR(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** floor(t / step_size)``.

    >>> s = StepLR(1.0, step_size=3, gamma=0.5)
    >>> [s(t) for t in range(7)]
    [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """
    return Step(_lr(lr), u.steps("step_size", step_size, minimum=1), u.positive("gamma", gamma))


def MultiStepLR(lr: float, milestones: SequenceType[int], gamma: float = 0.1) -> Schedule:
    """``lr * gamma ** (number of milestones <= t)``; a repeated milestone counts twice.

    >>> s = MultiStepLR(1.0, milestones=[2, 4, 4], gamma=0.5)
    >>> [s(t) for t in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.125, 0.125]
    """
    base, g = _lr(lr), u.positive("gamma", gamma)
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, SequenceType):
        raise TypeError(f"Argument `milestones` must be a list of steps. Received: {milestones!r}")
    counts = Counter(u.steps(f"milestones[{i}]", m, minimum=1) for i, m in enumerate(milestones))
    if not counts:
        return Constant(base)
    bounds = sorted(counts)
    values, k = [base], 0
    for b in bounds:
        k += counts[b]
        values.append(base * g**k)
    return Piecewise(tuple(bounds), tuple(values))


def ExponentialLR(lr: float, gamma: float) -> Schedule:
    """``lr * gamma ** t``.

    >>> ExponentialLR(1.0, gamma=0.5)(3)
    0.125
    """
    return Exponential(u.positive("lr", lr), u.positive("gamma", gamma), 1)


def LinearLR(
    lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> Schedule:
    """``lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)``.

    >>> s = LinearLR(1.0, start_factor=0.5, total_iters=2)
    >>> [s(t) for t in range(4)]
    [0.5, 0.75, 1.0, 1.0]
    """
    base = _lr(lr)
    sf = u.number("start_factor", start_factor)
    if not 0 < sf <= 1:
        raise u.fail("start_factor", "in (0, 1]", start_factor)
    ef = u.number("end_factor", end_factor)
    if not 0 <= ef <= 1:
        raise u.fail("end_factor", "in [0, 1]", end_factor)
    n = u.steps("total_iters", total_iters)
    return Linear(base * sf, base * ef, n) if n else Constant(base * sf)  # torch: 0 = never


def ConstantLR(lr: float, factor: float = 1.0 / 3, total_iters: int = 5) -> Schedule:
    """``lr * factor`` for ``t < total_iters``, then ``lr``.

    >>> s = ConstantLR(1.0, factor=0.5, total_iters=2)
    >>> [s(t) for t in range(4)]
    [0.5, 0.5, 1.0, 1.0]
    """
    base = _lr(lr)
    f = u.number("factor", factor)
    if not 0 <= f <= 1:
        raise u.fail("factor", "in [0, 1]", factor)
    n = u.steps("total_iters", total_iters)
    return Piecewise((n,), (base * f, base)) if n else Constant(base * f)  # torch: 0 = never


def PolynomialLR(lr: float, total_iters: int = 5, power: float = 1.0) -> Schedule:
    """``lr * (1 - min(t, total_iters) / total_iters) ** power``.

    >>> s = PolynomialLR(1.0, total_iters=4, power=2.0)
    >>> [s(t) for t in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    n = u.steps("total_iters", total_iters, minimum=1)
    return Polynomial(_lr(lr), 0.0, n, u.positive("power", power))


def CosineAnnealingLR(lr: float, T_max: int, eta_min: float = 0.0) -> Schedule:
    """``eta_min + (lr - eta_min) * (1 + cos(pi * t / T_max)) / 2`` for every ``t``.

    torch's recursive form keeps following the cosine after ``T_max``: the LR climbs back to
    ``lr`` at ``2 * T_max`` and so on (period ``2 * T_max``); this reproduces that. For a
    decay that holds ``eta_min`` use ``steadystep.cosine(lr, eta_min, T_max)``.
    """
    n = u.steps("T_max", T_max, minimum=1)
    return CosineWave(_lr(lr), u.number("eta_min", eta_min), n, 0.5)


def CosineAnnealingWarmRestarts(
    lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0
) -> Schedule:
    """SGDR: cosine from ``lr`` to ``eta_min`` over ``T_0`` steps, restarting with periods
    multiplied by ``T_mult``.

    >>> s = CosineAnnealingWarmRestarts(1.0, T_0=2, T_mult=2)
    >>> [round(s(t), 12) for t in range(7)]
    [1.0, 0.5, 1.0, 0.853553390593, 0.5, 0.146446609407, 1.0]

    References: Loshchilov & Hutter 2017, "SGDR".
    """
    n = u.steps("T_0", T_0, minimum=1)
    mult = u.steps("T_mult", T_mult, minimum=1)
    return Repeat(Cosine(_lr(lr), u.number("eta_min", eta_min), n), stretch=mult)


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


_SCALE_MODES = ("cycle", "iterations")


def _cyclic(
    low: float,
    high: float,
    step_size_up: Any,
    step_size_down: Any,
    mode: str,
    gamma: Any,
    scale_fn: Any = None,
    scale_mode: Any = "cycle",
) -> Schedule:
    up = u.positive("step_size_up", step_size_up)
    down = up if step_size_down is None else u.positive("step_size_down", step_size_down)
    g = u.positive("gamma", gamma)
    if scale_fn is None:
        return Cyclic(low, high, up, down, u.choice("mode", mode, _CYCLIC_MODES), g)
    # torch: low + (high - low) * h * scale_fn(cycle or t); mode and gamma are ignored
    kind = "cycle" if u.choice("scale_mode", scale_mode, _SCALE_MODES) == "cycle" else "value"
    scale = PythonFunction(_callable("scale_fn", scale_fn), kind, period=up + down)
    return Shift(product([Cyclic(0.0, high - low, up, down), scale]), low)


def _callable(argument: str, fn: Any) -> Any:
    if not callable(fn):
        raise TypeError(
            f"Argument `{argument}` must be a callable of the step. Received: {argument}={fn!r}"
        )
    return fn


def CyclicLR(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Any = None,
    scale_mode: str = "cycle",
) -> Schedule:
    """The LR of torch's ``CyclicLR``. A custom ``scale_fn`` (a Python callable of the cycle
    number, or of the step with ``scale_mode="iterations"``) gives a schedule evaluated on
    the host (:class:`~steadystep.schedules._shapes.PythonFunction`).

    >>> s = CyclicLR(0.1, 1.0, step_size_up=2)
    >>> [round(s(t), 12) for t in range(5)]
    [0.1, 0.55, 1.0, 0.55, 0.1]
    >>> half = CyclicLR(0.0, 1.0, step_size_up=2, scale_fn=lambda c: 0.5 ** (c - 1))
    >>> [half(t) for t in (2, 6)]
    [1.0, 0.5]
    """
    low, high = u.nonnegative("base_lr", base_lr), u.nonnegative("max_lr", max_lr)
    return _cyclic(low, high, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)


def CyclicMomentum(
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Any = None,
    scale_mode: str = "cycle",
) -> Schedule:
    """The momentum ``CyclicLR(cycle_momentum=True)`` sets: from ``max_momentum`` down to
    ``base_momentum`` while the LR rises, and back. Use with ``param="momentum"``.

    >>> s = CyclicMomentum(0.8, 0.9, step_size_up=2)
    >>> [round(s(t), 12) for t in range(3)]
    [0.9, 0.85, 0.8]
    """
    low = u.nonnegative("base_momentum", base_momentum)
    high = u.nonnegative("max_momentum", max_momentum)
    return _cyclic(high, low, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)


def LambdaLR(lr: float, lr_lambda: Any) -> Schedule:
    """torch's ``LambdaLR``: ``lr * lr_lambda(t)`` for any Python callable of the step.

    Exact resume holds (the value is a function of the step), but a callable is not spec
    text: the schedule's ``repr`` names the function and its first values, which
    ``Scheduler.load_state_dict`` compares; it is evaluated on the host (Python/NumPy steps).
    One callable per schedule: for torch's list form build one schedule per param group.

    >>> s = LambdaLR(0.1, lambda t: 0.5 ** (t // 2))
    >>> [s(t) for t in range(5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    return PythonFunction(_callable("lr_lambda", lr_lambda), "value", scale=_lr(lr))


def MultiplicativeLR(lr: float, lr_lambda: Any) -> Schedule:
    """torch's ``MultiplicativeLR``: ``lr * lr_lambda(1) * ... * lr_lambda(t)``, multiplied in
    torch's order but recomputed from the step (cached running products, re-validated), so it
    keeps no recursion state. Host-evaluated and named like :func:`LambdaLR`.

    >>> s = MultiplicativeLR(1.0, lambda t: 0.5)
    >>> [s(t) for t in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """
    return PythonFunction(_callable("lr_lambda", lr_lambda), "product", scale=_lr(lr))


_ANNEAL = ("cos", "linear")


def SWALR(
    lr: float, swa_lr: float, anneal_epochs: int = 10, anneal_strategy: str = "cos"
) -> Schedule:
    """torch's ``SWALR`` (``torch/optim/swa_utils.py``): from ``lr`` (the group's LR when
    SWALR is built) to ``swa_lr`` over ``anneal_epochs`` steps, cosine or linear, then held;
    ``anneal_epochs=0`` gives ``swa_lr`` at once.

    >>> s = SWALR(0.1, 0.01, anneal_epochs=2, anneal_strategy="linear")
    >>> [round(s(t), 12) for t in range(4)]
    [0.1, 0.055, 0.01, 0.01]
    """
    start, end = _lr(lr), u.nonnegative("swa_lr", swa_lr)
    steps = u.integer("anneal_epochs", anneal_epochs)
    kind = u.choice("anneal_strategy", anneal_strategy, _ANNEAL)
    if steps == 0:
        return Constant(end)
    return Cosine(start, end, steps) if kind == "cos" else Linear(start, end, steps)


def _total(total_steps: Any, epochs: Any, steps_per_epoch: Any) -> int:
    if total_steps is not None:
        return u.steps("total_steps", total_steps, minimum=2)
    if epochs is None or steps_per_epoch is None:
        raise ValueError(
            "You must define either `total_steps` or (`epochs` and `steps_per_epoch`). "
            f"Received: total_steps=None, epochs={epochs!r}, steps_per_epoch={steps_per_epoch!r}"
        )
    e = u.steps("epochs", epochs, minimum=1)
    total = e * u.steps("steps_per_epoch", steps_per_epoch, minimum=1)
    if total < 2:
        raise u.fail("epochs * steps_per_epoch", ">= 2", total)
    return total


def _phase_ends(total: int, pct_start: Any, three_phase: Any) -> list[float]:
    pct = u.number("pct_start", pct_start)
    if not 0 < pct < 1:
        raise u.fail("pct_start", "in (0, 1)", pct_start)
    first = pct * total - 1.0
    ends = [first, 2.0 * pct * total - 2.0] if u.flag("three_phase", three_phase) else [first]
    ends.append(total - 1.0)
    for i in range(len(ends)):
        if not ends[i] > (ends[i - 1] if i else 0.0):
            raise u.fail(
                "pct_start",
                f"such that every phase of total_steps={total} lasts > 0 steps "
                "(torch divides by the phase length)",
                pct_start,
            )
    return ends


def _phases(points: list[float], ends: list[float], anneal_strategy: str) -> Schedule:
    curve: Any = {"cos": Cosine, "linear": Linear}[
        u.choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    ]
    parts, start = [], 0.0
    for i, end in enumerate(ends):
        parts.append(curve(points[i], points[i + 1], end - start))
        start = end
    return Sequence(tuple(parts), tuple(ends[:-1]))


def OneCycleLR(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """The LR of torch's ``OneCycleLR``, phase ends at torch's fractional steps
    (``pct_start * total_steps - 1``, then ``total_steps - 1``).

    Initial LR ``max_lr / div_factor``, final ``initial / final_div_factor``. torch raises
    after ``total_steps`` steps; this holds the final value.

    >>> s = OneCycleLR(1.0, total_steps=10, pct_start=0.5)  # peak at 0.5 * 10 - 1 = 4
    >>> s(0), s(4), round(s(9), 12)
    (0.04, 1.0, 4e-06)

    References: Smith & Topin 2017, "Super-Convergence".
    """
    total = _total(total_steps, epochs, steps_per_epoch)
    peak = u.positive("max_lr", max_lr)
    initial = peak / u.positive("div_factor", div_factor)
    final = initial / u.positive("final_div_factor", final_div_factor)
    ends = _phase_ends(total, pct_start, three_phase)
    points = [initial, peak, initial, final] if three_phase else [initial, peak, final]
    return _phases(points, ends, anneal_strategy)


def OneCycleMomentum(
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    three_phase: bool = False,
) -> Schedule:
    """The momentum (or Adam ``beta1``) ``OneCycleLR(cycle_momentum=True)`` sets: down from
    ``max_momentum`` to ``base_momentum`` while the LR rises, back while it falls.

    >>> s = OneCycleMomentum(total_steps=10, pct_start=0.5)
    >>> s(0), s(4), s(9)
    (0.95, 0.85, 0.95)
    """
    total = _total(total_steps, epochs, steps_per_epoch)
    low = u.nonnegative("base_momentum", base_momentum)
    high = u.nonnegative("max_momentum", max_momentum)
    ends = _phase_ends(total, pct_start, three_phase)
    points = [high, low, high, high] if three_phase else [high, low, high]
    return _phases(points, ends, anneal_strategy)


def SequentialLR(schedulers: SequenceType[Schedule], milestones: SequenceType[int]) -> Schedule:
    """``schedulers[i]`` from ``milestones[i-1]`` on, each on its own clock restarting at 0
    (torch calls ``scheduler.step(0)`` at each milestone).

    >>> s = SequentialLR([LinearLR(1.0, 0.5, total_iters=2), ExponentialLR(1.0, 0.5)], [2])
    >>> [s(t) for t in range(5)]
    [0.5, 0.75, 1.0, 0.5, 0.25]
    """
    parts = tuple(schedulers)
    bounds = tuple(u.steps(f"milestones[{i}]", m, minimum=1) for i, m in enumerate(milestones))
    if len(bounds) != len(parts) - 1:
        raise ValueError(
            "Argument `milestones` must have len(schedulers) - 1 = "
            f"{len(parts) - 1} entries. Received: milestones={list(milestones)!r}"
        )
    return Sequence(parts, bounds) if bounds else parts[0]


def ReduceLROnPlateau(
    lr: float | SequenceType[float],
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float | SequenceType[float] = 0,
    eps: float = 1e-8,
) -> Plateau | list[Plateau]:
    """torch's ``ReduceLROnPlateau`` on a constant ``lr``: :func:`steadystep.plateau`.

    Feed metrics with ``steadystep.torch.Scheduler(opt, s).step(metric)``; the LRs equal
    torch's bit for bit. A list ``lr`` or ``min_lr`` (one per param group, torch's per-group
    ``min_lr``) gives a list of schedules, one per group.

    >>> ReduceLROnPlateau(0.1, patience=2)
    plateau(constant(value=0.1), patience=2)
    """
    many = [isinstance(v, SequenceType) and not isinstance(v, str) for v in (lr, min_lr)]
    lrs = list(lr) if many[0] else None  # type: ignore[arg-type]
    mins = list(min_lr) if many[1] else None  # type: ignore[arg-type]
    if lrs is not None and mins is not None and len(lrs) != len(mins):
        raise ValueError(
            f"Arguments `lr` and `min_lr` must have one entry per group each. "
            f"Received: {len(lrs)} lrs and {len(mins)} min_lrs"
        )
    n = len(lrs) if lrs is not None else len(mins) if mins is not None else 1
    out = [
        Plateau(
            Constant(_lr(lr if lrs is None else lrs[i])),
            factor=factor,
            patience=patience,
            mode=mode,
            threshold=threshold,
            threshold_mode=threshold_mode,
            cooldown=cooldown,
            min_lr=min_lr if mins is None else mins[i],  # type: ignore[arg-type]
            eps=eps,
        )
        for i in range(n)
    ]
    return out if any(many) else out[0]
