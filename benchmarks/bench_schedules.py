"""Vectorised schedule evaluation: 1,000,000 steps of a 3-part composite.

Target (issue 2): well under 50 ms on the 2-core CI machine. Printed against an anchor measured in
the same run: the same curve hand-written as one NumPy expression (``np.where`` over the whole
array, the way people write it without steadystep).

    python3 benchmarks/bench_schedules.py
"""

from __future__ import annotations

import time

import numpy as np

import steadystep as ss

N = 1_000_000
WARMUP, DECAY = 100_000, 600_000
PEAK, FLOOR = 1e-3, 1e-5


def median_ms(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def hand_written(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float64)
    x = np.clip((t - WARMUP) / DECAY, 0.0, 1.0)
    cos = FLOOR + (PEAK - FLOOR) * 0.5 * (1 + np.cos(np.pi * x))
    return np.where(t < WARMUP, PEAK * t / WARMUP, np.where(t < WARMUP + DECAY, cos, FLOOR))


def main() -> None:
    schedule = ss.warmup(ss.cosine(PEAK, FLOOR, steps=DECAY), steps=WARMUP) >> ss.constant(FLOOR)
    steps = np.arange(N)
    np.testing.assert_allclose(schedule(steps), hand_written(steps), rtol=1e-12)
    ours = median_ms(lambda: schedule(steps))
    anchor = median_ms(lambda: hand_written(steps))
    shuffled = np.random.default_rng(0).permutation(steps)
    unsorted = median_ms(lambda: schedule(shuffled))
    print(f"schedule: {schedule!r}")
    print(f"steadystep, sorted steps:   {ours:7.1f} ms  (target < 50 ms)")
    print(f"steadystep, shuffled steps: {unsorted:7.1f} ms")
    print(f"hand-written np.where:      {anchor:7.1f} ms")
    print(f"ratio steadystep / hand-written: {ours / anchor:.2f}x")


if __name__ == "__main__":
    main()
