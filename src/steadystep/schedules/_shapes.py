"""Curves other libraries use that the primitives cannot compose exactly.

Each reproduces one library's arithmetic (its source file is cited) so that
``steadystep.compat`` can match it to rounding error: an unclamped cosine wave (transformers,
DeepSpeed, torch's ``CosineAnnealingLR`` stepped past ``T_max``), hard cosine restarts
(transformers), timm's restart cycles (cosine with ``k_decay``, tanh, poly), torch's
``CyclicLR``, a logarithmic ramp (DeepSpeed), an exponential ramp and RAdam's warmup factor
(``pytorch_warmup``), a constant offset, DeepSpeed's one-cycle stairs and linear factors, and
two host-evaluated shapes: timm's LR noise and schedules made of a Python callable (torch's
``LambdaLR``/``MultiplicativeLR``). (Their product is ``steadystep.product``.)
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import _check as check
from ._base import Array, Namespace, Schedule, is_numpy, power_of
from ._primitives import Span


def _set(obj: Schedule, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, repr=False)
class CosineWave(Span, spec_name="cosine_wave"):
    """A cosine wave that is not held at its end: ``end + (start - end) * c ** exponent`` with
    ``c = (1 + cos(2 * pi * cycles * (t + offset) / steps)) / 2``.

    With ``cycles=0.5`` it falls from ``start`` to ``end`` over ``steps`` and then, unlike
    :class:`~steadystep.Cosine`, rises again: this is what transformers'
    ``get_cosine_schedule_with_warmup`` and torch's ``CosineAnnealingLR`` do past the end.

    >>> s = cosine_wave(1.0, 0.0, steps=4)
    >>> [round(s(t), 12) for t in (0, 2, 4, 6, 8)]
    [1.0, 0.5, 0.0, 0.5, 1.0]

    References: transformers ``src/transformers/optimization.py``
    (``_get_cosine_schedule_with_warmup_lr_lambda``); optax ``cosine_decay_schedule``
    (``exponent``).
    """

    cycles: float = 0.5
    exponent: float = 1.0
    offset: float = 0.0
    positional = ("start", "end", "steps", "cycles", "exponent", "offset")

    def __post_init__(self) -> None:
        super().__post_init__()
        _set(self, "cycles", check.positive("cycles", self.cycles))
        _set(self, "exponent", check.positive("exponent", self.exponent))
        _set(self, "offset", check.number("offset", self.offset))

    @property
    def length(self) -> None:
        return None  # the wave goes on: it is not held at its end

    def _eval(self, t: Array, xp: Namespace) -> Array:
        c = 0.5 * (1.0 + xp.cos((2.0 * math.pi * self.cycles) * ((t + self.offset) / self.steps)))
        if self.exponent != 1:
            c = c**self.exponent
        return self.end + (self.start - self.end) * c


@dataclass(frozen=True, repr=False)
class CosineRestarts(Span, spec_name="cosine_restarts"):
    """``cycles`` equal half-cosines from ``start`` to ``end`` within ``steps``, then ``end``.

    With ``p = t / steps``: ``end`` if ``p >= 1``, else ``end + (start - end) * c`` where
    ``c = (1 + cos(pi * ((cycles * p) mod 1))) / 2`` (transformers' hard restarts, whose
    arithmetic this follows so that restarts land on the same steps).

    >>> s = cosine_restarts(1.0, 0.0, steps=4, cycles=2)
    >>> [round(s(t), 12) for t in range(5)]
    [1.0, 0.5, 1.0, 0.5, 0.0]

    References: transformers ``src/transformers/optimization.py``
    (``get_cosine_with_hard_restarts_schedule_with_warmup``).
    """

    cycles: int = 1
    positional = ("start", "end", "steps", "cycles")

    def __post_init__(self) -> None:
        super().__post_init__()
        _set(self, "cycles", check.positive("cycles", self.cycles))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        p = t / self.steps
        x = self.cycles * p
        c = 0.5 * (1.0 + xp.cos(math.pi * (x - xp.floor(x))))
        return xp.where(p >= 1.0, self.end, self.end + (self.start - self.end) * c)


@dataclass(frozen=True, repr=False)
class Shift(Schedule, spec_name="shift"):
    """A schedule plus a constant: ``schedule(t) + by`` (a floor that restarts do not decay).

    >>> shift(repeat(linear(1.0, 0.0, steps=2), decay=0.5), by=0.1)(2)
    0.6

    References: Keras ``CosineDecayRestarts`` (``alpha`` is added after ``m_mul`` scaling).
    """

    schedule: Schedule
    by: float
    positional = ("schedule", "by")

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"Argument `schedule` must be a schedule. Received: schedule={self.schedule!r}"
            )
        _set(self, "by", check.number("by", self.by))

    @property
    def length(self) -> float | None:
        return self.schedule.length

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.schedule._eval(t, xp) + self.by


CYCLE_CURVES = ("cosine", "tanh", "poly")


@dataclass(frozen=True, repr=False)
class Cycles(Span, spec_name="cycles"):
    """timm's restart cycles: cycle ``i`` lasts ``steps * mul**i``, peaks at ``start * decay**i``
    and falls towards the undecayed floor ``end``; after ``limit`` cycles the value is ``end``.

    With ``u = t + offset``, ``x = t_curr / t_i`` inside cycle ``i``, ``P = start * decay**i``:

    - ``"cosine"``: ``end + (P - end) * (1 + cos(pi * x**k)) / 2`` (``k``: k-decay)
    - ``"tanh"``: ``end + (P - end) * (1 - tanh(lb * (1 - x) + ub * x)) / 2``
    - ``"poly"``: ``end + (P - end) * (1 - x**k) ** power``

    >>> s = cycles(1.0, 0.0, steps=4, limit=2, decay=0.5)
    >>> [round(s(t), 12) for t in (0, 2, 4, 6, 8)]
    [1.0, 0.5, 0.5, 0.25, 0.0]

    References: timm ``timm/scheduler/cosine_lr.py``, ``tanh_lr.py``, ``poly_lr.py``
    (``_get_lr``); Hsueh et al. 2019 (tanh decay); Zhang & Li 2020 (k-decay).
    """

    curve: str = "cosine"
    mul: float = 1.0
    decay: float = 1.0
    limit: int = 1
    k: float = 1.0
    power: float = 1.0
    lb: float = -7.0
    ub: float = 3.0
    offset: float = 0.0
    positional = ("start", "end", "steps", "curve")

    def __post_init__(self) -> None:
        super().__post_init__()
        check.choice("curve", self.curve, CYCLE_CURVES)
        mul = check.number("mul", self.mul)
        if mul < 1:
            raise check.fail("mul", ">= 1 (shrinking cycles end after finitely many steps)", mul)
        _set(self, "mul", mul)
        _set(self, "decay", check.positive("decay", self.decay))
        _set(self, "limit", check.integer("limit", self.limit, minimum=1))
        _set(self, "k", check.positive("k", self.k))
        _set(self, "power", check.positive("power", self.power))
        _set(self, "lb", check.number("lb", self.lb))
        _set(self, "ub", check.number("ub", self.ub))
        if not self.lb < self.ub:
            raise check.fail("lb", f"< ub ({self.ub!r})", self.lb)
        _set(self, "offset", check.nonnegative("offset", self.offset))

    @property
    def length(self) -> float:
        m, n = self.mul, self.limit
        total = self.steps * n if m == 1 else self.steps * (m**n - 1.0) / (m - 1.0)
        return max(total - self.offset, 0.0)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        u = t + self.offset
        m = self.mul
        if m != 1:
            i = xp.floor(xp.log(1.0 - u / self.steps * (1.0 - m)) / math.log(m))
            t_i = m**i * self.steps
            t_curr = u - (1.0 - m**i) / (1.0 - m) * self.steps
        else:
            i = xp.floor(u / self.steps)
            t_i = self.steps
            t_curr = u - self.steps * i
        t_curr = xp.maximum(t_curr, 0.0)
        peak = self.start * power_of(self.decay, i, xp)
        if self.curve == "tanh":
            x = t_curr / t_i
            f = 0.5 * (1.0 - xp.tanh(self.lb * (1.0 - x) + self.ub * x))
        else:
            x = xp.clip(t_curr**self.k / t_i**self.k, 0.0, 1.0)
            if self.curve == "cosine":
                f = 0.5 * (1.0 + xp.cos(math.pi * x))
            else:
                f = (1.0 - x) ** self.power
        return xp.where(i < self.limit, self.end + (peak - self.end) * f, self.end)


CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


@dataclass(frozen=True, repr=False)
class Cyclic(Schedule, spec_name="cyclic"):
    """torch's ``CyclicLR``: triangles between ``base`` and ``peak`` (``up`` steps rising,
    ``down`` falling), the height scaled per ``mode``.

    With ``T = up + down``, ``cycle = floor(1 + t / T)``, ``x = 1 + t / T - cycle``, the height
    fraction ``h = x / r`` if ``x <= r`` else ``(x - 1) / (r - 1)`` (``r = up / T``); the value is
    ``base + (peak - base) * h * g`` with ``g = 1`` (triangular), ``1 / 2**(cycle - 1)``
    (triangular2) or ``gamma**t`` (exp_range). ``peak < base`` gives the mirrored (momentum)
    curve.

    >>> s = cyclic(0.0, 1.0, up=2, down=2, mode="triangular2")
    >>> [s(t) for t in range(7)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5]

    References: torch ``torch/optim/lr_scheduler.py`` (``CyclicLR``); Smith 2017, "Cyclical
    Learning Rates for Training Neural Networks".
    """

    base: float
    peak: float
    up: float
    down: float
    mode: str = "triangular"
    gamma: float = 1.0
    positional = ("base", "peak", "up", "down", "mode", "gamma")

    def __post_init__(self) -> None:
        _set(self, "base", check.number("base", self.base))
        _set(self, "peak", check.number("peak", self.peak))
        _set(self, "up", check.positive("up", self.up))
        _set(self, "down", check.positive("down", self.down))
        check.choice("mode", self.mode, CYCLIC_MODES)
        _set(self, "gamma", check.positive("gamma", self.gamma))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        total = self.up + self.down
        ratio = self.up / total
        cycle = xp.floor(1.0 + t / total)
        x = 1.0 + t / total - cycle
        h = xp.where(x <= ratio, x / ratio, (x - 1.0) / (ratio - 1.0))
        height = (self.peak - self.base) * h
        if self.mode == "triangular2":
            height = height * power_of(0.5, cycle - 1.0, xp)  # = 1 / 2**(cycle-1), no overflow
        elif self.mode == "exp_range":
            height = height * power_of(self.gamma, t, xp)
        return self.base + height


@dataclass(frozen=True, repr=False)
class LogRamp(Span, spec_name="log_ramp"):
    """A logarithmic warmup: ``start + (end - start) * min(1, log(t + 1) / log(steps))``.

    Reaches ``end`` at ``t = steps - 1`` (DeepSpeed's ``warmup_type="log"``).

    >>> s = log_ramp(0.0, 1.0, steps=4)
    >>> [round(s(t), 12) for t in (0, 1, 3, 9)]
    [0.0, 0.5, 1.0, 1.0]

    References: DeepSpeed ``deepspeed/runtime/lr_schedules.py`` (``WarmupLR._get_gamma``).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 2:
            raise check.fail("steps", ">= 2 (log(1) = 0)", self.steps)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        gamma = xp.minimum(xp.log(t + 1.0) / math.log(self.steps), 1.0)
        return self.start + (self.end - self.start) * gamma


@dataclass(frozen=True, repr=False)
class ExponentialRamp(Schedule, spec_name="exponential_ramp"):
    """``end * (1 - exp(-(t + offset) / tau))``: rises towards ``end`` with time constant ``tau``.

    With ``offset=1`` this is ``pytorch_warmup.ExponentialWarmup``'s factor.

    >>> s = exponential_ramp(1.0, tau=2.0)
    >>> s(0), round(s(2), 6)
    (0.0, 0.632121)

    References: Ma & Yarats 2021, "On the Adequacy of Untuned Warmup for Adaptive
    Optimization"; ``pytorch_warmup/base.py`` (``ExponentialWarmup.warmup_factor``).
    """

    end: float
    tau: float
    offset: float = 0.0
    positional = ("end", "tau", "offset")

    def __post_init__(self) -> None:
        _set(self, "end", check.number("end", self.end))
        _set(self, "tau", check.positive("tau", self.tau))
        _set(self, "offset", check.nonnegative("offset", self.offset))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        return self.end * (1.0 - xp.exp(-(t + self.offset) / self.tau))


def _radam_rho(t: float, beta2: float) -> float:
    b2t: float = beta2**t
    return (2.0 / (1.0 - beta2) - 1.0) - 2.0 * t * b2t / (1.0 - b2t)


@dataclass(frozen=True, repr=False)
class RAdamWarmup(Schedule, spec_name="radam_warmup"):
    """RAdam's variance-rectification factor used as a warmup, at step ``t + offset``:
    ``sqrt((rho - 4) (rho - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho))`` with
    ``rho_inf = 2 / (1 - beta2) - 1`` and ``rho = rho_inf - 2 n beta2**n / (1 - beta2**n)``.

    ``offset=None`` picks the smallest step with ``rho > 4`` (as ``pytorch_warmup`` does).

    >>> s = radam_warmup(0.999)
    >>> s.offset, round(s(0), 6), round(s(100_000), 6)
    (5, 0.017312, 1.0)

    References: Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond";
    ``pytorch_warmup/radam.py``.
    """

    beta2: float = 0.999
    offset: int | None = None
    positional = ("beta2", "offset")

    def __post_init__(self) -> None:
        beta2 = check.number("beta2", self.beta2)
        if not 0.6 < beta2 < 1:
            raise check.fail("beta2", "in (0.6, 1)", self.beta2)
        _set(self, "beta2", beta2)
        if self.offset is None:
            offset = 1
            while _radam_rho(offset, beta2) <= 4:
                offset += 1
            _set(self, "offset", offset)
        else:
            offset = check.integer("offset", self.offset, minimum=1)
            if _radam_rho(offset, beta2) <= 4:
                raise check.fail("offset", "a step where rho > 4", offset)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        # rho = rho_inf - 2 n b^n / (1 - b^n) subtracts two numbers ~ 2 / (1 - b): in float32
        # that is percent-level wrong near the start. The same value, written as
        # rho = 2 D / ((1 - b) S) - 1 with S = (1 - b^n) / (1 - b) (from expm1) and
        # D = S - n b^n, cancels far less.
        b2 = self.beta2
        q = 1.0 - b2
        rho_inf = 2.0 / q - 1.0
        n = t + float(self.offset)  # type: ignore[arg-type]
        x = n * math.log(b2)
        total = -xp.expm1(x) / q
        rho = 2.0 * (total - n * xp.exp(x)) / (q * total) - 1.0
        return xp.sqrt(
            (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
        )


@dataclass(frozen=True, repr=False)
class StairCycle(Schedule, spec_name="stair_cycle"):
    """DeepSpeed's ``OneCycle`` triangle, optionally in stairs: from ``base`` to ``peak`` over
    ``up`` steps and back over ``down`` (``down=0``: a saw tooth), repeating every
    ``up + down``.

    With ``T = up + down``, ``x = 1 + t / T - floor(1 + t / T)`` and ``r = up / T``, the
    continuous height is ``h = x / r`` if ``x <= r`` else ``(x - 1) / (r - 1)``. With ``n``
    stairs (``up_stairs`` while ``x <= r``, else ``down_stairs``; 0 means continuous) and
    ``c = t mod T``, ``h = floor(p) / n`` where ``p = c * n / up`` if ``c <= up`` else
    ``(T - c) * n / down``. The value is ``base + (peak - base) * h``; ``peak < base`` gives
    the momentum curve.

    >>> s = stair_cycle(0.0, 1.0, up=4, down=4, up_stairs=2, down_stairs=2)
    >>> [s(t) for t in range(9)]
    [0.0, 0.0, 0.5, 0.5, 1.0, 0.5, 0.5, 0.0, 0.0]

    References: DeepSpeed ``deepspeed/runtime/lr_schedules.py`` (``OneCycle._get_scale_factor``).
    """

    base: float
    peak: float
    up: float
    down: float
    up_stairs: int = 0
    down_stairs: int = 0
    positional = ("base", "peak", "up", "down", "up_stairs", "down_stairs")

    def __post_init__(self) -> None:
        _set(self, "base", check.number("base", self.base))
        _set(self, "peak", check.number("peak", self.peak))
        _set(self, "up", check.positive("up", self.up))
        _set(self, "down", check.nonnegative("down", self.down))
        _set(self, "up_stairs", check.integer("up_stairs", self.up_stairs))
        _set(self, "down_stairs", check.integer("down_stairs", self.down_stairs))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        total = self.up + self.down
        ratio = self.up / total
        cycle = xp.floor(1.0 + t / total)
        x = 1.0 + t / total - cycle
        rising = x <= ratio
        h = x / ratio
        if self.down > 0:
            h = xp.where(rising, h, (x - 1.0) / (ratio - 1.0))
        if self.up_stairs or self.down_stairs:
            n = xp.where(rising, float(self.up_stairs), float(self.down_stairs))
            c = xp.remainder(t, total)
            p = c * n / self.up
            if self.down > 0:
                p = xp.where(c <= self.up, p, (total - c) * n / self.down)
            stairs = xp.floor(p) / xp.where(n > 0, n, 1.0)
            h = xp.where(n > 0, stairs, h)
        return self.base + (self.peak - self.base) * h


@dataclass(frozen=True, repr=False)
class LinearFactor(Schedule, spec_name="linear_factor"):
    """``start * f`` (or ``start / f`` with ``inverse=True``) where ``f = 1 + rate * q`` and
    ``q = t / every`` (``floor(t / every)`` with ``stairs=True``).

    DeepSpeed's LR range test (``start * f``) and ``OneCycle``'s post-cycle phase (LR
    ``start / f``, momentum ``start * f``).

    >>> s = linear_factor(1.0, rate=1.0, every=2)
    >>> s(0), s(1), s(4), linear_factor(1.0, 1.0, 2, stairs=True)(3)
    (1.0, 1.5, 3.0, 2.0)
    >>> linear_factor(1.0, 1.0, 2, inverse=True)(2)
    0.5

    References: DeepSpeed ``deepspeed/runtime/lr_schedules.py`` (``LRRangeTest._get_increase``,
    ``OneCycle._get_decay_lr``, ``OneCycle._get_decay_mom``).
    """

    start: float
    rate: float
    every: float
    stairs: bool = False
    inverse: bool = False
    positional = ("start", "rate", "every", "stairs", "inverse")

    def __post_init__(self) -> None:
        _set(self, "start", check.number("start", self.start))
        _set(self, "rate", check.nonnegative("rate", self.rate))
        _set(self, "every", check.positive("every", self.every))
        check.flag("stairs", self.stairs)
        check.flag("inverse", self.inverse)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        q = xp.floor(t / self.every) if self.stairs else t / self.every
        f = 1.0 + self.rate * q
        return self.start / f if self.inverse else self.start * f


@functools.lru_cache(maxsize=65536)
def _torch_randn_until(seed: int, std: float, pct: float) -> float:
    """The first ``x * std`` with ``|x * std| < pct``, ``x`` drawn by
    ``torch.randn(1, generator=g)`` after ``g.manual_seed(seed)`` on the CPU, without torch.

    torch's CPU generator is MT19937 seeded with the low 32 bits of the seed (NumPy's legacy
    ``RandomState`` seeding is the same ``init_genrand``, read here through its public
    ``get_state``); a one-element ``randn`` takes two 53-bit doubles ``u1, u2`` (each from two
    32-bit words, high word first) and returns ``r cos(theta)`` as float32 with
    ``r = sqrt(-2 log1p(-u2))``, ``theta = 2 pi u1``, keeping ``r sin(theta)`` for the next call.
    """
    key = np.random.RandomState(seed % 2**32).get_state(legacy=True)[1]  # type: ignore[index]
    words = random.Random()
    words.setstate((3, (*(int(k) for k in key), 624), None))

    def uniform() -> float:
        hi, lo = words.getrandbits(32), words.getrandbits(32)
        return (((hi << 32) | lo) & (2**53 - 1)) * 2.0**-53

    while True:
        u1, u2 = uniform(), uniform()
        r = math.sqrt(-2.0 * math.log1p(-u2))
        for x in (r * math.cos(2.0 * math.pi * u1), r * math.sin(2.0 * math.pi * u1)):
            noise = float(np.float32(x)) * std
            if abs(noise) < pct:
                return noise


@dataclass(frozen=True, repr=False)
class TimmNoise(Schedule, spec_name="timm_noise"):
    """timm's LR noise on a schedule: ``v + v * n(t)`` for ``start <= t < end`` (``end=None``:
    no end), ``v = schedule(t)``, where ``n(t)`` is the first normal draw times ``std`` with
    ``|n| < pct`` from a torch CPU generator seeded with ``seed + t``.

    A pure function of the step, reproduced bit for bit without torch (see
    ``_torch_randn_until``). It is computed on the host: Python and NumPy steps only (a torch
    or JAX array raises ``TypeError``; ``steadystep.torch.Scheduler`` evaluates on NumPy).

    >>> s = timm_noise(constant(1.0), start=1, pct=0.67, std=1.0, seed=42)
    >>> s(0), round(s(1), 6), round(s(2), 6)
    (1.0, 0.351599, 1.058945)

    References: timm ``timm/scheduler/scheduler.py`` (``Scheduler._add_noise``,
    ``_calculate_noise``).
    """

    #: evaluated in Python on the host: no torch or JAX array steps (see the docstring)
    host_only: ClassVar[bool] = True
    schedule: Schedule
    start: int = 0
    end: int | None = None
    pct: float = 0.67
    std: float = 1.0
    seed: int = 42
    positional = ("schedule",)

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"Argument `schedule` must be a schedule. Received: schedule={self.schedule!r}"
            )
        _set(self, "start", check.integer("start", self.start))
        if self.end is not None:
            _set(self, "end", check.integer("end", self.end, minimum=self.start))
        _set(self, "pct", check.positive("pct", self.pct))
        _set(self, "std", check.nonnegative("std", self.std))
        _set(self, "seed", check.integer("seed", self.seed, minimum=-(2**63)))

    @property
    def length(self) -> float | None:
        return None if self.end is None else max(self.end, self.schedule.length or 0)

    def _eval(self, t: Array, xp: Namespace) -> Array:
        if not is_numpy(xp):
            raise TypeError(
                "timm's LR noise (noise_range_t) is computed on the host: evaluate this "
                "schedule at Python or NumPy steps, not at a torch or JAX array"
            )
        v = np.array(self.schedule._eval(t, xp), dtype=np.float64)
        steps = np.broadcast_to(t, v.shape)
        flat, at = v.reshape(-1), steps.reshape(-1)
        for i in np.flatnonzero(
            (at >= self.start) & (at < (math.inf if self.end is None else self.end))
        ):
            noise = _torch_randn_until(self.seed + int(at[i]), self.std, self.pct)
            flat[i] = flat[i] + flat[i] * noise
        return flat.reshape(v.shape)


FUNCTION_KINDS = ("value", "product", "cycle")
_CHECKPOINT = 1024  # steps between cached running products of a "product" function


def _callable_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


@dataclass(frozen=True, repr=False)
class PythonFunction(Schedule, spec_name="python_function"):
    """A schedule made of a Python callable ``fn`` of the step (torch's ``LambdaLR``,
    ``MultiplicativeLR``, ``CyclicLR(scale_fn=...)``), evaluated on the host:

    - ``"value"``: ``scale * fn(t)``;
    - ``"product"``: ``scale * fn(1) * fn(2) * ... * fn(t)``, multiplied left to right as torch
      does, from running products cached every 1024 steps (each use re-calls ``fn`` at the
      cached step and raises if it changed: ``fn`` must be a function of the step alone);
    - ``"cycle"``: ``scale * fn(floor(1 + t / period))`` (``CyclicLR``'s ``scale_mode="cycle"``).

    A callable is not spec text: ``repr`` names it (``name``) and records its first values
    (``probe``) so that a resumed run can check it was rebuilt with the same function, but the
    text alone cannot evaluate (``fn`` is None after :func:`steadystep.parse`).

    >>> s = python_function(lambda t: 0.5**t, "product", scale=2.0)
    >>> s(0), s(1), s(3)
    (2.0, 1.0, 0.03125)
    """

    host_only: ClassVar[bool] = True
    fn: Any
    kind: str = "value"
    scale: float = 1.0
    period: float = 1.0
    name: str = ""
    probe: tuple[float, ...] = ()
    positional = ("fn", "kind")

    def __post_init__(self) -> None:
        check.choice("kind", self.kind, FUNCTION_KINDS)
        _set(self, "scale", check.number("scale", self.scale))
        _set(self, "period", check.positive("period", self.period))
        if not isinstance(self.name, str):
            raise TypeError(f"Argument `name` must be a string. Received: name={self.name!r}")
        if self.fn is None:  # rebuilt from spec text: an identity for comparison only
            _set(self, "probe", check.numbers_tuple("probe", self.probe))
            return
        if not callable(self.fn):
            raise TypeError(
                f"Argument `fn` must be a callable of the step. Received: fn={self.fn!r}"
            )
        _set(self, "name", self.name or _callable_name(self.fn))
        first = 1 if self.kind != "value" else 0
        _set(self, "probe", tuple(self._call(k) for k in range(first, first + 4)))
        _set(self, "_cache", ([self.scale], [1.0]))  # running products, factor at each

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PythonFunction):
            return NotImplemented
        return (self.kind, self.scale, self.period, self.name, self.probe) == (
            other.kind,
            other.scale,
            other.period,
            other.name,
            other.probe,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.scale, self.period, self.name, self.probe))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["fn"] = None
        return out

    def __repr__(self) -> str:
        fields = f"kind={self.kind!r}, scale={self.scale!r}, period={self.period!r}"
        return f"python_function(None, {fields}, name={self.name!r}, probe={list(self.probe)!r})"

    def _call(self, step: int) -> float:
        value = self.fn(step)
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"{self.name}({step}) must return a number. Received: {value!r}"
            ) from None
        if not math.isfinite(out):
            raise ValueError(f"{self.name}({step}) must return a finite number. Received: {out!r}")
        return out

    def _product(self, steps: list[int]) -> dict[int, float]:
        """``scale * fn(1) * ... * fn(t)`` for each ``t`` in ``steps`` (sorted, unique)."""
        products, factors = self._cache  # type: ignore[attr-defined]
        out: dict[int, float] = {}
        at, p = -1, 0.0
        for t in steps:
            c = t // _CHECKPOINT
            if not (0 <= at <= t and at // _CHECKPOINT == c):
                while len(products) <= c:  # extend the cache to checkpoint c, once
                    q, start = products[-1], (len(products) - 1) * _CHECKPOINT
                    for k in range(start + 1, start + _CHECKPOINT + 1):
                        q = q * self._call(k)
                    products.append(q)
                    factors.append(self._call(start + _CHECKPOINT))
                if c and self._call(c * _CHECKPOINT) != factors[c]:
                    raise ValueError(
                        f"{self.name} gave a different value at step {c * _CHECKPOINT} than "
                        "before: a multiplicative schedule needs a function of the step alone"
                    )
                at, p = c * _CHECKPOINT, products[c]
            for k in range(at + 1, t + 1):
                p = p * self._call(k)
            at = t
            out[t] = p
        return out

    def _eval(self, t: Array, xp: Namespace) -> Array:
        if self.fn is None:
            raise ValueError(
                f"This python_function schedule ({self.name}) was read from text and has no "
                "callable: rebuild it from the function (e.g. compat.torch.LambdaLR(lr, fn))"
            )
        if not is_numpy(xp):
            raise TypeError(
                f"A schedule made of a Python callable ({self.name}) is evaluated on the host: "
                "call it at Python or NumPy steps, not at a torch or JAX array"
            )
        steps = np.asarray(t, dtype=np.float64)
        unique = sorted({int(v) for v in steps.reshape(-1)})
        if self.kind == "product":
            values = self._product(unique)
        elif self.kind == "cycle":
            values = {v: self.scale * self._call(math.floor(1 + v / self.period)) for v in unique}
        else:
            values = {v: self.scale * self._call(v) for v in unique}
        flat = np.array([values[int(v)] for v in steps.reshape(-1)], dtype=np.float64)
        return flat.reshape(steps.shape)


cosine_wave = CosineWave
cosine_restarts = CosineRestarts
shift = Shift
cycles = Cycles
cyclic = Cyclic
log_ramp = LogRamp
exponential_ramp = ExponentialRamp
radam_warmup = RAdamWarmup
stair_cycle = StairCycle
linear_factor = LinearFactor
timm_noise = TimmNoise
python_function = PythonFunction

__all__ = [
    "CosineRestarts",
    "CosineWave",
    "Cycles",
    "Cyclic",
    "ExponentialRamp",
    "LinearFactor",
    "LogRamp",
    "PythonFunction",
    "RAdamWarmup",
    "Shift",
    "StairCycle",
    "TimmNoise",
    "cosine_restarts",
    "cosine_wave",
    "cycles",
    "cyclic",
    "exponential_ramp",
    "linear_factor",
    "log_ramp",
    "python_function",
    "radam_warmup",
    "shift",
    "stair_cycle",
    "timm_noise",
]
