"""The :class:`Schedule` base: a frozen value that maps a step to a number on any array backend.

Step convention (stated once, used everywhere): ``schedule(t)`` is the value used for the update
that has ``t`` updates before it, so ``t = 0`` is the first update.

Every schedule is written once, against the Array API (via ``array-api-compat``), and evaluated on
Python numbers, NumPy arrays, torch tensors (on their device, without a host sync) and JAX arrays
(also under ``jax.jit``). Branches use ``where``/``clip``, never a Python ``if`` on the step.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import array_api_compat as aac
import numpy as np

Array = Any  # an array of some Array-API namespace (NumPy, torch, JAX)
Namespace = Any

# spec name -> schedule class; filled by ``Schedule.__init_subclass__``
REGISTRY: dict[str, type[Schedule]] = {}

_NUMPY = aac.array_namespace(np.zeros(0))


def is_numpy(xp: Namespace) -> bool:
    return bool(aac.is_numpy_namespace(xp))


def lerp(a: float, b: float, x: Array, xp: Namespace) -> Array:
    """``a + (b - a) * x`` for ``x`` in [0, 1]: monotone, exactly ``a`` at 0 and ``b`` at 1.

    (``a * (1 - x) + b * x`` is exact at both ends but not monotone, and wobbles when
    ``a == b``; the one-sided form can miss ``b`` by an ulp. This is the usual fix, as in C++20
    ``std::lerp``.)
    """
    v = a + (b - a) * x
    if is_numpy(xp) and a + (b - a) == b:
        return v  # float64 already lands on b at x = 1, and rounding is monotone: nothing to fix
    v = xp.minimum(v, b) if b >= a else xp.maximum(v, b)
    return xp.where(x >= 1.0, b, v)


def power_of(base: float, p: Array, xp: Namespace) -> Array:
    """``base ** p`` for a constant ``base > 0``.

    In float32, ``base ** p`` first rounds ``base`` (0.999 -> 0.99900001), an error ``p`` times
    larger in the result (2e-4 at p = 16000); ``exp(p * log(base))`` with the log in float64
    keeps float32 to ~1e-6. Float64 keeps the direct power (exact for whole ``p``).
    """
    if p.dtype == xp.float64:
        return base**p
    return xp.exp(p * math.log(base))


def floor_div(t: Array, d: float, xp: Namespace) -> Array:
    """``floor(t / d)``, exact at multiples of ``d`` on every backend.

    XLA (and fast-math CUDA kernels) may divide as ``t * (1 / d)``, which can land a hair under
    an integer exactly at a boundary; settle the quotient with exact multiplications.
    """
    q = xp.floor(t / d)
    q = xp.where((q + 1.0) * d <= t, q + 1.0, q)
    return xp.where(q * d > t, q - 1.0, q)


def ceil_div(t: Array, d: float, xp: Namespace) -> Array:
    """``ceil(t / d)``, exact at multiples of ``d`` (see :func:`floor_div`)."""
    q = xp.ceil(t / d)
    q = xp.where((q - 1.0) * d >= t, q - 1.0, q)
    return xp.where(q * d < t, q + 1.0, q)


def by_interval(
    t: Array, xp: Namespace, cuts: tuple[float, ...], branches: list[Callable[[Array], Array]]
) -> Array:
    """``branches[i](t)`` where ``cuts[i-1] <= t < cuts[i]`` (``len(branches) == len(cuts) + 1``).

    NumPy evaluates each branch only on its own elements (one pass per element, however many
    branches); other backends evaluate every branch and select with ``where``, which keeps
    shapes static for ``jit`` and CUDA graphs. Branches must be safe on any ``t >= 0``.
    """
    if is_numpy(xp) and t.ndim > 0:
        out = np.empty_like(t)
        if t.ndim == 1 and bool(np.all(t[1:] >= t[:-1])):  # sorted steps: slices, no copies
            ends = [0, *np.searchsorted(t, cuts, side="left").tolist(), t.size]
            for i, branch in enumerate(branches):
                if ends[i] < ends[i + 1]:
                    out[ends[i] : ends[i + 1]] = branch(t[ends[i] : ends[i + 1]])
            return out
        index = np.searchsorted(np.asarray(cuts, dtype=np.float64), t, side="right")
        for i, branch in enumerate(branches):
            mask = index == i
            if mask.any():
                out[mask] = branch(t[mask])
        return out
    out = branches[-1](t)
    for i in range(len(cuts) - 1, -1, -1):
        out = xp.where(t < cuts[i], branches[i](t), out)
    return out


class Schedule:
    """A learning-rate (or any hyperparameter) schedule: a pure, immutable function of the step.

    Subclasses are frozen dataclasses; their fields are the schedule's whole state. Equality is
    structural, ``repr`` is valid spec text (``steadystep.parse(repr(s)) == s``) and
    :meth:`to_dict` gives a JSON-safe form that :func:`steadystep.parse` also accepts.

    Composition::

        a >> b      # b starts (at its own step 0) where a ends
        s * 0.5     # scaled values
    """

    spec_name: ClassVar[str] = ""
    #: field names that may be given positionally in spec text, in order
    positional: ClassVar[tuple[str, ...]] = ()
    #: spec precedence for printing: 0 atom/call, 1 product, 2 sequence
    precedence: ClassVar[int] = 0

    def __init_subclass__(cls, spec_name: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec_name:
            if spec_name in REGISTRY:
                raise RuntimeError(f"schedule name {spec_name!r} registered twice")
            cls.spec_name = spec_name
            REGISTRY[spec_name] = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> Schedule:
        # a length relative to the run (``fraction(0.1)``): keep the call until the total is known
        if args or kwargs:
            from ._fractions import defer, mentions_run

            if mentions_run(args) or mentions_run(kwargs.values()):
                return defer(cls, args, kwargs)
        return super().__new__(cls)

    # -- evaluation ---------------------------------------------------------------------------
    def __call__(self, step: Any) -> Any:
        """Value at ``step`` (int, NumPy array, torch tensor or JAX array of update counts).

        Python numbers give a Python ``float``; arrays give an array of the same namespace and
        shape, computed in float64 where the backend has it (JAX without x64: float32). Steps
        must be whole numbers >= 0; NumPy, Python and CPU-torch inputs are checked, device and
        traced arrays are not (checking them would force a host sync).
        """
        t, xp, finish = _prepare_steps(step)
        return finish(self._eval(t, xp))

    def _eval(self, t: Array, xp: Namespace) -> Array:
        """Values at float steps ``t >= 0`` (possibly fractional, e.g. inside ``repeat``)."""
        raise NotImplementedError

    @property
    def length(self) -> float | None:
        """Number of steps the schedule spans before holding its final value; None if open."""
        return None

    # -- composition ----------------------------------------------------------------------------
    def __rshift__(self, other: Schedule) -> Schedule:
        from ._combine import sequence

        if not isinstance(other, Schedule):
            return NotImplemented
        return sequence([self, other])

    def __mul__(self, factor: float) -> Schedule:
        from ._combine import Scale

        if isinstance(factor, Schedule) or not isinstance(factor, numbers.Real):
            return NotImplemented
        return Scale(self, factor)

    __rmul__ = __mul__

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: ``{"type": name, field: value, ...}``, nested for child schedules."""
        out: dict[str, Any] = {"type": self.spec_name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _to_plain(getattr(self, f.name))
        return out

    def __repr__(self) -> str:
        from ._spec import format_spec

        return format_spec(self)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Schedule):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


# -- step preparation ---------------------------------------------------------------------------
def _bad_step(message: str, value: Any) -> ValueError:
    return ValueError(f"Argument `step` must be {message}. Received: step={value!r}")


def _prepare_steps(step: Any) -> tuple[Array, Namespace, Callable[[Array], Any]]:
    if isinstance(step, (bool, np.bool_)):
        raise TypeError(f"Argument `step` must be a number or an array. Received: step={step!r}")
    if isinstance(step, numbers.Real):
        value = float(step)
        if not math.isfinite(value) or value != math.floor(value):
            raise _bad_step("a whole number", step)
        if value < 0:
            raise _bad_step(">= 0", step)
        return np.asarray(value, dtype=np.float64), _NUMPY, float
    if isinstance(step, np.ndarray):
        return _prepare_numpy(step)
    try:
        xp = aac.array_namespace(step)
    except TypeError:
        raise TypeError(
            "Argument `step` must be a number or an array (NumPy, torch, JAX). "
            f"Received: step={step!r} of type {type(step).__name__}"
        ) from None
    if xp.isdtype(step.dtype, "bool") or not xp.isdtype(step.dtype, ("integral", "real floating")):
        raise TypeError(
            f"Argument `step` must hold integers or floats. Received dtype {step.dtype}"
        )
    dtype = _float_dtype(xp, step)
    if aac.is_torch_namespace(xp) and step.device.type == "cpu" and bool((step < 0).any()):
        raise _bad_step(">= 0", step)
    t = step if step.dtype == dtype else xp.astype(step, dtype)
    return t, xp, _identity


def _identity(x: Array) -> Array:
    return x


def _prepare_numpy(step: np.ndarray[Any, Any]) -> tuple[Array, Namespace, Callable[[Array], Any]]:
    kind = step.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"Argument `step` must hold integers or floats. Received dtype {step.dtype}"
        )
    t = step.astype(np.float64, copy=False)
    if kind == "f":
        bad = ~np.isfinite(t) | (t != np.floor(t))
        if bad.any():
            raise _bad_step("whole numbers", step[bad].flat[0].item())
    if kind != "u" and (t < 0).any():
        raise _bad_step(">= 0", step[t < 0].flat[0].item())
    return t, _NUMPY, _identity


def _float_dtype(xp: Namespace, x: Array) -> Any:
    if xp.isdtype(x.dtype, "real floating"):
        return x.dtype
    if aac.is_jax_namespace(xp):
        import jax

        return xp.float64 if jax.config.read("jax_enable_x64") else xp.float32  # type: ignore[no-untyped-call]
    if aac.is_torch_namespace(xp) and x.device.type == "mps":
        return xp.float32
    return xp.float64
