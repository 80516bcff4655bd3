"""Overhead of ``steadystep.torch.Scheduler.step()`` against ``torch.optim.lr_scheduler.LambdaLR``.

Both schedulers drive the same optimizer in the same run; the anchor is ``LambdaLR.step()`` with
the same warmup-cosine curve written as a lambda. Our timing includes the optimizer's update
count being bumped (what the step post-hook does on a real ``optimizer.step()``), so that each
``step()`` really applies a new value. Run::

    python3 benchmarks/bench_scheduler.py [--steps 200000] [--groups 1 8]

and read the ratio column (target: <= 0.5 for the float LR).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable

import torch

import steadystep as ss
from steadystep.torch import Scheduler

WARMUP, TOTAL = 1_000, 100_000


def lam(t: int) -> float:
    if t < WARMUP:
        return t / WARMUP
    return 0.5 * (1 + math.cos(math.pi * min(t - WARMUP, TOTAL - WARMUP) / (TOTAL - WARMUP)))


SCHEDULE = ss.warmup(ss.cosine(1.0, 0.0, steps=TOTAL - WARMUP), steps=WARMUP)


def per_step(fn: Callable[[], None], steps: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds per call of ``fn``."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def optimizer(groups: int) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [{"params": [torch.nn.Parameter(torch.zeros(4))], "lr": 1e-3} for _ in range(groups)]
    )


def ours(opt: torch.optim.Optimizer, **kw: bool) -> Callable[[], None]:
    sched = Scheduler(opt, SCHEDULE, relative=True, **kw)
    counter = sched._counter

    def step() -> None:
        counter.updates += 1  # one real update, as the optimizer's step post-hook counts it
        sched.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    print(f"{'groups':>6} {'scheduler':<28} {'us/step':>8} {'ratio':>6}")
    for groups in args.groups:
        with warnings.catch_warnings():  # LambdaLR warns: stepped before optimizer.step()
            warnings.simplefilter("ignore")
            anchor = per_step(
                torch.optim.lr_scheduler.LambdaLR(optimizer(groups), lam).step, args.steps
            )
        rows = [
            ("LambdaLR (anchor)", anchor),
            ("steadystep Scheduler", per_step(ours(optimizer(groups)), args.steps)),
            (
                "steadystep Scheduler tensor",
                per_step(ours(optimizer(groups), tensor=True), args.steps),
            ),
        ]
        for name, sec in rows:
            print(f"{groups:>6} {name:<28} {sec * 1e6:8.2f} {sec / anchor:6.2f}")


if __name__ == "__main__":
    main()
