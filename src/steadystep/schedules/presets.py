"""Named recipes built from the primitives: BERT, Noam, WSD, one-cycle, SGDR.

Each returns an ordinary schedule (its ``repr`` shows the parts). Each name also works in spec
text: ``steadystep.parse("bert(1e-4, 10000, 1000)")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .. import _check as check
from ._base import Schedule
from ._combine import Minimum, Repeat, Sequence
from ._fractions import SEQUENTIAL, deferrable
from ._primitives import Constant, Cosine, Linear, OneMinusSqrt, Polynomial, Power
from ._retime import Retime
from ._spec import BUILDERS
from ._warmup import Warmup

COOLDOWNS: dict[str, Callable[[float, float, float], Schedule]] = {
    "linear": Linear,
    "cosine": Cosine,
    "1-sqrt": OneMinusSqrt,
}


@deferrable
def bert(init_lr: float, num_train_steps: int, num_warmup_steps: int) -> Schedule:
    """The BERT recipe (seed write-up ``000``): linear warmup from 0, then linear decay to 0.

    ``t < W``: ``init_lr * t / W``; otherwise ``polynomial_decay(init_lr, t, num_train_steps,
    end_learning_rate=0, power=1)`` on the same clock (the decay spans the whole run, warmup
    included, so the value just after warmup is ``init_lr * (1 - W / T)``).

    >>> s = bert(1e-4, num_train_steps=100, num_warmup_steps=10)
    >>> s(0), s(5), s(10), s(100)
    (0.0, 5e-05, 9e-05, 0.0)

    References: google-research/bert ``optimization.py`` (``create_optimizer``).
    """
    check.positive("init_lr", init_lr)
    total = check.integer("num_train_steps", num_train_steps, minimum=1)
    warm = check.integer("num_warmup_steps", num_warmup_steps, minimum=0)
    if warm > total:
        raise check.fail("num_warmup_steps", f"<= num_train_steps ({total})", num_warmup_steps)
    decay = Polynomial(init_lr, 0.0, total, power=1.0)
    return Warmup(decay, steps=warm, overlay=True) if warm else decay


def noam(max_lr: float, warmup_steps: int) -> Schedule:
    """Seed write-up ``004``'s formula, exactly: ``max_lr * min((t+1)/W, sqrt(W)/(t+1))``.

    Mind what this formula does: the two terms meet at ``t + 1 = W ** 0.75``, so the peak is
    ``max_lr * W ** -0.25`` (not ``max_lr``), reached well before step ``W``, and the decay goes
    as ``1/t``. The transformer paper's schedule is :func:`vaswani`. The seed also called it once
    per *epoch* with ``W`` meant in steps; to reproduce that, wrap it in
    ``from_epochs(..., steps_per_epoch=N, discrete=True)``.

    >>> s = noam(0.01, warmup_steps=500)
    >>> s(0) == 0.01 * 1 / 500
    True
    """
    check.positive("max_lr", max_lr)
    w = check.integer("warmup_steps", warmup_steps, minimum=1)
    return Minimum((Power(max_lr / w, 1.0, 1.0), Power(max_lr * math.sqrt(w), -1.0, 1.0)))


def vaswani(d_model: int, warmup_steps: int, factor: float = 1.0) -> Schedule:
    """The "Noam" schedule of the transformer paper, with ``n = t + 1``:
    ``factor * d_model ** -0.5 * min(n ** -0.5, n * warmup_steps ** -1.5)``.

    >>> s = vaswani(512, warmup_steps=4000)
    >>> round(max(s(t) for t in range(3990, 4010)) * 512 ** 0.5 * 4000 ** 0.5, 6)
    1.0

    References: Vaswani et al. 2017, "Attention Is All You Need", section 5.3.
    """
    d = check.integer("d_model", d_model, minimum=1)
    w = check.integer("warmup_steps", warmup_steps, minimum=1)
    c = check.positive("factor", factor) * d**-0.5
    return Minimum((Power(c, -0.5, 1.0), Power(c * w**-1.5, 1.0, 1.0)))


@deferrable
def wsd(
    peak: float,
    warmup_steps: int,
    stable_steps: int | None = None,
    decay_steps: int = 0,
    end: float = 0.0,
    cooldown: str = "1-sqrt",
) -> Schedule:
    """Warmup-stable-decay: linear warmup to ``peak``, hold, then a cooldown to ``end``.

    ``stable_steps=None`` leaves it open-ended (constant after warmup); when you know where to
    stop, build the full schedule (or :func:`append_cooldown`) and load it at resume: both agree
    on every step before the cooldown. Cooldowns: ``"linear"``, ``"cosine"``, ``"1-sqrt"``.

    >>> s = wsd(1.0, warmup_steps=10, stable_steps=80, decay_steps=10, cooldown="linear")
    >>> s(5), s(50), s(95), s(100)
    (0.5, 1.0, 0.5, 0.0)
    >>> open_ended = wsd(1.0, warmup_steps=10)
    >>> all(open_ended(t) == s(t) for t in range(90))
    True

    References: Hu et al. 2024 (MiniCPM, WSD); Hägele et al. 2024 (1-sqrt cooldown).
    """
    check.positive("peak", peak)
    warm = check.integer("warmup_steps", warmup_steps, minimum=0)
    check.choice("cooldown", cooldown, COOLDOWNS)
    body: Schedule
    if stable_steps is None:
        if decay_steps:
            raise check.fail("decay_steps", "0 when stable_steps is None (open-ended)", decay_steps)
        body = Constant(peak)
    else:
        stable = check.integer("stable_steps", stable_steps, minimum=0)
        decay = check.integer("decay_steps", decay_steps, minimum=1)
        tail = COOLDOWNS[cooldown](peak, end, decay)
        body = Sequence((Constant(peak, stable), tail)) if stable else tail
    return Warmup(body, steps=warm) if warm else body


@deferrable
def append_cooldown(
    schedule: Schedule, at_step: int, steps: int, end: float = 0.0, cooldown: str = "1-sqrt"
) -> Schedule:
    """``schedule`` until ``at_step``, then a cooldown from its value there to ``end``.

    The decay of an open-ended run, decided at resume time; equal to ``schedule`` before
    ``at_step``.

    >>> s = append_cooldown(wsd(1.0, warmup_steps=10), at_step=50, steps=10, cooldown="linear")
    >>> s(49), s(55), s(60)
    (1.0, 0.5, 0.0)
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"Argument `schedule` must be a schedule. Received: schedule={schedule!r}")
    at = check.integer("at_step", at_step, minimum=1)
    n = check.integer("steps", steps, minimum=1)
    check.choice("cooldown", cooldown, COOLDOWNS)
    tail = COOLDOWNS[cooldown](float(schedule(at)), end, n)
    return Sequence((schedule, tail), boundaries=(at,))


def change_run_length(schedule: Schedule, at_step: int, total_steps: int) -> Schedule:
    """``schedule`` until ``at_step``, then continued to end at ``total_steps`` instead.

    For a run whose length changes at resume (load the result with
    ``Scheduler.load_state_dict(state, schedule_changed_ok=True)``). Equal to ``schedule`` before
    ``at_step`` and continuous there (no jump in the value):

    - if ``at_step`` falls in a constant phase followed by others (WSD's stable phase), that
      phase is lengthened or shortened; the phases after it keep their lengths;
    - otherwise what is left of the schedule (the rest of a cosine, linear or polynomial
      decay, and anything after it) is stretched or squeezed over what is left of the new run:
      ``schedule(at + (t - at) * (L - at) / (total_steps - at))`` for ``t >= at``, ``L`` the old
      length (a linear decay stays linear, ending where it ended, ``total_steps - L`` later).

    >>> run = wsd(1.0, warmup_steps=10, stable_steps=80, decay_steps=10, cooldown="linear")
    >>> change_run_length(run, at_step=50, total_steps=150) == wsd(
    ...     1.0, warmup_steps=10, stable_steps=130, decay_steps=10, cooldown="linear")
    True
    >>> s = change_run_length(linear(1.0, 0.0, steps=100), at_step=50, total_steps=150)
    >>> s(49), s(50), s(100), s(150)
    (0.51, 0.5, 0.25, 0.0)
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"Argument `schedule` must be a schedule. Received: schedule={schedule!r}")
    if getattr(type(schedule), "relative_to_run", False):
        raise ValueError(
            f"Argument `schedule` gives lengths as fractions of the run: resolve it for the old "
            f"run first (steadystep.parse(spec, total_steps=N)). Received: schedule={schedule!r}"
        )
    length = schedule.length
    if length is None:
        raise ValueError(
            f"Argument `schedule` has no end to move (it is open-ended): {schedule!r}. "
            "Give it an end with append_cooldown(schedule, at_step, steps)."
        )
    at = check.integer("at_step", at_step, minimum=0)
    total = check.integer("total_steps", total_steps, minimum=1)
    if at >= length:
        raise check.fail("at_step", f"< the schedule's length ({length:g}): it has ended", at_step)
    if total <= at:
        raise check.fail("total_steps", f"> at_step ({at})", total_steps)
    held = _hold_longer(schedule, at, total - length)
    if held is not None:
        return held
    tail = Retime(schedule, offset=at, scale=(length - at) / (total - at))
    return Sequence((schedule, tail), boundaries=(at,)) if at else tail


def _hold_longer(s: Schedule, at: float, delta: float) -> Schedule | None:
    """``s`` with the constant phase that holds step ``at`` longer by ``delta``; None if none."""
    if isinstance(s, Warmup) and not s.overlay:
        if at < s.steps:
            return None
        inner = _hold_longer(s.schedule, at - s.steps, delta)
        return None if inner is None else Warmup(inner, s.steps, s.start, s.shape)
    if isinstance(s, Sequence) and s.natural:
        begin = 0.0
        for i, part in enumerate(s.parts):
            end = begin + (part.length or float("inf"))
            if at < end:
                if isinstance(part, Constant) and i < len(s.parts) - 1:
                    steps = (part.length or 0.0) + delta
                    if steps <= at - begin:  # the phase would end before the current step
                        return None
                    new: Schedule | None = Constant(part.value, steps)
                else:
                    new = _hold_longer(part, at - begin, delta)
                if new is None:
                    return None
                return Sequence((*s.parts[:i], new, *s.parts[i + 1 :]))
            begin = end
    return None


def _phase_steps(total_steps: int, pct_start: float, phases: int) -> int:
    check.number("pct_start", pct_start)
    if not 0 < pct_start < 1:
        raise check.fail("pct_start", "in (0, 1)", pct_start)
    up = round(pct_start * total_steps)
    if up < 1 or phases * up >= total_steps:
        raise check.fail(
            "pct_start",
            f"such that 1 <= round(pct_start * total_steps) < total_steps / {phases}",
            pct_start,
        )
    return up


@deferrable
def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cosine",
    three_phase: bool = False,
) -> Schedule:
    """Leslie Smith's one-cycle LR: up from ``max_lr / div_factor`` to ``max_lr`` over
    ``round(pct_start * total_steps)`` steps, then down to ``initial / final_div_factor``.

    ``three_phase`` goes back down to the initial value symmetrically before the final
    annealing. Same arguments as torch's ``OneCycleLR``; its exact values (which place the
    phase ends at fractional steps) are in ``steadystep.compat.torch``.

    >>> s = one_cycle(1.0, total_steps=100, anneal="linear")
    >>> s(0), s(30), s(100)
    (0.04, 1.0, 4e-06)

    References: Smith & Topin 2017, "Super-Convergence".
    """
    peak = check.positive("max_lr", max_lr)
    total = check.integer("total_steps", total_steps, minimum=2)
    initial = peak / check.positive("div_factor", div_factor)
    final = initial / check.positive("final_div_factor", final_div_factor)
    curve = COOLDOWNS[check.choice("anneal", anneal, ("cosine", "linear"))]
    up = _phase_steps(total, pct_start, 2 if check.flag("three_phase", three_phase) else 1)
    if three_phase:
        return Sequence(
            (
                curve(initial, peak, up),
                curve(peak, initial, up),
                curve(initial, final, total - 2 * up),
            )
        )
    return Sequence((curve(initial, peak, up), curve(peak, final, total - up)))


@deferrable
def one_cycle_momentum(
    total_steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal: str = "cosine",
    three_phase: bool = False,
) -> Schedule:
    """The momentum that goes with :func:`one_cycle`: down from ``max_momentum`` to
    ``base_momentum`` while the LR rises, back up while it falls. Use with
    ``steadystep.torch.Scheduler(..., param="momentum")`` (or ``"betas[0]"`` for Adam's beta1).

    >>> s = one_cycle_momentum(100, anneal="linear")
    >>> s(0), s(30), s(100)
    (0.95, 0.85, 0.95)
    """
    total = check.integer("total_steps", total_steps, minimum=2)
    low = check.positive("base_momentum", base_momentum)
    high = check.positive("max_momentum", max_momentum)
    if low > high:
        raise check.fail("base_momentum", f"<= max_momentum ({high!r})", base_momentum)
    curve = COOLDOWNS[check.choice("anneal", anneal, ("cosine", "linear"))]
    up = _phase_steps(total, pct_start, 2 if check.flag("three_phase", three_phase) else 1)
    if three_phase:
        return Sequence((curve(high, low, up), curve(low, high, up), Constant(high)))
    return Sequence((curve(high, low, up), curve(low, high, total - up)))


@deferrable
def sgdr(
    start: float,
    end: float,
    period: int,
    period_mul: float = 1.0,
    decay: float = 1.0,
    warmup_steps: int = 0,
    cycles: int | None = None,
) -> Schedule:
    """Cosine annealing with warm restarts; warmup (if any) only before the first cycle.

    Cycle ``i`` lasts ``period * period_mul**i`` steps and is scaled by ``decay**i``.

    >>> s = sgdr(1.0, 0.0, period=10, warmup_steps=5)
    >>> [round(s(t), 6) for t in (0, 5, 10, 14, 15)]  # restarts at 15, not warming up again
    [0.0, 1.0, 0.5, 0.024472, 1.0]

    References: Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts".
    """
    n = check.integer("period", period, minimum=1)
    body = Repeat(Cosine(start, end, n), times=cycles, decay=decay, stretch=period_mul)
    warm = check.integer("warmup_steps", warmup_steps, minimum=0)
    return Warmup(body, steps=warm) if warm else body


__all__ = [
    "append_cooldown",
    "bert",
    "change_run_length",
    "noam",
    "one_cycle",
    "one_cycle_momentum",
    "sgdr",
    "vaswani",
    "wsd",
]

BUILDERS.update({name: globals()[name] for name in __all__})
# preset lengths that follow one another in time (fraction(p, of="rest") shares what they leave)
SEQUENTIAL.update(
    wsd=("warmup_steps", "stable_steps", "decay_steps"), sgdr=("warmup_steps", "period")
)
