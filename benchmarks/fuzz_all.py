"""The full fuzz run: every fuzz target of the test suite with 10,000 inputs each, plus atheris.

    python benchmarks/fuzz_all.py [--examples 10000] [--atheris-runs 200000] [--only A,B]

The targets are the hypothesis tests of ``tests/test_fuzz_*.py`` (CI runs them with
``FUZZ_EXAMPLES`` = 150); here each gets ``--examples`` inputs. A coverage-guided atheris run
(libFuzzer) over ``steadystep.parse`` on raw bytes decoded as text comes last, in a child
process (atheris exits the process when done), where atheris is installed. Prints, per
target, the inputs fed, the time taken, and the outcome; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _targets() -> list[tuple[str, Callable[[], None]]]:
    from tests import (
        test_fuzz_checkpoint,
        test_fuzz_cli,
        test_fuzz_spec,
        test_fuzz_spec_roundtrip,
        test_fuzz_state,
    )

    modules = (
        test_fuzz_spec,
        test_fuzz_spec_roundtrip,
        test_fuzz_state,
        test_fuzz_cli,
        test_fuzz_checkpoint,
    )
    out: list[tuple[str, Callable[[], None]]] = []
    for module in modules:
        for name in sorted(vars(module)):
            fn = getattr(module, name)
            if not name.startswith("test_") or not hasattr(fn, "hypothesis"):
                continue
            out.append((f"{module.__name__.split('.')[-1]}::{name}", fn))
    for clipper in sorted(test_fuzz_state.CLIPPERS):
        name = f"test_fuzz_state::test_clipper_load_state_dict[{clipper}]"
        out.append((name, functools.partial(test_fuzz_state.test_clipper_load_state_dict, clipper)))
    return out


def run_hypothesis(only: list[str]) -> bool:
    from tests.test_fuzz_spec import COUNTS

    ok = True
    print(f"{'target':<62} {'inputs':>7} {'seconds':>8}  outcome")
    for name, fn in _targets():
        if only and not any(o in name for o in only):
            continue
        COUNTS.clear()
        start = time.perf_counter()
        try:
            fn()
            outcome = "ok"
        except Exception as exc:  # a fuzz failure is a result to report
            outcome = f"FAILED: {type(exc).__name__}"
            ok = False
            traceback.print_exc()
        seconds = time.perf_counter() - start
        inputs = sum(n for key, n in COUNTS.items() if not key.endswith(": accepted"))
        accepted = [f"{n} accepted" for key, n in COUNTS.items() if key.endswith(": accepted")]
        outcome = " ".join([outcome, *accepted])
        print(f"{name:<62} {inputs:>7} {seconds:>8.1f}  {outcome}", flush=True)
    return ok


def atheris_child(runs: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["steadystep"]):
        import steadystep as ss

    def one(data: bytes) -> None:
        text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
        try:
            s = ss.parse(text)
        except (ValueError, TypeError):
            return
        if ss.parse(repr(s)) != s:
            raise AssertionError(f"round trip failed for {text!r}")

    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=512", "-timeout=5"], one)
    atheris.Fuzz()


def run_atheris(runs: int) -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris: not installed (pip install atheris), skipped")
        return True
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--atheris-child", str(runs)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    seconds = time.perf_counter() - start
    done = [line for line in proc.stderr.splitlines() if line.startswith("#") and "DONE" in line]
    summary = done[-1] if done else proc.stderr.strip().splitlines()[-1:]
    outcome = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    print(f"{'atheris::parse(bytes as text)':<62} {runs:>7} {seconds:>8.1f}  {outcome}  {summary}")
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
    return proc.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per target")
    parser.add_argument("--atheris-runs", type=int, default=200_000)
    parser.add_argument(
        "--only", default="", help="comma-separated: run the targets whose name contains one"
    )
    parser.add_argument("--atheris-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.atheris_child is not None:
        atheris_child(args.atheris_child)
        return 0
    os.environ["FUZZ_EXAMPLES"] = str(args.examples)  # read when the test modules are imported
    sys.path.insert(0, str(ROOT))
    import warnings

    warnings.simplefilter("error")  # as under pytest: a warning is a failure
    start = time.perf_counter()
    only = [o for o in args.only.split(",") if o]
    ok = run_hypothesis(only)
    if not only or "atheris" in only:
        ok = run_atheris(args.atheris_runs) and ok
    print(f"total: {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
