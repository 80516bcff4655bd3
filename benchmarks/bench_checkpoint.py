"""What checkpoint integrity costs: save_checkpoint / load_checkpoint against plain torch.

    python benchmarks/bench_checkpoint.py [--mb 200] [--repeat 3]

The anchor is ``torch.save`` to a file + fsync, and ``torch.load(weights_only=True)``, on the
same state (one model's worth of float32 tensors). steadystep adds: the type walk, hashing what
is written (SHA-256), reading the file back before the rename (hash + a memory-mapped load),
and on load hashing the whole file before reading it. Prints the best time of each and the
ratio to the anchor.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import steadystep as ss


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.mb * 2**20 // 4 // 100
    model = {f"layer{i}.weight": torch.randn(n) for i in range(100)}
    with tempfile.TemporaryDirectory() as tmp:
        plain, ours = Path(tmp) / "plain.pt", Path(tmp) / "ours.pt"

        def torch_save() -> None:
            with open(plain, "wb") as f:
                torch.save({"model": model}, f)
                f.flush()
                os.fsync(f.fileno())

        rows = [
            ("save", best(torch_save, args.repeat),
             best(lambda: ss.torch.save_checkpoint(ours, model=model), args.repeat)),
            ("load", best(lambda: torch.load(plain, weights_only=True), args.repeat),
             best(lambda: ss.torch.load_checkpoint(ours), args.repeat)),
        ]  # fmt: skip
    print(f"{args.mb} MB of float32 tensors, best of {args.repeat}")
    print(f"{'':6}{'torch (anchor)':>16}{'steadystep':>12}{'ratio':>8}")
    for name, anchor, mine in rows:
        print(f"{name:6}{anchor:>14.3f} s{mine:>10.3f} s{mine / anchor:>8.2f}")


if __name__ == "__main__":
    main()
