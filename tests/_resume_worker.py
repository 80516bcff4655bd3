"""A small deterministic training job that checkpoints and resumes (run by test_reliability_resume).

``python tests/_resume_worker.py DIR --steps N --every K [--pause-at S]``

Trains a tiny MLP with AdamW, a steadystep ``Scheduler`` (warmup + cosine) and ``ZClip``
(``nonfinite="skip"``) on CPU with one thread. Batches are a pure function of the step (a
generator seeded by it), some are scaled up to make gradient spikes and one has a NaN, so the
clipper clips and skips. After every update it appends ``step lr coefficient loss skipped`` to
``DIR/trajectory.log`` (floats as ``float.hex``: bitwise) and prints ``STEP t``; every ``K``
updates it saves ``DIR/ckpt.pt`` with :func:`steadystep.torch.save_checkpoint`. Started again on
the same ``DIR`` it resumes from that checkpoint. ``--pause-at S`` makes the checkpoint after
update ``S`` stop half-written (it prints ``PAUSED`` and sleeps), for the killer to strike then.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

SPIKES = {40: 30.0, 41: 30.0, 97: 50.0, 150: 80.0}  # step -> input scale (gradient spikes)
NAN_STEPS = {123}  # a NaN in the batch: the update is skipped


def batch(step: int) -> tuple[object, object]:
    import torch

    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 8, generator=g, dtype=torch.float32)
    y = x[:, :2].sum(dim=1, keepdim=True) + 0.1 * torch.randn(16, 1, generator=g)
    x = x * SPIKES.get(step, 1.0)
    if step in NAN_STEPS:
        x[0, 0] = float("nan")
    return x, y


def pause_mid_write(torch: object) -> None:
    """Make the next ``torch.save`` write half its bytes to disk, then hang (to be killed)."""
    real_save = torch.save  # type: ignore[attr-defined]

    def half_then_hang(obj: object, f: io.BufferedWriter) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        print("PAUSED", flush=True)
        time.sleep(120)

    torch.save = half_then_hang  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=7)
    parser.add_argument("--pause-at", type=int, default=-1)
    args = parser.parse_args(argv)

    import torch

    import steadystep as ss

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = ss.warmup(ss.cosine(3e-2, 3e-4, steps=args.steps - 20), steps=20)
    sched = ss.torch.Scheduler(opt, schedule)
    clipper = ss.torch.ZClip(
        model.parameters(), warmup_steps=10, max_norm=5.0, nonfinite="skip", optimizer=opt
    )

    ckpt = args.dir / "ckpt.pt"
    start, skips = 0, 0
    if ckpt.exists():
        saved = ss.torch.load_checkpoint(
            ckpt, model=model, optimizer=opt, scheduler=sched, clipper=clipper
        )
        start, skips = saved["progress"]["step"], saved["progress"]["skips"]
        print(f"RESUMED {start}", flush=True)

    with open(args.dir / "trajectory.log", "a", encoding="ascii") as log:
        for t in range(start, args.steps):
            lr = opt.param_groups[0]["lr"]
            x, y = batch(t)
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            clipper.clip()
            result = clipper.last
            assert result is not None
            skipped = bool(result.skipped)
            skips += skipped
            opt.step()
            sched.step()
            coefficient = float(result.coefficient)
            log.write(f"{t} {lr.hex()} {coefficient.hex()} {loss.item().hex()} {int(skipped)}\n")
            log.flush()
            print(f"STEP {t}", flush=True)
            done = t + 1
            if done % args.every == 0 or done == args.steps:
                if done == args.pause_at:
                    pause_mid_write(torch)
                ss.torch.save_checkpoint(
                    ckpt,
                    model=model,
                    optimizer=opt,
                    scheduler=sched,
                    clipper=clipper,
                    progress={"step": done, "skips": skips},
                )
    print(f"DONE {skips}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
