"""Lengths written relative to the run: ``fraction(0.06)`` steps, resolved once the total is known.

A schedule or preset given a :class:`RunFraction` anywhere among its lengths is not built at once:
it becomes an :class:`Unresolved` value (still frozen, comparable, printable and parseable) that
remembers the call. ``parse(spec, total_steps=N)`` (or ``unresolved.resolve(N)``) builds the
plain schedule, with each fraction rounded to the nearest whole step:

- ``fraction(p)``: ``p`` of the whole run, ``round(p * N)`` steps (half up);
- ``fraction(p, of="rest")``: ``p`` of what is left (rounded down) of the span it sits in once
  the other lengths there are counted: inside ``warmup(s, steps=w)`` the schedule ``s`` has
  ``N - w`` steps left; in ``a >> b`` a part has what the other parts leave; in ``wsd(...)`` a
  phase has what the other two phases leave.

>>> import steadystep as ss
>>> s = ss.warmup(ss.cosine(1.0, 0.0, steps=ss.fraction(1.0, of="rest")), steps=ss.fraction(0.1))
>>> s
warmup(cosine(start=1.0, end=0.0, steps=fraction(1.0, of='rest')), steps=fraction(0.1))
>>> s.resolve(1000)
warmup(cosine(start=1.0, end=0.0, steps=900), steps=100)
>>> ss.parse(repr(s)) == s
True
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import _check as check
from ._base import Array, Namespace, Schedule
from ._spec import BUILDERS

OF = ("run", "rest")


@dataclass(frozen=True, repr=False)
class RunFraction:
    """A length given as a fraction of the run (``of="run"``) or of what is left (``"rest"``).

    Usable wherever a schedule or preset takes a number of steps; ``repr`` is its spec text.

    >>> fraction(0.06), fraction(0.5, of="rest")
    (fraction(0.06), fraction(0.5, of='rest'))
    """

    value: float
    of: str = "run"

    #: marks a value whose meaning depends on the run's total length (see ``Schedule.__new__``)
    relative_to_run = True

    def __post_init__(self) -> None:
        value = check.number("value", self.value)
        if not 0 <= value <= 1:
            raise check.fail("value", "in [0, 1] (a fraction of the run)", self.value)
        object.__setattr__(self, "value", value)
        check.choice("of", self.of, OF)

    def steps(self, total: int, rest: float) -> int:
        """Whole steps: ``p * total`` rounded half up, or ``p * rest`` rounded down (so parts
        that share what is left never outgrow it)."""
        if self.of == "rest":
            return math.floor(self.value * rest + 1e-9)
        return math.floor(self.value * total + 0.5)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "fraction", "value": self.value}
        if self.of != "run":
            out["of"] = self.of
        return out

    def __repr__(self) -> str:
        of = "" if self.of == "run" else f", of={self.of!r}"
        return f"fraction({self.value!r}{of})"


fraction = RunFraction
BUILDERS["fraction"] = RunFraction


@dataclass(frozen=True, repr=False)
class Unresolved(Schedule):
    """A schedule (or preset) call with lengths relative to the run, waiting for the total.

    Build it as usual, with :func:`fraction` lengths; evaluate it only after
    :meth:`resolve` (or ``steadystep.parse(spec, total_steps=N)``): evaluating it earlier raises
    a ``ValueError`` that says which total is missing.
    """

    target: Callable[..., Any]
    arguments: tuple[tuple[str, Any], ...]

    def __new__(cls, *args: Any, **kwargs: Any) -> Unresolved:
        return object.__new__(cls)

    relative_to_run = True

    @property
    def name(self) -> str:
        spec_name: str = getattr(self.target, "spec_name", "") or self.target.__name__
        return spec_name

    @property
    def precedence(self) -> int:  # type: ignore[override]
        if self.name == "sequence" and dict(self.arguments).get("boundaries") is None:
            return 2
        return 1 if self.name == "scale" else 0

    def resolve(self, total_steps: int) -> Schedule:
        """The plain schedule for a run of ``total_steps`` updates.

        Raises ``ValueError`` when the lengths add up past the run.
        """
        total = check.integer("total_steps", total_steps, minimum=1)
        result = _resolve_call(self, total, total)
        length = result.length
        if length is not None and length > total:
            raise ValueError(
                f"The schedule's lengths add up to {length:g} steps, past the run "
                f"(total_steps={total}): {self!r} resolved to {result!r}. (The last part can "
                "take what the others leave: fraction(1.0, of='rest').)"
            )
        return result

    def __call__(self, step: Any) -> Any:
        raise self._missing_total()

    def _eval(self, t: Array, xp: Namespace) -> Array:
        raise self._missing_total()

    def _missing_total(self) -> ValueError:
        return ValueError(
            f"The schedule {self!r} gives lengths as fractions of the run, so it needs the "
            "run's total number of steps before it can be evaluated: use "
            "steadystep.parse(spec, total_steps=N) or schedule.resolve(N) (adapters take "
            "total_steps=N)."
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.name}
        out.update((k, _plain(v)) for k, v in self._shown())
        return out

    def __repr__(self) -> str:
        from ._spec import _format_value

        args = dict(self.arguments)
        if self.precedence == 2:
            return " >> ".join(_wrap(p, 2) for p in args["parts"])
        if self.name == "scale":
            return f"{_wrap(args['schedule'], 2)} * {args['factor']!r}"
        shown, leading = [], isinstance(self.target, type)
        positional = getattr(self.target, "positional", ())
        for key, value in self._shown():
            if leading and key in positional and _is_schedule(value):
                shown.append(_format_value(value))
                continue
            leading = False
            shown.append(f"{key}={_format_value(value)}")
        return f"{self.name}({', '.join(shown)})"

    def _shown(self) -> list[tuple[str, Any]]:
        """The arguments that differ from their defaults (the ones printed)."""
        defaults = _defaults(self.target)
        missing = object()
        return [(k, v) for k, v in self.arguments if defaults.get(k, missing) != v]


def _wrap(value: Any, limit: int) -> str:
    text = repr(value)
    return f"({text})" if getattr(value, "precedence", 0) >= limit else text


def _is_schedule(value: Any) -> bool:
    if isinstance(value, tuple):
        return bool(value) and isinstance(value[0], Schedule)
    return isinstance(value, Schedule)


def _plain(value: Any) -> Any:
    if isinstance(value, (Schedule, RunFraction)):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _defaults(target: Callable[..., Any]) -> dict[str, Any]:
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        fields = dataclasses.fields(target)
        return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    return {
        name: p.default
        for name, p in inspect.signature(target).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _bind(
    target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Every argument by name, defaults filled in, in the target's order (a canonical form)."""
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        from ._spec import _construct

        fields = [f.name for f in dataclasses.fields(target)]
        positional: tuple[str, ...] = getattr(target, "positional", ())
        if len(args) > len(positional):
            _construct(target, args, kwargs)  # raises its TypeError
        given = {**dict(zip(positional, args, strict=False)), **kwargs}
        unknown = [k for k in given if k not in fields]
        missing = [n for n in fields if n not in given and n not in _defaults(target)]
        if unknown or missing:
            _construct(target, args, kwargs)  # raises the parser's message
        defaults = _defaults(target)
        return {n: given[n] if n in given else defaults[n] for n in fields}
    try:
        bound = inspect.signature(target).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{target.__name__}(): {exc}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


# classes whose clock is not the run's steps: a fraction inside would be a fraction of epochs
_OTHER_CLOCKS = ("from_epochs", "from_samples", "from_tokens")


def defer(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Unresolved:
    """The :class:`Unresolved` call ``target(*args, **kwargs)`` (some argument is relative)."""
    name = getattr(target, "spec_name", "") or getattr(target, "__name__", "")
    if name in _OTHER_CLOCKS:
        raise ValueError(
            f"{name}() counts {name[5:]}, not steps of the run: give the schedule inside it "
            "whole lengths, or put fractions outside it. Received: "
            f"{', '.join(repr(a) for a in args)}"
        )
    bound = _bind(
        target, tuple(_freeze(a) for a in args), {k: _freeze(v) for k, v in kwargs.items()}
    )
    if name == "sequence" and bound.get("boundaries") is None:
        # canonical form, as for plain sequences: a chain of `>>` is flat
        flat: list[Any] = []
        for part in bound["parts"]:
            if isinstance(part, Unresolved) and part.precedence == 2:
                flat.extend(dict(part.arguments)["parts"])
            elif type(part).__name__ == "Sequence" and getattr(part, "natural", False):
                flat.extend(part.parts)
            else:
                flat.append(part)
        bound["parts"] = tuple(flat)
    return Unresolved(target, tuple(bound.items()))


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def deferrable(fn: Callable[..., Schedule]) -> Callable[..., Schedule]:
    """Let a preset builder take :func:`fraction` lengths (it then returns an Unresolved)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Schedule:
        if mentions_run(args) or mentions_run(kwargs.values()):
            return defer(fn, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper


def mentions_run(values: Iterable[Any]) -> bool:
    """True if any value (or any item of a list among them) depends on the run's length."""
    return any(
        getattr(type(v), "relative_to_run", False)
        or (isinstance(v, (tuple, list)) and mentions_run(v))
        for v in values
    )


# -- resolution ---------------------------------------------------------------------------------
def _sequential(name: str, args: dict[str, Any]) -> list[str]:
    """The arguments of a call whose lengths follow one another in time (they share the span)."""
    if name == "warmup":
        return ["steps"] if args.get("overlay") else ["steps", "schedule"]
    if name == "sequence":
        return ["parts"] if args.get("boundaries") is None else []
    return list(SEQUENTIAL.get(name, ()))


#: presets whose length arguments follow one another (registered by ``presets``)
SEQUENTIAL: dict[str, tuple[str, ...]] = {}


def _uses_rest(value: Any) -> bool:
    if isinstance(value, RunFraction):
        return value.of == "rest"
    if isinstance(value, Unresolved):
        return any(_uses_rest(v) for _, v in value.arguments)
    if isinstance(value, tuple):
        return any(_uses_rest(v) for v in value)
    return False


def _resolve_value(value: Any, total: int, span: float) -> Any:
    if isinstance(value, RunFraction):
        return value.steps(total, span)
    if isinstance(value, Unresolved):
        return _resolve_call(value, total, span)
    if isinstance(value, tuple):
        return tuple(_resolve_value(v, total, span) for v in value)
    return value


def _length_of(value: Any) -> float:
    if isinstance(value, Schedule):
        return value.length or 0.0
    return float(value) if check.is_python_number(value) else 0.0


def _resolve_call(call: Unresolved, total: int, span: float) -> Schedule:
    args = dict(call.arguments)
    # the items that share the span one after another: (argument, index in a list or None)
    items: list[tuple[str, int | None]] = []
    for key in _sequential(call.name, args):
        value = args[key]
        if isinstance(value, tuple):
            items.extend((key, i) for i in range(len(value)))
        elif value is not None:
            items.append((key, None))

    def get(key: str, i: int | None) -> Any:
        return args[key] if i is None else args[key][i]

    resolved: dict[tuple[str, int | None], Any] = {}
    used = 0.0
    for item in items:
        if not _uses_rest(get(*item)):
            resolved[item] = _resolve_value(get(*item), total, span)
            used += _length_of(resolved[item])
    rest = span - used
    late = [item for item in items if item not in resolved]
    if late and rest < 0:
        raise ValueError(
            f"The lengths in {call!r} take {used:g} steps of the {span:g} left in the run "
            f"(total_steps={total}): nothing is left for fraction(..., of='rest')"
        )
    for item in late:
        resolved[item] = _resolve_value(get(*item), total, rest)
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, tuple) and (key, 0) in resolved:
            out[key] = tuple(resolved[(key, i)] for i in range(len(value)))
        elif (key, None) in resolved:
            out[key] = resolved[(key, None)]
        else:
            out[key] = _resolve_value(value, total, span)
    try:
        result: Schedule = call.target(**out)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{call!r} with total_steps={total}: {exc}") from None
    return result
