"""Gradient clipping speed against ``torch.nn.utils.clip_grad_norm_``, measured in the same run.

Prints one ratio per case (``ours / torch``, median of repeated runs; lower is
faster). The cases follow issue 4:

* ``large-clip``: 100M fp32 parameters in 200 tensors, norm above the threshold
  (target: ratio <= 1).
* ``large-noclip``: same, norm under the threshold; on CPU the multiply-by-1
  pass is skipped (target: ratio <= 0.6).
* ``many-small``: 20,000 tensors of 1,000 elements in a contiguous buffer made by
  ``steadystep.torch.contiguous_grads`` (target: ratio <= 0.1, i.e. >= 10x faster).
* ``many-small-noclip``: same, under the threshold.

Run: ``PYTHONPATH=src python3 benchmarks/bench_clip.py [--device cuda] [--repeat 7]``.
Sizes can be reduced with ``--scale 0.25`` on small machines.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

import steadystep.torch as sst


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _params(n_tensors: int, numel: int, device: torch.device) -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.empty(numel, device=device)) for _ in range(n_tensors)]
    for p in params:
        p.grad = torch.randn(numel, device=device)
    return params


def _compare(
    name: str, params: list[torch.nn.Parameter], clip: bool, device: torch.device, repeat: int
) -> float:
    """Median time of torch and of steadystep on the same gradients, runs interleaved.

    When ``clip``, the bound is half the current norm and the gradients are restored
    (x2, untimed) after each run, so every timed call really scales (and no value
    drifts into denormals); otherwise the bound is far above the norm.
    """
    grads = [p.grad for p in params]
    norm = float(torch.nn.utils.clip_grad_norm_(params, math.inf))
    max_norm = norm / 2 if clip else norm * 1e6

    def restore() -> None:
        if clip:
            torch._foreach_mul_(grads, 2.0)

    def run_torch() -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def run_ours() -> None:
        sst.clip_grad_norm_(params, max_norm)

    times: dict[str, list[float]] = {"torch": [], "ours": []}
    for i in range(repeat + 1):
        for label, fn in (("torch", run_torch), ("ours", run_ours)):
            elapsed = _time_ms(fn, device)
            restore()
            if i:  # the first round warms up
                times[label].append(elapsed)
    torch_ms, ours_ms = statistics.median(times["torch"]), statistics.median(times["ours"])
    ratio = ours_ms / torch_ms
    print(f"{name:>18}: torch {torch_ms:8.2f} ms  steadystep {ours_ms:8.2f} ms  RATIO {ratio:.3f}")
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
        _compare("large-clip", params, True, device, args.repeat)
        _compare("large-noclip", params, False, device, args.repeat)
        del params

    if "small" in cases:
        n = int(20_000 * args.scale)
        params = _params(n, 1_000, device)
        sst.contiguous_grads(params)
        _compare("many-small", params, True, device, args.repeat)
        _compare("many-small-noclip", params, False, device, args.repeat)


if __name__ == "__main__":
    main()
