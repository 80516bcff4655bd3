"""Metric-driven control on the demo model: reduce on plateau, and loss-aware step skipping.

Experiment 1 (plateau): a constant LR high enough that the validation loss stalls, the same LR
reduced on plateau of the validation loss (``ss.plateau``, fed every ``--eval-every`` updates),
and a fixed warmup + cosine schedule as the tuned reference.

Experiment 2 (bad batches): every ``--bad-every``-th batch has its targets replaced by random
tokens (label noise: a corrupted batch); the run trains with no skipping, with
``ss.torch.LossSpikeSkip(signal="loss")`` and with ``signal="norm"`` (the gradient-norm rule of
``SpikeSkip``).

Each arm runs ``--seeds`` seeds (model init and batch order); the table shows medians over seeds
of the final validation loss (lower is better). The anchor is the constant-LR arm of the same
run: ratios are ``arm / anchor``. Writes ``docs/results/plateau.json`` and
``docs/results/plateau.png``.

    python benchmarks/bench_plateau.py [--steps 300] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import steadystep as ss
from steadystep.experiments.data import BatchSampler, load_corpus
from steadystep.experiments.demo import DemoConfig, make_model

ROOT = Path(__file__).resolve().parents[1]


def evaluate(model: Any, corpus: Any, context: int, batches: int = 4) -> float:
    sampler = BatchSampler(corpus.val, 32, context, seed=12345)
    model.eval()
    with torch.no_grad():
        total = sum(float(model.loss(*sampler.sample())) for _ in range(batches))
    model.train()
    return total / batches


def run(arm: str, seed: int, args: argparse.Namespace, corpus: Any) -> dict[str, Any]:
    cfg = DemoConfig(
        d_model=32, n_layers=2, n_heads=2, context=32, batch_size=16, norm="pre", seed=seed
    )
    model = make_model(cfg, len(corpus.vocab), "cpu")
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1.0, betas=(0.9, 0.99), weight_decay=0.01)
    lr = args.lr
    if arm == "cosine":
        schedule: ss.Schedule = ss.warmup(ss.cosine(lr, lr / 10, steps=args.steps - 30), steps=30)
    elif arm == "plateau":  # reduce after 2 evaluations in a row that improved < 1%
        schedule = ss.plateau(ss.constant(lr), factor=0.5, patience=1, threshold=0.01)
    elif arm == "plateau-eager":  # reduce after any evaluation that improved < 2%
        schedule = ss.plateau(ss.constant(lr), factor=0.5, patience=0, threshold=0.02)
    else:
        schedule = ss.constant(lr if arm == "constant" else args.lr_skip)
    sched = ss.torch.Scheduler(opt, schedule)
    guard = None
    if arm in ("skip-loss", "skip-norm"):
        signal = arm.split("-")[1]
        guard = ss.torch.LossSpikeSkip(
            params, signal=signal, window=32, sigma=3.0, min_history=16, optimizer=opt
        )
    batches = BatchSampler(corpus.train, cfg.batch_size, cfg.context, seed=seed)
    noise = torch.Generator().manual_seed(1000 + seed)
    bad = arm.startswith("skip") or arm == "no-skip"
    vals, lrs, skipped = [], [], 0
    for step in range(args.steps):
        x, y = batches.sample()
        if bad and step % args.bad_every == args.bad_every - 1:
            y = torch.randint(0, len(corpus.vocab), y.shape, generator=noise)
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if guard is not None:
            skipped += int(guard.check(loss.detach()))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if (step + 1) % args.eval_every == 0:
            v = evaluate(model, corpus, cfg.context)
            vals.append(v)
            if arm.startswith("plateau"):
                sched.step(v)
    return {"arm": arm, "seed": seed, "val": vals, "lr": lrs, "skipped": skipped}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--lr-skip", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--bad-every", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument(
        "--only", nargs="*", help="run these arms and merge them into an existing plateau.json"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    corpus = load_corpus()
    arms = ["constant", "plateau", "plateau-eager", "cosine", "no-skip", "skip-loss", "skip-norm"]
    results = args.out / "results" / "plateau.json"
    todo = args.only or arms
    start = time.perf_counter()
    runs = [run(a, s, args, corpus) for a in todo for s in range(args.seeds)]
    seconds = time.perf_counter() - start
    if args.only:
        old = json.loads(results.read_text())
        runs = [r for r in old["runs"] if r["arm"] not in todo] + runs
        seconds += old["seconds"]

    def med(arm: str, key: str = "final") -> float:
        rs = [r for r in runs if r["arm"] == arm]
        vals = [r["val"][-1] if key == "final" else min(r["val"]) for r in rs]
        return statistics.median(vals)

    anchor = med("constant")
    print(f"{args.seeds} seeds x {args.steps} updates, {seconds:.0f} s in all")
    print(f"{'arm':<10} {'final val':>9} {'/anchor':>8} {'best val':>9} {'skipped':>8}")
    for arm in arms:
        skips = statistics.median(r["skipped"] for r in runs if r["arm"] == arm)
        print(
            f"{arm:<10} {med(arm):9.4f} {med(arm) / anchor:8.3f} {med(arm, 'best'):9.4f} "
            f"{skips:8.0f}"
        )
    args.out.joinpath("results").mkdir(parents=True, exist_ok=True)
    meta = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "only"}
    results.write_text(json.dumps({"args": meta, "seconds": seconds, "runs": runs}) + "\n")
    plot(runs, args, args.out / "results" / "plateau.png")


def plot(runs: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = [(i + 1) * args.eval_every for i in range(args.steps // args.eval_every)]
    for ax, arms, title in (
        (
            axes[0],
            ["constant", "plateau", "plateau-eager", "cosine"],
            "1: validation loss (median)",
        ),
        (axes[2], ["no-skip", "skip-loss", "skip-norm"], "2: validation loss, bad batches"),
    ):
        for arm in arms:
            curves = [r["val"] for r in runs if r["arm"] == arm]
            ax.plot(x, [statistics.median(c[i] for c in curves) for i in range(len(x))], label=arm)
        ax.set_xlabel("update")
        ax.set_title(title, fontsize=10)
        ax.legend()
    for arm in ("constant", "plateau-eager", "cosine"):
        axes[1].plot(next(r for r in runs if r["arm"] == arm)["lr"], label=arm)
    axes[1].set_title("1: learning rate (seed 0)", fontsize=10)
    axes[1].set_xlabel("update")
    axes[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
