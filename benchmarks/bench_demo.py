"""The full-length ``steadystep demo``: its outcome and its time.

Runs ``steadystep demo`` with its defaults in a subprocess (as a user would) and prints, from the
report's metrics.json: each run's final training loss, validation loss, loss spikes and largest
gradient norm, whether the plain run struggled (diverged, or a validation loss at least 0.3 nats
worse) and the total time. The anchor, measured in the same run on the same machine, is the time
of bare forward+backward+AdamW updates of the same model: ``demo time / anchor`` is the demo's
overhead over the training it must do (two runs, evaluation, report).

    python benchmarks/bench_demo.py [--steps N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def anchor_seconds(steps: int, device: str) -> float:
    """Seconds for ``steps`` bare training updates of the demo model (same shape, same batch)."""
    import torch

    from steadystep.experiments import data, demo

    config = demo.DEFAULTS
    corpus = data.load_corpus()
    model = demo.make_model(config, len(corpus.vocab), torch.device(device))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sampler = data.BatchSampler(
        corpus.train, config.batch_size, config.context, seed=0, device=device
    )
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.loss(*sampler.sample())
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's own")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from steadystep.experiments import demo

    steps = args.steps or demo.DEFAULTS.steps
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "steadystep", "demo", "--no-progress"]
        command += ["--out", tmp, "--device", args.device, "--steps", str(steps)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        total = time.perf_counter() - start
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    anchor = anchor_seconds(2 * steps, args.device)
    plain, recipe = metrics["runs"]
    print(f"\ndemo: {steps} steps x 2 runs on {metrics['device']}")
    for run in (plain, recipe):
        status = "diverged" if run["diverged_at"] is not None else "finished"
        print(
            f"  {run['name']:<11} final train {run['final_loss']:.3f}  val {run['val_loss']:.3f}  "
            f"spikes {run['spikes']:>3}  max grad norm {max(run['grad_norm']):.3g}  {status}"
        )
    gap = plain["val_loss"] - recipe["val_loss"]
    struggled = plain["diverged_at"] is not None or gap >= 0.3
    print(f"  val loss gap (plain - steadystep): {gap:.3f} nats/char; plain struggled: {struggled}")
    print(f"  wall time {total:.1f} s (budget 180 s on 2 CPU cores)")
    print(
        f"  anchor (bare updates, same count) {anchor:.1f} s; demo / anchor = {total / anchor:.2f}"
    )
    return 0 if struggled else 1


if __name__ == "__main__":
    sys.exit(main())
