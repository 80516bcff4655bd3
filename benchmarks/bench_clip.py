"""Gradient clipping speed against ``torch.nn.utils.clip_grad_norm_``, measured in the same run.

Prints one ratio per case (``ours / torch``, median of repeated runs; lower is
faster). The cases follow issue 4:

* ``large-clip``: 100M fp32 parameters in 200 tensors, norm above the threshold
  (target: ratio <= 1).
* ``large-noclip``: same, norm under the threshold; on CPU the multiply-by-1
  pass is skipped (target: ratio <= 0.6).
* ``many-small``: 20,000 tensors of 1,000 elements in a contiguous buffer made by
  ``steadystep.torch.contiguous_grads``, the buffer passed to ``clip_grad_norm_``
  (target: ratio <= 0.1, i.e. >= 10x faster); the buffer checks every ``.grad``.
* ``many-small-noclip``: same, under the threshold.
* ``many-small-params``: same gradients, ``model.parameters()`` passed instead of the
  buffer: every ``.grad`` is read and the layout detected (no target; for comparison).
* ``many-small-checked``: the buffer passed, after ``optimizer.zero_grad()`` (set_to_none)
  and a backward: the buffer re-checks every ``.grad`` once (no target; for comparison).
* ``large-fold`` / ``many-small-fold``: clipping plus a fused AdamW step. torch's
  ``clip_grad_norm_`` + ``step()`` against steadystep's ``fold=True`` (the coefficient
  rides in the step's ``grad_scale`` input, no separate multiply pass); the line also
  shows steadystep without folding (no target; measures what folding saves).
* ``many-small-unverified``: ``many-small`` with ``contiguous_grads(params, verify=False)``:
  the buffer does not check every ``.grad`` on each call (the user promises not to change
  the model between clips); measures what the default check costs.
* ``many-small-step``: a whole step, zero_grad + forward + backward + clip, on the same
  20,000 parameters: torch's ``zero_grad()`` and ``clip_grad_norm_`` against
  ``buf.zero_grad()`` and ``clip_grad_norm_(buf)`` (the buffer's per-parameter
  backward hook included; no target; the end-to-end effect).

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


Runs = dict[str, Callable[[], object]]


def _medians(
    runs: Runs,
    repeat: int,
    device: torch.device,
    after: Callable[[], object] | None = None,
    before: Runs | None = None,
) -> dict[str, float]:
    """Median milliseconds of each run over ``repeat`` rounds (after one warm-up round).

    The runs take turns, in an order that rotates every round so that none always
    follows the same neighbour; ``before[label]`` and ``after`` run, untimed, around
    each call.
    """
    times: dict[str, list[float]] = {label: [] for label in runs}
    labels = list(runs)
    for i in range(repeat + 1):
        for label in labels[i % len(labels) :] + labels[: i % len(labels)]:
            if before is not None and label in before:
                before[label]()
            elapsed = _time_ms(runs[label], device)
            if after is not None:
                after()
            if i:  # the first round warms up
                times[label].append(elapsed)
    return {label: statistics.median(t) for label, t in times.items()}


def _report(name: str, ms: dict[str, float], extra: str = "") -> float:
    ratio = ms["ours"] / ms["torch"]
    print(
        f"{name:>21}: torch {ms['torch']:8.2f} ms  steadystep {ms['ours']:8.2f} ms  "
        f"RATIO {ratio:.3f}{extra}"
    )
    return ratio


def _compare(
    name: str,
    params: list[torch.nn.Parameter],
    clip: bool,
    device: torch.device,
    repeat: int,
    target: object = None,
    before: Callable[[], object] | None = None,
) -> float:
    """torch and steadystep clipping the same gradients.

    When ``clip``, the bound is half the current norm and the gradients are restored
    (x2, untimed) after each run, so every timed call really scales (and no value
    drifts into denormals); otherwise the bound is far above the norm. steadystep clips
    ``target`` (default: ``params``); ``before`` runs, untimed, ahead of each of its calls.
    """
    ours = params if target is None else target
    grads = [p.grad for p in params]
    norm = float(torch.nn.utils.get_total_norm(grads))
    max_norm = norm / 2 if clip else norm * 1e6

    def restore() -> None:
        if clip:
            torch._foreach_mul_(grads, 2.0)

    runs: Runs = {
        "torch": lambda: torch.nn.utils.clip_grad_norm_(params, max_norm),
        "ours": lambda: sst.clip_grad_norm_(ours, max_norm),  # type: ignore[call-overload]
    }
    prepare = {"ours": before} if before is not None else None
    return _report(name, _medians(runs, repeat, device, restore, prepare))


def _compare_steps(name: str, params: list[torch.nn.Parameter], buf: object, repeat: int) -> float:
    """One zero_grad + forward + backward + clip, torch's way and ours."""
    opt = torch.optim.SGD(params, lr=0.0)
    weights = torch.linspace(0.5, 1.5, len(params))

    def backward() -> None:
        torch.stack([p.pow(2).sum() for p in params]).mul(weights).sum().backward()

    def run_torch() -> None:
        opt.zero_grad()
        backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)

    def run_ours() -> None:
        buf.zero_grad()  # type: ignore[attr-defined]
        backward()
        sst.clip_grad_norm_(buf, 1.0)  # type: ignore[call-overload]

    return _report(name, _medians({"torch": run_torch, "ours": run_ours}, repeat, params[0].device))


def _compare_fold(
    name: str, params: list[torch.nn.Parameter], repeat: int, target: object = None
) -> float:
    """Clip + fused AdamW step: torch, steadystep with fold, steadystep without."""
    clipped = params if target is None else target
    grads = [p.grad for p in params]
    max_norm = float(torch.nn.utils.get_total_norm(grads)) / 2
    opt = torch.optim.AdamW(params, lr=1e-9, fused=True)
    opt.step()  # allocate the state outside the timed runs

    def run_torch() -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()

    def run_fold() -> None:
        sst.clip_grad_norm_(clipped, max_norm, optimizer=opt, fold=True)  # type: ignore[call-overload]
        opt.step()

    def run_unfolded() -> None:
        sst.clip_grad_norm_(clipped, max_norm)  # type: ignore[call-overload]
        opt.step()

    def restore() -> None:
        torch._foreach_mul_(grads, 2.0)  # undo the halving, untimed

    runs: Runs = {"torch": run_torch, "ours": run_fold, "unfolded": run_unfolded}
    ms = _medians(runs, repeat, params[0].device, restore)
    unfolded = f"  (without fold {ms['unfolded']:.2f} ms, {ms['unfolded'] / ms['torch']:.3f})"
    return _report(name, ms, unfolded)


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
        _compare_fold("large-fold", params, args.repeat)
        del params

    if "small" in cases:
        n = int(20_000 * args.scale)
        params = _params(n, 1_000, device)
        buf = sst.contiguous_grads(params)
        _compare("many-small", params, True, device, args.repeat, buf)
        _compare("many-small-noclip", params, False, device, args.repeat, buf)
        _compare("many-small-params", params, True, device, args.repeat)

        def fresh_grad() -> None:  # set_to_none, then a backward allocates a new gradient
            params[0].grad = None
            params[0].sum().backward()  # the buffer's hook copies it in, marks a check due

        _compare("many-small-checked", params, True, device, args.repeat, buf, fresh_grad)
        buf.remove()  # one buffer per parameter: the same gradients, checks left out
        trusted = sst.contiguous_grads(params, verify=False)
        _compare("many-small-unverified", params, True, device, args.repeat, trusted)
        trusted.remove()
        buf = sst.contiguous_grads(params)
        _compare_fold("many-small-fold", params, args.repeat, buf)
        _compare_steps("many-small-step", params, buf, args.repeat)


if __name__ == "__main__":
    main()
