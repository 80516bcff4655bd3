"""The ``steadystep`` command: look at schedules, run the demo, find a learning rate.

Subcommands::

    steadystep plot SPEC... [--steps N] [-o out.png|out.svg] [--log]
    steadystep show SPEC [--steps N] [--at STEP ...]
    steadystep demo [--steps N] [--lr LR] [--device D] [--out DIR] [--seed S]
    steadystep find-lr [--steps N] [--start-lr LR] [--end-lr LR] [--device D] [-o out.png]
    steadystep bench stability [--quick] [--out DIR]

A SPEC is spec text (``"warmup(cosine(1e-3, 1e-5, steps=9000), steps=1000)"``), a JSON or YAML
file holding spec text or a schedule dict, or ``LIB:NAME`` for another library's schedule from
:mod:`steadystep.compat` (``transformers:cosine``, ``torch:StepLR``), with that function's
arguments given as ``--set key=value``.

Exit codes: 0 success, 1 a runtime failure (e.g. an output path that cannot be written),
2 a usage error or a bad spec (the message points at the bad token), 130 interrupted (Ctrl-C:
:func:`main` returns 130; the command, after cleaning up, ends by SIGINT itself, which a shell
reports as 130 and which stops a calling shell loop too).

>>> main(["show", "linear(1.0, 0.0, steps=4)", "--at", "0", "2"])
step  value
   0  1
   2  0.5
<BLANKLINE>
peak:        1 at step 0
end:         0 at step 4
0
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import schedules as ss
from .errors import UsageError

__all__ = ["CLIError", "load_schedule", "main"]

_DEFAULT_STEPS = 1000
_MAX_STEP = 2**53  # steps are evaluated as float64
_MAX_SET = 10_000  # characters of one --set value
_COMPAT = re.compile(r"^([a-z_][a-z0-9_]*):([A-Za-z_][A-Za-z0-9_]*)$")


class CLIError(UsageError):
    """A failure reported to the user as one message and an exit code, without a traceback.

    Layers below the command (the experiments) raise :class:`steadystep.errors.UsageError`;
    ``main`` reports both the same way.
    """


# -- resolving a SPEC ---------------------------------------------------------------------------
def _literal(key: str, text: str) -> Any:
    if len(text) > _MAX_SET:
        raise CLIError(f"--set {key}=...: a value longer than {_MAX_SET} characters")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string
    except (RecursionError, MemoryError):  # e.g. thousands of unary signs: Python's parser gives up
        raise CLIError(
            f"--set {key}=...: the value is nested too deeply to read ({text[:40]!r}...)"
        ) from None


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise CLIError(f"--set takes KEY=VALUE with KEY a name. Received: {pair[:200]!r}")
        out[key] = _literal(key, value)
    return out


#: a float in the YAML 1.2 core schema that YAML 1.1 (PyYAML) reads as a string: an exponent
#: without a dot or without a sign (``1e-3``, ``1.0e3``, ``.5e3``)
_YAML_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def _yaml_load(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise CLIError(
            f"reading {str(path)!r} needs PyYAML: pip install pyyaml (or use JSON)"
        ) from None

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # a SafeLoader: builds plain values only


def _from_file(path: Path) -> ss.Schedule:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read schedule file {str(path)!r}: {exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = _yaml_load(text, path)
        else:
            data = json.loads(text)
    except CLIError:
        raise
    except Exception as exc:  # JSONDecodeError, yaml.YAMLError (not a ValueError), RecursionError
        raise CLIError(f"malformed schedule file {str(path)!r}: {exc}") from None
    if not isinstance(data, (str, dict)):
        raise CLIError(
            f"schedule file {str(path)!r} must hold spec text or a schedule dict "
            f'(e.g. {{"type": "cosine", "start": 0.001, "end": 0, "steps": 100}}). '
            f"Received a {type(data).__name__}"
        )
    try:
        return ss.parse(data)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"invalid schedule in {str(path)!r}: {exc}") from None


def _from_compat(lib: str, name: str, options: dict[str, Any], steps: int | None) -> ss.Schedule:
    from . import compat

    if lib not in compat.__all__:
        raise CLIError(
            f"unknown library {lib!r} in {lib}:{name}; known: {', '.join(compat.__all__)}"
        )
    try:
        module = importlib.import_module(f"steadystep.compat.{lib}")
    except ImportError as exc:
        raise CLIError(f"steadystep.compat.{lib} is not available in this install: {exc}") from None
    try:
        if hasattr(module, "get_scheduler"):  # a name registry (transformers): name is a key
            kwargs = dict(options)
            total = steps if steps is not None else _DEFAULT_STEPS
            kwargs.setdefault("num_training_steps", total)
            kwargs.setdefault("num_warmup_steps", total // 10)
            result = module.get_scheduler(name, **kwargs)
        else:
            func: Callable[..., Any] | None = getattr(module, name, None)
            if func is None or name.startswith("_") or not callable(func):
                public = [n for n in getattr(module, "__all__", dir(module)) if n[0] != "_"]
                raise CLIError(
                    f"unknown schedule {name!r} in steadystep.compat.{lib}; "
                    f"known: {', '.join(sorted(public))}"
                )
            result = func(**options)
    except CLIError:
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:  # 1e999, 10**400
        text = str(exc)  # it may quote a huge --set value
        text = text if len(text) <= 500 else f"{text[:400]}... ({len(text)} characters)"
        raise CLIError(f"{lib}:{name}: {text}") from None
    if not isinstance(result, ss.Schedule):
        raise CLIError(
            f"{lib}:{name} gives a {type(result).__name__}, not a schedule; "
            "plot the schedule function instead"
        )
    return result


def load_schedule(
    spec: str, *, options: dict[str, Any] | None = None, steps: int | None = None
) -> ss.Schedule:
    """The schedule a command-line SPEC names (see the module docstring for the forms).

    ``options`` are keyword arguments for a ``LIB:NAME`` spec; for a library with a
    ``get_scheduler`` registry (transformers) ``num_training_steps`` defaults to ``steps`` and
    ``num_warmup_steps`` to a tenth of it. Errors are :class:`CLIError` (spec errors keep the
    caret that points at the bad token).

    >>> load_schedule("cosine(1.0, 0.0, steps=10)")
    cosine(start=1.0, end=0.0, steps=10)
    >>> load_schedule("transformers:linear", steps=100)(10)
    1.0
    """
    options = options or {}
    match = _COMPAT.match(spec)
    if match:
        return _from_compat(match.group(1), match.group(2), options, steps)
    if options:
        raise CLIError("--set applies to LIB:NAME specs only (e.g. transformers:cosine)")
    path = Path(spec)
    if "(" not in spec and _is_dir(path):
        raise CLIError(f"{spec!r} is a directory; a SPEC is spec text or a .json/.yaml file")
    if path.suffix.lower() in (".json", ".yaml", ".yml") or ("(" not in spec and _is_file(path)):
        if not _is_file(path):
            raise CLIError(f"schedule file {spec!r} does not exist")
        return _from_file(path)
    try:
        return ss.parse(spec)
    except ss.SpecError as exc:
        raise CLIError(str(exc)) from None
    except (ValueError, TypeError) as exc:  # a constructor's own check, e.g. steps=-5
        raise CLIError(f"Invalid schedule spec: {exc}") from None


def for_run(schedule: ss.Schedule, steps: int | None) -> ss.Schedule:
    """``schedule`` with its lengths written as fractions of the run resolved over ``--steps``.

    >>> for_run(load_schedule("cosine(1.0, 0.0, steps=fraction(0.5))"), 10)
    cosine(start=1.0, end=0.0, steps=5)
    """
    if not isinstance(schedule, ss.Unresolved):
        return schedule
    if steps is None:
        raise CLIError(
            f"--steps is needed: the spec gives lengths as fractions of the run ({schedule!r}); "
            "--steps N is the run's total number of steps"
        )
    try:
        return schedule.resolve(steps)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"Invalid schedule spec: {exc}") from None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name longer than the file system allows: not a file
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _steps_for(schedules: Sequence[ss.Schedule], steps: int | None) -> int:
    if steps is not None:
        return steps
    lengths = [s.length for s in schedules if s.length is not None and math.isfinite(s.length)]
    return math.ceil(max(lengths)) + 1 if lengths else _DEFAULT_STEPS


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    if value > _MAX_STEP:
        raise argparse.ArgumentTypeError(f"must be <= 2**53 (exact as a float), got {value}")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        value = _positive_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return convert


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}") from None
    if not 0 <= value <= _MAX_STEP:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**53], got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


# -- plot / show --------------------------------------------------------------------------------
def _cmd_plot(args: argparse.Namespace) -> int:
    options = _options(args.set)
    schedules = [
        for_run(load_schedule(spec, options=options, steps=args.steps), args.steps)
        for spec in args.spec
    ]
    steps = _steps_for(schedules, args.steps)
    labels = args.label or []
    if len(labels) > len(args.spec):
        raise CLIError(f"--label given {len(labels)} times for {len(args.spec)} specs")
    named = {}
    for i, (spec, schedule) in enumerate(zip(args.spec, schedules, strict=True)):
        label = labels[i] if i < len(labels) else spec
        named[label if label not in named else f"{label} ({i + 1})"] = schedule
    from .plot import plot_schedules, save_figure, text_plot

    if args.output is None:
        print(text_plot(named, steps, width=args.width, height=args.height))
        return 0
    try:
        fig = plot_schedules(
            named, steps, log=args.log, title=args.title, size=(args.size[0], args.size[1])
        )
    except ImportError:
        raise CLIError(
            "drawing to a file needs matplotlib: pip install 'steadystep[plot]'", 1
        ) from None
    try:
        path = save_figure(fig, args.output)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write {str(args.output)!r}: {exc.strerror or exc}", 1) from None
    print(f"wrote {path}")
    return 0


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def key_points(schedule: ss.Schedule, steps: int) -> list[tuple[str, int, float]]:
    """``(name, step, value)`` of the peak, the end of a rising start (warmup) and the end.

    The warmup end is the first step that reaches the peak when the schedule starts below it.

    >>> import steadystep as ss
    >>> key_points(ss.warmup(ss.linear(1.0, 0.0, steps=10), steps=5), 16)
    [('peak', 5, 1.0), ('warmup ends', 5, 1.0), ('end', 15, 0.0)]
    """
    import numpy as np

    from .plot import step_grid

    t = step_grid(steps, limit=1_000_001)  # past a million steps: a grid, ends included
    values = np.asarray(schedule(t), dtype=np.float64)
    i = int(np.nanargmax(values)) if np.isfinite(values).any() else 0
    points = [("peak", int(t[i]), float(values[i]))]
    if i > 0 and values[0] < values[i]:
        points.append(("warmup ends", int(t[i]), float(values[i])))
    points.append(("end", steps - 1, float(values[-1])))
    return points


def _cmd_show(args: argparse.Namespace) -> int:
    schedule = for_run(
        load_schedule(args.spec, options=_options(args.set), steps=args.steps), args.steps
    )
    steps = _steps_for([schedule], args.steps)
    at = sorted(set(args.at or (round((steps - 1) * i / 10) for i in range(11))))
    width = max(4, len(str(at[-1])))
    print(f"{'step':>{width}}  value")
    for t in at:
        print(f"{t:>{width}}  {_fmt(schedule(t))}")
    print()
    for name, t, v in key_points(schedule, steps):
        print(f"{name + ':':<13}{_fmt(v)} at step {t}")
    return 0


# -- demo / find-lr / bench ---------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from .experiments import demo

    return demo.run(
        steps=args.steps,
        lr=args.lr,
        device=args.device,
        out=args.out,
        seed=args.seed,
        warmup=args.warmup,
        clip=args.clip,
        progress=not args.no_progress,
    )


def _cmd_find_lr(args: argparse.Namespace) -> int:
    from .experiments import demo

    return demo.run_find_lr(
        steps=args.steps,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        device=args.device,
        output=args.output,
        seed=args.seed,
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    module_name = f"steadystep.experiments.{args.benchmark}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise CLIError(f"benchmark {args.benchmark!r} needs {exc.name!r}: {exc}", 1) from None
        raise CLIError(
            f"benchmark {args.benchmark!r} is not available: {module_name} is not installed", 1
        ) from None
    result: int = module.main(list(args.args))
    return result


# -- the parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``steadystep`` argument parser (``steadystep --help`` prints it)."""
    parser = argparse.ArgumentParser(
        prog="steadystep",
        description="Learning-rate warmup, decay and gradient clipping: look at schedules, "
        "run the demo, find a learning rate.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"steadystep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    spec_help = (
        "spec text, a .json/.yaml file, or LIB:NAME from steadystep.compat (transformers:cosine)"
    )
    set_help = "KEY=VALUE argument of a LIB:NAME spec (repeatable)"
    steps_help = "number of steps (default: the schedule's length + 1, or 1000 if open-ended)"

    p = sub.add_parser("plot", help="draw schedules (text in the terminal, or -o file.png/svg)")
    p.add_argument("spec", nargs="+", metavar="SPEC", help=spec_help)
    p.add_argument("--steps", type=_positive_int, help=steps_help)
    p.add_argument("-o", "--output", type=Path, help="write a picture (.png, .svg, .pdf)")
    p.add_argument("--label", action="append", help="legend label of each SPEC, in order")
    p.add_argument("--title", help="figure title")
    p.add_argument("--log", action="store_true", help="logarithmic value axis")
    p.add_argument(
        "--size",
        type=_positive_float,
        nargs=2,
        default=(8.0, 4.5),
        metavar=("W", "H"),
        help="picture size in inches at 100 dpi (default: 8 4.5, i.e. 800x450 pixels)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--width", type=_at_least(8), default=72, help="text plot columns (>= 8)")
    p.add_argument("--height", type=_at_least(2), default=16, help="text plot rows (>= 2)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("show", help="print a schedule's values and key points")
    p.add_argument("spec", metavar="SPEC", help=spec_help)
    p.add_argument("--steps", type=_positive_int, help=steps_help)
    p.add_argument(
        "--at", type=_nonnegative_int, nargs="+", help="steps to print (default: 11 even steps)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "demo", help="train a small char transformer twice: plain vs warmup + decay + clipping"
    )
    p.add_argument("--steps", type=_positive_int, default=None, help="updates per run")
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if any)")
    p.add_argument("--out", type=Path, default=Path("steadystep-demo"), help="report folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and the batches")
    p.add_argument(
        "--warmup", type=_positive_int, default=None, help="warmup steps of the recipe run"
    )
    p.add_argument("--clip", type=_positive_float, default=1.0, help="global-norm threshold")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("find-lr", help="LR range test of the demo model (Leslie Smith)")
    p.add_argument("--steps", type=_positive_int, default=100, help="sweep length")
    p.add_argument("--start-lr", type=_positive_float, default=1e-6)
    p.add_argument("--end-lr", type=_positive_float, default=1.0)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if any)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, help="write the loss-vs-LR curve (.png/.svg)")
    p.set_defaults(func=_cmd_find_lr)

    p = sub.add_parser("bench", help="run a shipped benchmark: stability")
    p.add_argument("benchmark", choices=["stability"], help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``steadystep`` command with ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args))
    except UsageError as exc:  # CLIError, and the experiments' own errors
        print(f"steadystep: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("\nsteadystep: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    except BrokenPipeError:  # `steadystep show ... | head`
        sys.stderr.close()
        return 1


def run() -> None:
    """Entry point of the ``steadystep`` command and of ``python -m steadystep``.

    Exits with :func:`main`'s code, except after Ctrl-C on POSIX: having cleaned up, the
    process ends by SIGINT with the default action, as a program that handles SIGINT
    should (so that a shell running it in a loop stops too). CPython does the same for an
    uncaught KeyboardInterrupt, and in 3.11 also for one caught after it passed through
    ``exec()`` (dataclasses runs generated code so while torch imports lazily): without
    this, the exit status depended on where the Ctrl-C landed.
    """
    code = main()
    if code == 130 and os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    sys.exit(code)
