"""Spec text and dicts: ``repr(s)`` is spec text and ``parse`` rebuilds an equal schedule.

Grammar (a safe subset of Python expressions; nothing is ever evaluated)::

    spec     := sequence
    sequence := product (">>" product)*
    product  := unary ("*" unary)*
    unary    := "-" unary | atom
    atom     := NUMBER | STRING | True | False | None | NAME "(" args ")" | "(" sequence ")"
              | "[" [value ("," value)*] "]"
    args     := [arg ("," arg)*] [","]     arg := [NAME "="] sequence

``NAME(...)`` is a schedule (``cosine``, ``warmup``, ...) or a preset (``bert``, ``noam``, ...).
``a >> b`` is a sequence, ``s * k`` and ``k * s`` scale. Anything else is a :class:`SpecError`
(a ``ValueError``) that shows where the bad token is.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._base import REGISTRY, Schedule

#: preset builders accepted in spec text (name -> function); filled by ``presets``
BUILDERS: dict[str, Callable[..., Any]] = {}

_MAX_DEPTH = 64
_MAX_LENGTH = 100_000


class SpecError(ValueError):
    """A spec that cannot be parsed; ``position`` is the 0-based column of the bad token."""

    def __init__(self, message: str, spec: str = "", position: int | None = None) -> None:
        self.message = message
        self.spec = spec
        self.position = position
        super().__init__(self._render())

    def _render(self) -> str:
        if self.position is None or not self.spec or "\n" in self.spec or len(self.spec) > 200:
            where = f" (at column {self.position + 1})" if self.position is not None else ""
            return f"Invalid schedule spec{where}: {self.message}"
        caret = " " * self.position + "^"
        return (
            f"Invalid schedule spec at column {self.position + 1}: {self.message}\n"
            f"  {self.spec}\n  {caret}"
        )


# -- formatting ---------------------------------------------------------------------------------
def _format_value(value: Any) -> str:
    if isinstance(value, Schedule):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return repr(value)  # numbers (shortest round-trip repr), strings, bools, None


def _wrap(child: Schedule, limit: int) -> str:
    text = repr(child)
    return f"({text})" if child.precedence >= limit else text


def format_spec(s: Schedule) -> str:
    from ._combine import Scale, Sequence

    if isinstance(s, Sequence) and s.natural:
        return " >> ".join(_wrap(p, 2) for p in s.parts)
    if isinstance(s, Scale):
        return f"{_wrap(s.schedule, 2)} * {s.factor!r}"
    args: list[str] = []
    leading = True
    for f in dataclasses.fields(s):  # type: ignore[arg-type]
        value = getattr(s, f.name)
        is_schedule = isinstance(value, Schedule) or (
            isinstance(value, tuple) and value and isinstance(value[0], Schedule)
        )
        if leading and is_schedule and f.name in s.positional:
            args.append(_format_value(value))
            continue
        leading = False
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        args.append(f"{f.name}={_format_value(value)}")
    return f"{s.spec_name}({', '.join(args)})"


# -- tokenizer ----------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'[^'\\\n]*'|"[^"\\\n]*")
  | (?P<op>>>|[*()\[\],=-])
    """,
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SpecError(f"unexpected character {text[pos]!r}", text, pos)
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            tokens.append((kind, m.group(), pos))
        pos = m.end()
    tokens.append(("end", "", len(text)))
    return tokens


# -- parser -------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        # id -> (schedule, nesting depth) of the schedules built so far: chains such as
        # `s * 2 * 2 * ...` nest without brackets, and every walk over a schedule recurses
        self.built: dict[int, tuple[Schedule, int]] = {}

    def error(self, message: str, pos: int | None = None) -> SpecError:
        return SpecError(message, self.text, self.tokens[self.i][2] if pos is None else pos)

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, value: str) -> bool:
        kind, text, _ = self.peek()
        if kind in ("op", "name") and text == value:
            self.i += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.take(value):
            kind, text, _ = self.peek()
            found = "end of spec" if kind == "end" else repr(text)
            raise self.error(f"expected {value!r}, found {found}")

    def parse(self) -> Any:
        value = self.sequence()
        kind, text, _ = self.peek()
        if kind != "end":
            raise self.error(f"unexpected {text!r} after a complete spec")
        return value

    def sequence(self) -> Any:
        pos = self.peek()[2]
        parts = [self.product()]
        first_op = None
        while True:
            op_pos = self.peek()[2]
            if not self.take(">>"):
                break
            first_op = op_pos if first_op is None else first_op
            parts.append(self.product())
            for side, v, p in (("left", parts[-2], pos), ("right", parts[-1], op_pos)):
                if not isinstance(v, Schedule):
                    raise self.error(f"'>>' needs a schedule on its {side}, found {v!r}", p)
            pos = op_pos
        if first_op is None:
            return parts[0]
        # one sequence for the whole chain (building `a >> b` pairwise is quadratic in its length)
        from ._combine import sequence

        return self.build(sequence, (parts,), {}, first_op)

    def product(self) -> Any:
        pos = self.peek()[2]
        value = self.unary()
        while True:
            op_pos = self.peek()[2]
            if not self.take("*"):
                return value
            right = self.unary()
            schedules = [isinstance(value, Schedule), isinstance(right, Schedule)]
            if schedules.count(True) != 1:
                raise self.error("'*' needs one schedule and one number", op_pos)
            s, k = (value, right) if schedules[0] else (right, value)
            if isinstance(k, bool) or not isinstance(k, (int, float)):
                raise self.error(f"'*' needs a number as the factor, found {k!r}", pos)
            from ._combine import Scale

            value = self.build(Scale, (s, k), {}, op_pos)

    def unary(self) -> Any:
        pos = self.peek()[2]
        signs = 0
        while self.take("-"):  # a loop, not recursion: '-' * 5000 must not overflow the stack
            signs += 1
        value = self.atom()
        if signs:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error("'-' applies to numbers only", pos)
            return -value if signs % 2 else value
        return value

    def atom(self) -> Any:
        kind, text, pos = self.peek()
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"nesting deeper than {_MAX_DEPTH} levels")
        try:
            if kind == "number":
                self.i += 1
                return self.number(text, pos)
            if kind == "string":
                self.i += 1
                return text[1:-1]
            if kind == "name":
                self.i += 1
                constants = {"True": True, "False": False, "None": None}
                if text in constants:
                    return constants[text]
                if self.peek()[1] != "(":
                    raise self.error(
                        f"unknown name {text!r} (schedules are called: name(...))", pos
                    )
                return self.call(text, pos)
            if self.take("("):
                value = self.sequence()
                self.expect(")")
                return value
            if self.take("["):
                items: list[Any] = []
                while not self.take("]"):
                    items.append(self.sequence())
                    if not self.take(","):
                        self.expect("]")
                        break
                return items
            found = "end of spec" if kind == "end" else repr(text)
            raise self.error(f"expected a value, found {found}")
        finally:
            self.depth -= 1

    def number(self, text: str, pos: int) -> int | float:
        try:
            if re.search(r"[.eE]", text):
                return float(text)
            return int(text)
        except (ValueError, OverflowError) as exc:
            raise self.error(f"bad number {text!r}: {exc}", pos) from None

    def call(self, name: str, pos: int) -> Schedule:
        target: Callable[..., Schedule] | None = REGISTRY.get(name) or BUILDERS.get(name)
        if target is None:
            known = ", ".join(sorted({*REGISTRY, *BUILDERS}))
            raise self.error(f"unknown schedule {name!r}; known: {known}", pos)
        self.expect("(")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        while not self.take(")"):
            kind, text, arg_pos = self.peek()
            if kind == "name" and self.tokens[self.i + 1][1] == "=":
                self.i += 2
                if text in kwargs:
                    raise self.error(f"argument {text!r} given twice", arg_pos)
                kwargs[text] = self.sequence()
            elif kwargs:
                raise self.error("positional argument after a keyword argument", arg_pos)
            else:
                args.append(self.sequence())
            if not self.take(","):
                self.expect(")")
                break
        return self.build(target, tuple(args), kwargs, pos)

    def build(
        self,
        target: Callable[..., Schedule],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        pos: int,
    ) -> Schedule:
        if 1 + self.nesting([*args, *kwargs.values()]) > _MAX_DEPTH:
            raise self.error(f"schedules nested deeper than {_MAX_DEPTH} levels", pos)
        try:
            result: Schedule = _construct(target, args, kwargs)
        except (TypeError, ValueError) as exc:
            raise self.error(str(exc), pos) from None
        self.nesting(result)
        return result

    def nesting(self, value: Any) -> int:
        """Levels of schedules in ``value`` (0 for a number), remembered for every schedule."""
        if isinstance(value, (list, tuple)):
            return max((self.nesting(v) for v in value), default=0)
        if not isinstance(value, Schedule):
            return 0
        if id(value) not in self.built:
            fields = dataclasses.fields(value)  # type: ignore[arg-type]
            depth = 1 + max((self.nesting(getattr(value, f.name)) for f in fields), default=0)
            self.built[id(value)] = (value, depth)
        return self.built[id(value)][1]


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _construct(target: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    args = tuple(_freeze(a) for a in args)
    kw = {k: _freeze(v) for k, v in kw.items()}
    if isinstance(target, type) and issubclass(target, Schedule):
        names = [f.name for f in dataclasses.fields(target)]  # type: ignore[arg-type]
        if len(args) > len(target.positional):
            raise TypeError(
                f"{target.spec_name}() takes at most {len(target.positional)} positional "
                f"arguments ({', '.join(target.positional)}); received {len(args)}"
            )
        for key in kw:
            if key not in names:
                raise TypeError(
                    f"{target.spec_name}() has no argument {key!r}; its arguments: "
                    f"{', '.join(names)}"
                )
        kw = {**dict(zip(target.positional, args, strict=False)), **kw}
        missing = [f.name for f in dataclasses.fields(target) if f.name not in kw and _required(f)]  # type: ignore[arg-type]
        if missing:
            raise TypeError(f"{target.spec_name}() is missing argument(s): {', '.join(missing)}")
        return target(**kw)
    try:
        inspect.signature(target).bind(*args, **kw)
    except TypeError as exc:
        raise TypeError(f"{getattr(target, '__name__', target)}(): {exc}") from None
    return target(*args, **kw)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


# -- dicts --------------------------------------------------------------------------------------
def _from_dict(d: Any, path: str, depth: int = 0) -> Schedule:
    if depth > _MAX_DEPTH:
        raise ValueError(f"{path}: nesting deeper than {_MAX_DEPTH} levels")
    if not isinstance(d, Mapping):
        raise TypeError(f"{path} must be a dict with a 'type' key. Received: {d!r}")
    kind = d.get("type")
    if not isinstance(kind, str) or (kind not in REGISTRY and kind not in BUILDERS):
        known = ", ".join(sorted({*REGISTRY, *BUILDERS}))
        raise ValueError(f"{path}['type'] must be one of: {known}. Received: {kind!r}")
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key == "type":
            continue
        if not isinstance(key, str):
            raise TypeError(f"{path} has a non-string key {key!r}")
        kwargs[key] = _plain_value(value, f"{path}[{key!r}]", depth + 1)
    try:
        result: Schedule = _construct(REGISTRY.get(kind) or BUILDERS[kind], (), kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path} ({kind}): {exc}") from None
    return result


def _plain_value(value: Any, path: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError(f"{path}: nesting deeper than {_MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        return _from_dict(value, path, depth)
    if isinstance(value, (list, tuple)):
        return tuple(_plain_value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"{path} must be a number, string, bool, None, list or dict. Received: {value!r}"
    )


def parse(spec: str | Mapping[str, Any] | Schedule, total_steps: int | None = None) -> Schedule:
    """Build a schedule from spec text (``repr`` of a schedule, or JSON) or from a dict.

    ``total_steps`` resolves lengths written as fractions of the run (``fraction(0.06)``, see
    ``docs/schedules.md``); without it such a spec gives an :class:`Unresolved` schedule that
    says what it is missing when evaluated. A schedule passes through (resolved likewise).

    >>> s = parse("warmup(cosine(0.001, 1e-05, steps=9000), steps=1000)")
    >>> s(1000)
    0.001
    >>> parse(repr(s)) == s == parse(s.to_dict())
    True
    >>> try:
    ...     parse("warmup(cosin(1.0, 0.0, steps=5), steps=2)")
    ... except SpecError as error:
    ...     print(error.position, error.message[:24])
    7 unknown schedule 'cosin'
    """
    if total_steps is not None:
        from ._fractions import Unresolved

        value = parse(spec)
        return value.resolve(total_steps) if isinstance(value, Unresolved) else value
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, Mapping):
        return _printable(_from_dict(spec, "spec"))
    if not isinstance(spec, str):
        raise TypeError(
            f"Argument `spec` must be spec text or a dict (or a schedule). Received: spec={spec!r} "
            f"of type {type(spec).__name__}"
        )
    if len(spec) > _MAX_LENGTH:
        raise SpecError(f"spec longer than {_MAX_LENGTH} characters")
    stripped = spec.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise SpecError(f"invalid JSON: {exc}") from None
        return _printable(_from_dict(data, "spec"))
    value = _Parser(spec).parse()
    if not isinstance(value, Schedule):
        raise SpecError(f"a spec must describe a schedule, not {value!r}", spec, 0)
    return _printable(value)


def _printable(s: Schedule) -> Schedule:
    """``s``, if its spec text is within the length limit, so that ``parse(repr(s))`` reads it.

    (Spec text can print longer than it was written: ``1e15`` prints as
    ``1000000000000000.0``, positional arguments print with their names.)
    """
    n = len(repr(s))
    if n > _MAX_LENGTH:
        raise SpecError(
            f"the schedule's spec text, repr(schedule), would be {n} characters, over the limit "
            f"of {_MAX_LENGTH} that parse reads"
        )
    return s
