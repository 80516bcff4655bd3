"""The stability benchmark: what warmup, decay and clipping buy, measured on this machine.

``steadystep bench stability [--quick] [--out DIR] [--experiments 1,2,3,4]`` (or ``python -m
steadystep.experiments.stability``) runs up to four experiments on character language models
of Python's own help texts (:mod:`steadystep.experiments.data`), every cell with several seeds
(1, 2 and 3 by default; 4 on request, it is the longest):

1. **Warmup and Post-LN** (Xiong et al. 2020; Liu et al. 2020; Wortsman et al. 2023): the small
   transformer of :mod:`steadystep.experiments.models`, Post-LN and Pre-LN, Adam(0.9, 0.98),
   cosine decay to 10% of the peak, with no warmup, a linear warmup over 10% of the run, or the
   untuned ``2 / (1 - beta2)`` rule (:func:`steadystep.untuned_warmup`), over a log-spaced LR
   grid. Reports final validation loss per cell, the largest stable LR per recipe and the LR
   sensitivity ``E_lr[min(loss(lr), loss_init) - loss*]``.
2. **Clipping and exploding gradients** (Pascanu et al. 2013): a tanh RNN
   (:class:`steadystep.experiments.rnn.CharRNN`) initialised above the critical recurrent scale,
   plain SGD over an LR grid, without clipping, with global-norm clipping and with AutoClip,
   ZClip and AGC. Reports bits per character, divergences, loss spikes, fraction of steps
   clipped.
3. **Decay shapes** (Hägele et al. 2024): constant, cosine, linear and WSD with a 1-sqrt cooldown
   on experiment 1's best setting (norm, warmup and LR; best on the first seed, so that it
   can start before the other seeds of experiment 1 are done).
4. **Depth** (Xiong et al. 2020; Liu et al. 2020, "Understanding the Difficulty of Training
   Transformers"): experiment 1's recipes on a narrower transformer at several depths, for
   longer runs (:func:`depth_plan`), and the mechanism: each layer's gradient norm before the
   first update and at a few later ones, and the relative update ``||ΔW|| / ||W||`` of each
   layer's weight matrices (:data:`PROBES`, :func:`layer_groups`).

A diverged run is counted, never dropped (see :mod:`.stability_harness`). The command writes
``stability.json`` (every run, summaries, settings), ``stability_runs.csv``,
``stability_cells.csv``, ``stability.md`` (tables) and PNG plots into ``--out``, atomically.
``docs/stability.md`` holds the results of the full run and how the grid was calibrated.

References:
    Xiong et al. (2020). On Layer Normalization in the Transformer Architecture.
    https://arxiv.org/abs/2002.04745
    Liu et al. (2020). On the Variance of the Adaptive Learning Rate and Beyond (RAdam).
    https://arxiv.org/abs/1908.03265
    Ma & Yarats (2021). On the adequacy of untuned warmup for adaptive optimization.
    https://arxiv.org/abs/1910.04209
    Wortsman et al. (2023). Small-scale proxies for large-scale Transformer training
    instabilities. https://arxiv.org/abs/2309.14322
    Liu et al. (2020). Understanding the Difficulty of Training Transformers.
    https://arxiv.org/abs/2004.08249
    Pascanu, Mikolov, Bengio (2013). On the difficulty of training recurrent neural networks.
    https://arxiv.org/abs/1211.5063
    Hägele et al. (2024). Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations. https://arxiv.org/abs/2405.18392
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import steadystep as ss

from . import stability_harness as h

__all__ = [
    "FULL",
    "PROBES",
    "QUICK",
    "Plan",
    "analyse",
    "best_setting",
    "depth_plan",
    "layer_groups",
    "main",
    "make_clipper",
    "markdown",
    "replot",
    "run",
    "run_task",
    "tf_schedule",
    "unigram_loss",
    "warmup_steps",
]

BETAS = (0.9, 0.98)
DECAY_FLOOR = 0.1  # cosine decays to 10% of the peak (Wortsman et al.; Hägele et al.)
SEEDS = (0, 1, 2)  # frozen after calibration; see docs/stability.md
VAL_SEED = 1234
LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a run of the benchmark does; :data:`FULL` and :data:`QUICK` are the two."""

    seeds: tuple[int, ...]
    # experiment 1 and 3: transformer
    tf_lrs: tuple[float, ...]
    tf_warmups: tuple[str, ...]
    tf_steps: int
    tf_layers: int
    tf_width: int
    # experiment 2: RNN
    rnn_lrs: tuple[float, ...]
    rnn_clips: tuple[str, ...]
    rnn_steps: int
    rnn_hidden: int
    # experiment 3
    shapes: tuple[str, ...]
    batch: int = 16
    context: int = 64
    val_batches: int = 8
    linear_warmup_fraction: float = 0.1
    recurrent_scale: float = 2.0
    clip_norm: float = 1.0  # global-norm clipping threshold (BERT's and many LMs' 1.0)
    autoclip_percentile: float = 10.0  # Seetharaman et al. 2020's default
    agc_clipping: float = 0.01  # Brock et al. 2021 / timm's usual value
    curve_points: int = 10
    # experiment 4: depth (a narrower, shorter-context transformer, so that 12 blocks fit)
    depths: tuple[int, ...] = (3, 6, 12)
    depth_lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    depth_warmups: tuple[str, ...] = ("none", "linear", "untuned")
    depth_steps: int = 600
    depth_width: int = 32
    depth_context: int = 16


FULL = Plan(
    seeds=SEEDS,
    tf_lrs=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    tf_warmups=("none", "linear", "untuned"),
    tf_steps=240,
    tf_layers=4,
    tf_width=64,
    rnn_lrs=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    rnn_clips=("none", "global", "autoclip", "zclip", "agc"),
    rnn_steps=300,
    rnn_hidden=128,
    shapes=("constant", "cosine", "linear", "wsd"),
)

# CI smoke test: every code path, tiny models; lr=100 for the unclipped RNN must diverge.
QUICK = Plan(
    seeds=(0, 1),
    tf_lrs=(1e-3, 1e-1),
    tf_warmups=("none", "linear"),
    tf_steps=30,
    tf_layers=2,
    tf_width=32,
    rnn_lrs=(0.1, 100.0),
    rnn_clips=("none", "global", "autoclip", "zclip", "agc"),
    rnn_steps=30,
    rnn_hidden=32,
    shapes=("constant", "wsd"),
    batch=8,
    context=32,
    val_batches=2,
    curve_points=3,
    depths=(1, 2),
    depth_lrs=(1e-3, 1e-1),
    depth_warmups=("none", "linear"),
    depth_steps=20,
    depth_width=16,
    depth_context=16,
)

# ------------------------------------------------------------------ schedules


def warmup_steps(warmup: str, plan: Plan) -> int:
    """Warmup length of a recipe: 0, a fraction of the run, or Ma & Yarats' 2/(1 - beta2)."""
    if warmup == "none":
        return 0
    if warmup == "linear":
        return round(plan.linear_warmup_fraction * plan.tf_steps)
    if warmup == "untuned":
        return ss.untuned_warmup(ss.constant(1.0), beta2=BETAS[1]).steps
    raise ValueError(
        f"Argument `warmup` must be 'none', 'linear' or 'untuned'. Received: warmup={warmup!r}"
    )


def tf_schedule(warmup: str, lr: float, plan: Plan, shape: str = "cosine") -> ss.Schedule:
    """The LR schedule of one transformer run: linear warmup (prefix), then ``shape``.

    ``"cosine"`` (experiment 1) decays to ``DECAY_FLOOR * lr``; ``"linear"`` and ``"wsd"``
    (1-sqrt cooldown over the last 20% of the run, Hägele et al.) decay to 0; ``"constant"``
    holds ``lr``. The whole schedule lasts ``plan.tf_steps``.
    """
    w = int(warmup_steps(warmup, plan))
    rest = plan.tf_steps - w
    if rest <= 0:
        raise ValueError(
            f"Argument `warmup` gives {w} warmup steps, not fewer than the run's "
            f"{plan.tf_steps} steps. Received: warmup={warmup!r}"
        )
    if shape == "wsd":
        cooldown = round(0.2 * plan.tf_steps)
        return ss.presets.wsd(lr, w, stable_steps=rest - cooldown, decay_steps=cooldown)
    body: ss.Schedule
    if shape == "cosine":
        body = ss.cosine(lr, DECAY_FLOOR * lr, rest)
    elif shape == "linear":
        body = ss.linear(lr, 0.0, rest)
    elif shape == "constant":
        body = ss.constant(lr, rest)
    else:
        raise ValueError(
            "Argument `shape` must be 'constant', 'cosine', 'linear' or 'wsd'. "
            f"Received: shape={shape!r}"
        )
    if warmup == "untuned":
        return ss.untuned_warmup(body, beta2=BETAS[1])
    return ss.warmup(body, w) if w else body


# ------------------------------------------------------------------ training


@functools.cache
def _corpus() -> Any:
    from .data import load_corpus

    return load_corpus()


@functools.cache
def _val_batches(n: int, batch: int, context: int) -> list[Any]:
    from .data import BatchSampler

    sampler = BatchSampler(_corpus().val, batch, context, seed=VAL_SEED)
    return [sampler.sample() for _ in range(n)]


@functools.cache
def unigram_loss() -> float:
    """Cross-entropy (nats/char) of the validation text under the training text's character
    frequencies (add-one smoothed): the loss of a model that learned only the frequencies."""
    corpus = _corpus()
    counts = np.bincount(corpus.train, minlength=len(corpus.vocab)) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[corpus.val].mean())


def _evaluate(model: Any, batches: Sequence[Any]) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        loss = sum(model.loss(x, y).item() for x, y in batches) / len(batches)
    model.train()
    return loss


def _scheduler(optimizer: Any, schedule: ss.Schedule) -> Any:
    """``steadystep.torch.Scheduler``: ``lr = schedule(t)`` before update ``t``."""
    from steadystep.torch import Scheduler

    return Scheduler(optimizer, schedule)


def make_clipper(method: str, params: Sequence[Any], plan: Plan) -> Callable[[], bool] | None:
    """A function that clips the gradients of ``params`` in place and says whether it did.

    ``"global"`` is :func:`steadystep.torch.clip_grad_norm_` at ``plan.clip_norm``;
    ``"autoclip"``, ``"zclip"`` and ``"agc"`` are :class:`steadystep.torch.AutoClip` (10th
    percentile of the norm history), :class:`steadystep.torch.ZClip` (paper defaults) and
    :class:`steadystep.torch.AGC` (``plan.agc_clipping``, every parameter). "Clipped" means
    the gradient was scaled down at all (for AGC: any unit of any parameter).
    """
    from steadystep.torch import AGC, AutoClip, ZClip, clip_grad_norm_

    params = list(params)
    if method == "none":
        return None
    if method == "global":
        return lambda: bool(clip_grad_norm_(params, plan.clip_norm, return_result=True).clipped)
    rules: dict[str, Callable[[], Any]] = {
        "autoclip": lambda: AutoClip(params, percentile=plan.autoclip_percentile),
        "zclip": lambda: ZClip(params),
        "agc": lambda: AGC(params, clipping=plan.agc_clipping),
    }
    if method not in rules:
        raise ValueError(
            "Argument `method` must be 'none', 'global', 'autoclip', 'zclip' or 'agc'. "
            f"Received: method={method!r}"
        )
    clipper = rules[method]()

    def clip() -> bool:
        clipper.clip()
        return bool(clipper.last.clipped)

    return clip


def _train(
    model: Any,
    optimizer: Any,
    schedule: ss.Schedule,
    steps: int,
    seed: int,
    plan: Plan,
    clipper: Callable[[], bool] | None = None,
    curve_every: int = 0,
    probes: Sequence[int] = (),
) -> dict[str, Any]:
    from .data import BatchSampler

    val = _val_batches(plan.val_batches, plan.batch, plan.context)
    sampler = BatchSampler(_corpus().train, plan.batch, plan.context, seed=seed)
    scheduler = _scheduler(optimizer, schedule)
    init = _evaluate(model, val)
    curve = [[0, init]]
    losses: list[float] = []
    probed: list[tuple[list[float], list[float]]] = []
    clipped = 0
    for t in range(steps):
        x, y = sampler.sample()
        loss = model.loss(x, y)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break  # diverged: stop here, the run is counted as diverged
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clipper is not None:
            clipped += clipper()
        if t in probes:
            probe = _Probe(model)
        optimizer.step()
        if t in probes:
            probed.append(probe.after())
        scheduler.step()
        if curve_every and (t + 1) % curve_every == 0 and t + 1 < steps:
            curve.append([t + 1, _evaluate(model, val)])
    finished = len(losses) == steps and math.isfinite(losses[-1])
    final = _evaluate(model, val) if finished else float("nan")
    curve.append([len(losses), final])
    return {
        "init_loss": init,
        "final_loss": final,
        "unigram_loss": unigram_loss(),
        "diverged": h.is_diverged(final, init),
        "spikes": h.count_spikes(losses),
        "steps_run": len(losses),
        "clip_frac": clipped / len(losses) if clipper is not None else None,
        **({"curve": curve} if curve_every else {}),
        **(_probe_fields(probes, probed) if probes else {}),
    }


class _Probe:
    """Per-layer gradient norm before an update and ``||ΔW|| / ||W||`` of the update.

    Layers are :func:`layer_groups`; only weight matrices count (LayerNorm gains and biases
    would dominate ``||W||`` of a narrow layer without saying anything about its weights).
    """

    def __init__(self, model: Any) -> None:
        self.groups = [ps for _, ps in layer_groups(model)]
        self.before = [[p.detach().clone() for p in ps] for ps in self.groups]
        self.grads = [_norm([p.grad for p in ps if p.grad is not None]) for ps in self.groups]

    def after(self) -> tuple[list[float], list[float]]:
        ratios = [
            _norm([p.detach() - b for p, b in zip(ps, old, strict=True)]) / _norm(old)
            for ps, old in zip(self.groups, self.before, strict=True)
        ]
        return self.grads, ratios


def _norm(tensors: Sequence[Any]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def layer_groups(model: Any) -> list[tuple[str, list[Any]]]:
    """The weight matrices of a :class:`~.models.CharTransformer`, one group per layer:
    ``embed`` (token and position), ``block0`` … ``block{L-1}`` (attention and MLP), ``head``."""
    blocks = [
        (f"block{i}", [b.qkv.weight, b.proj.weight, b.fc.weight, b.out.weight])
        for i, b in enumerate(model.blocks)
    ]
    return [("embed", [model.tok.weight, model.pos.weight]), *blocks, ("head", [model.head.weight])]


def _probe_fields(
    probes: Sequence[int], probed: Sequence[tuple[list[float], list[float]]]
) -> dict[str, Any]:
    """Per-run mechanism numbers: full per-layer tables (JSON) and a few scalars (CSV).

    ``grad_norms[i][j]`` / ``update_ratios[i][j]``: layer ``j`` at update ``probe_steps[i]``
    (a run that diverged has fewer rows). Layers 0 and -1 are the embeddings and the head.
    """
    grads = [[float(f"{g:.4g}") for g in row[0]] for row in probed]
    ratios = [[float(f"{r:.4g}") for r in row[1]] for row in probed]
    blocks = [r[1:-1] for r in ratios]
    return {
        "probe_steps": list(probes)[: len(probed)],
        "grad_norms": grads,
        "update_ratios": ratios,
        "grad_init_first": grads[0][1] if grads else None,
        "grad_init_last": grads[0][-2] if grads else None,
        "grad_init_head": grads[0][-1] if grads else None,
        "update_ratio_max": max((max(b) for b in blocks), default=None),
    }


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Train one cell of the grid with one seed; return its row (never raises on divergence)."""
    import torch

    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    plan = Plan(**task["plan"])
    seed = task["seed"]
    torch.manual_seed(seed)
    vocab = len(_corpus().vocab)
    if task["experiment"] == 2:
        from .rnn import CharRNN

        model: Any = CharRNN(vocab, plan.rnn_hidden, recurrent_scale=plan.recurrent_scale)
        optimizer: Any = torch.optim.SGD(model.parameters(), lr=task["lr"])
        schedule: ss.Schedule = ss.constant(task["lr"])
        clipper = make_clipper(task["clip"], list(model.parameters()), plan)
        out = _train(model, optimizer, schedule, plan.rnn_steps, seed, plan, clipper)
    else:
        from .models import CharTransformer, ModelConfig

        if task["experiment"] == 4:
            plan = depth_plan(plan, task["depth"])
        config = ModelConfig(
            vocab_size=vocab,
            context=plan.context,
            d_model=plan.tf_width,
            n_layers=plan.tf_layers,
            n_heads=4,
            norm=task["norm"],
        )
        model = CharTransformer(config)
        # experiment 4 uses the fused CPU Adam (the same update, ~40% faster at these sizes);
        # 1 and 3 keep the for-loop Adam their committed results were run with
        fused = True if task["experiment"] == 4 else None
        optimizer = torch.optim.Adam(model.parameters(), lr=task["lr"], betas=BETAS, fused=fused)
        schedule = tf_schedule(task["warmup"], task["lr"], plan, task.get("shape", "cosine"))
        every = plan.tf_steps // plan.curve_points if task["experiment"] in (3, 4) else 0
        probes = [t for t in PROBES if t < plan.tf_steps] if task["experiment"] == 4 else []
        out = _train(model, optimizer, schedule, plan.tf_steps, seed, plan, None, every, probes)
    row = {k: v for k, v in task.items() if k != "plan"}
    row.update(
        out,
        seconds=round(time.perf_counter() - start, 2),
        cpu_seconds=round(time.process_time() - cpu, 2),
    )
    return row


# ------------------------------------------------------------------ the grid

# updates whose per-layer gradient norms and update sizes experiment 4 records
PROBES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def depth_plan(plan: Plan, depth: int) -> Plan:
    """The plan of one experiment-4 run: ``depth`` blocks of the narrower, longer run."""
    return dataclasses.replace(
        plan,
        tf_layers=depth,
        tf_width=plan.depth_width,
        tf_steps=plan.depth_steps,
        context=plan.depth_context,
    )


def _tasks(plan: Plan, experiments: Sequence[int]) -> list[dict[str, Any]]:
    p = dataclasses.asdict(plan)
    tasks = []
    if 1 in experiments:
        for norm in ("post", "pre"):
            for warmup in plan.tf_warmups:
                for lr in plan.tf_lrs:
                    tasks += [
                        {"experiment": 1, "norm": norm, "warmup": warmup, "lr": lr, "seed": s}
                        for s in plan.seeds
                    ]
    if 4 in experiments:
        for depth in plan.depths:
            for norm in ("post", "pre"):
                for warmup in plan.depth_warmups:
                    for lr in plan.depth_lrs:
                        tasks += [
                            {"experiment": 4, "depth": depth, "norm": norm, "warmup": warmup}
                            | {"lr": lr, "seed": s}
                            for s in plan.seeds
                        ]
    if 2 in experiments:
        for clip in plan.rnn_clips:
            for lr in plan.rnn_lrs:
                tasks += [{"experiment": 2, "clip": clip, "lr": lr, "seed": s} for s in plan.seeds]
    for t in tasks:
        t["plan"] = p
    return tasks


EXP1_KEYS = ["norm", "warmup", "lr"]
EXP2_KEYS = ["clip", "lr"]


def best_setting(runs: Sequence[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
    """Experiment 1's cell with the lowest median capped validation loss (over ``seed``'s
    runs only, if given)."""
    runs = [r for r in runs if r["experiment"] == 1 and seed in (None, r["seed"])]
    cells = h.summarize(runs, EXP1_KEYS)
    best = min(cells, key=lambda c: (c["loss_median"], c["lr"]))
    return {k: best[k] for k in EXP1_KEYS}


def _exp3_tasks(plan: Plan, runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    # chosen on the first seed's grid, so that experiment 3 need not wait for the other seeds
    best = best_setting(runs, seed=plan.seeds[0])
    p = dataclasses.asdict(plan)
    return [
        {"experiment": 3, **best, "shape": shape, "seed": s, "plan": p}
        for s in plan.seeds
        for shape in plan.shapes
    ]


def _recipes(cells: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per recipe (``keys`` minus ``lr``): best LR, largest stable LR, LR sensitivity."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault(tuple(c[k] for k in keys), []).append(c)
    out = []
    for key, group in groups.items():
        group = sorted(group, key=lambda c: c["lr"])
        best = min(group, key=lambda c: c["loss_median"])
        init = float(np.median([c["init_loss"] for c in group]))
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "best_lr": best["lr"],
                "best_loss": best["loss_median"],
                "largest_stable_lr": h.largest_stable_lr(group),
                "lr_sensitivity": h.lr_sensitivity([c["loss_median"] for c in group], init),
                "n_diverged": sum(c["n_diverged"] for c in group),
                "n_failed": sum(c["n_failed"] for c in group),
                "n_runs": sum(c["n_seeds"] for c in group),
            }
        )
    return out


def analyse(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Cells (medians with spread) and per-recipe scores of every experiment present."""
    out: dict[str, Any] = {}
    exp1 = [r for r in runs if r["experiment"] == 1]
    exp2 = [r for r in runs if r["experiment"] == 2]
    exp3 = [r for r in runs if r["experiment"] == 3]
    if exp1:
        cells = h.summarize(exp1, EXP1_KEYS)
        out["exp1"] = {"cells": cells, "recipes": _recipes(cells, ["norm", "warmup"])}
    if exp2:
        cells = h.summarize(exp2, EXP2_KEYS)
        for c in cells:
            c.update({f"bpc_{q}": c[f"loss_{q}"] / LN2 for q in ("median", "q25", "q75")})
        out["exp2"] = {"cells": cells, "recipes": _recipes(cells, ["clip"])}
    if exp3:
        cells = h.summarize(exp3, ["norm", "warmup", "lr", "shape"])
        out["exp3"] = {"cells": cells}
    exp4 = [r for r in runs if r["experiment"] == 4]
    if exp4:
        cells = h.summarize(exp4, EXP4_KEYS)
        out["exp4"] = {
            "cells": cells,
            "recipes": _recipes(cells, EXP4_KEYS[:-1]),
            "init": _init_gradients(exp4),
        }
    return out


EXP4_KEYS = ["depth", "norm", "warmup", "lr"]


def _init_gradients(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per depth and norm: each layer's gradient norm before the first update, median over
    seeds. The first gradient depends only on the seed (not on LR or warmup), so every run of a
    seed must agree exactly; ``identical`` says whether they did (a determinism check)."""
    by: dict[tuple[Any, ...], dict[int, list[list[float]]]] = {}
    for r in runs:
        if r.get("grad_norms"):
            seeds = by.setdefault((r["depth"], r["norm"]), {})
            seeds.setdefault(r["seed"], []).append(r["grad_norms"][0])
    out = []
    for (depth, norm), seeds in sorted(by.items()):
        first = np.array([grads[0] for grads in seeds.values()])
        median = np.median(first, axis=0)
        out.append(
            {
                "depth": depth,
                "norm": norm,
                "grad_embed": float(median[0]),
                "grad_first_block": float(median[1]),
                "grad_last_block": float(median[-2]),
                "grad_head": float(median[-1]),
                "last_over_first": float(np.median(first[:, -2] / first[:, 1])),
                "grad_layers": [float(g) for g in median],
                "n_seeds": len(seeds),
                "identical": all(g == grads[0] for grads in seeds.values() for g in grads),
            }
        )
    return out


def run(
    plan: Plan,
    out_dir: Path,
    *,
    experiments: Sequence[int] = (1, 2, 3),
    workers: int = 1,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run the benchmark described by ``plan`` and write its results into ``out_dir``.

    ``log`` receives one progress line per finished run (default: print to stdout).
    ``resume=True`` keeps the runs an interrupted call left in ``out_dir/stability_partial.jsonl``
    (same plan required) and trains only the others; runs are deterministic, so the results
    are those of one uninterrupted call.
    """
    log = log or functools.partial(print, flush=True)
    experiments = sorted(set(experiments) | ({1} if 3 in experiments else set()))
    partial = out_dir / PARTIAL
    kept = _resumable(partial, plan) if resume else []
    finished = {_task_key(r) for r in kept}
    tasks = [t for t in _tasks(plan, experiments) if _task_key(t) not in finished]
    # seed by seed (so an interrupted run has whole grids), the slow transformer runs first;
    # experiment 4: every seed of Post-LN, then of the Pre-LN control without warmup, then of
    # Pre-LN with warmup, so that a run cut short has all seeds of the study first
    tasks.sort(key=lambda t: (_priority(t), t["seed"], t["experiment"] == 2))
    total = len(tasks) + (len(plan.shapes) * len(plan.seeds) if 3 in experiments else 0)
    meta = {
        "plan": dataclasses.asdict(plan),
        "experiments": experiments,
        "workers": workers,
        "python": platform.python_version(),
        "torch": _torch_version(),
        "steadystep": ss.__version__,
        "unigram_loss": unigram_loss(),
    }
    if kept:
        meta["resumed_runs"] = len(kept)
    # every finished run is appended here at once; --replot can rebuild from it if interrupted
    out_dir.mkdir(parents=True, exist_ok=True)
    if not kept:
        partial.write_text(json.dumps(h.plain(meta)) + "\n")
    start = time.perf_counter()
    done = [0]

    def progress(row: dict[str, Any]) -> None:
        done[0] += 1
        with partial.open("a") as f:
            f.write(json.dumps(h.plain(row)) + "\n")
        what = " ".join(f"{k}={row[k]}" for k in ("norm", "warmup", "clip", "shape") if k in row)
        flag = " DIVERGED" if row["diverged"] else ""
        log(
            f"[{done[0]}/{total} {time.perf_counter() - start:6.0f}s] exp{row['experiment']} "
            f"{what} lr={row['lr']:g} seed={row['seed']}: "
            f"val {row['final_loss']:.3f}{flag}"
        )

    runs = h.run_tasks(
        tasks,
        run_task,
        workers=workers,
        then=(
            (
                lambda rs: [
                    t for t in _exp3_tasks(plan, [*kept, *rs]) if _task_key(t) not in finished
                ]
            )
            if 3 in experiments
            else None
        ),
        then_after=lambda t: t["experiment"] == 1 and t["seed"] == plan.seeds[0],
        progress=progress,
    )
    meta["seconds"] = round(time.perf_counter() - start, 1)
    results = _results(meta, [*kept, *runs])
    _write(results, out_dir, plan)
    partial.unlink()
    return results


PARTIAL = "stability_partial.jsonl"
_TASK_KEYS = ("experiment", "depth", "norm", "warmup", "clip", "shape", "lr", "seed")


def _task_key(task: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(task.get(k) for k in _TASK_KEYS)


def _priority(task: dict[str, Any]) -> int:
    if task["experiment"] != 4 or task["norm"] == "post":
        return 0
    return 1 if task["warmup"] == "none" else 2


def _resumable(partial: Path, plan: Plan) -> list[dict[str, Any]]:
    """The runs in ``partial`` (none if it is missing); refuses another plan's runs."""
    if not partial.exists():
        return []
    meta, *runs = (json.loads(line) for line in partial.read_text().splitlines())
    if meta["plan"] != h.plain(dataclasses.asdict(plan)):
        raise ValueError(
            f"Argument `resume`: {partial} holds runs of another plan; use another --out or "
            "delete it. Received: resume=True"
        )
    return runs


def _results(meta: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    for row in runs:
        if row["final_loss"] is None:  # strict JSON stores NaN as null
            row["final_loss"] = float("nan")
    runs.sort(key=lambda r: [str(r.get(k, "")) for k in ("experiment", "norm", "warmup", "clip")])
    return {"meta": meta, "summary": analyse(runs), "runs": runs}


def replot(out_dir: Path) -> dict[str, Any]:
    """Recompute summaries, tables and plots from ``out_dir/stability.json`` (no training).

    Without ``stability.json`` (an interrupted run), the runs finished so far are read from
    ``stability_partial.jsonl`` and the results say ``"partial": true``.
    """
    if (out_dir / "stability.json").exists():
        old = json.loads((out_dir / "stability.json").read_text())
        meta, runs = old["meta"], old["runs"]
    else:
        meta, *runs = (json.loads(line) for line in (out_dir / PARTIAL).read_text().splitlines())
        meta["partial"] = True
    results = _results(meta, runs)
    _write(results, out_dir, Plan(**{k: _tuples(v) for k, v in meta["plan"].items()}))
    return results


def _tuples(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


# ------------------------------------------------------------------ output


def _write(results: dict[str, Any], out: Path, plan: Plan) -> None:
    """Every output file; plots only when matplotlib is installed."""
    h.write_json(out / "stability.json", results)
    h.write_csv(out / "stability_runs.csv", results["runs"])
    cells = [
        {"experiment": name, **c}
        for name, part in results["summary"].items()
        for c in part["cells"]
    ]
    h.write_csv(out / "stability_cells.csv", cells)
    h.atomic_write(out / "stability.md", markdown(results).encode())
    try:
        from . import stability_plots
    except ImportError:  # matplotlib missing: results without plots
        return
    schedules = {
        r["shape"]: tf_schedule(r["warmup"], r["lr"], plan, r["shape"])(np.arange(plan.tf_steps))
        for r in results["runs"]
        if r["experiment"] == 3
    }
    stability_plots.plot_all(results, out, schedules)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


_RECIPE = "best_lr best_loss largest_stable_lr lr_sensitivity n_diverged n_failed n_runs"
_TABLES = (
    ("exp1", "recipes", "1. Warmup and Post-LN: per recipe", "norm warmup " + _RECIPE),
    (
        "exp1",
        "cells",
        "1. Warmup and Post-LN: cells",
        "norm warmup lr loss_median loss_q25 loss_q75 n_diverged n_failed spikes_median",
    ),
    ("exp2", "recipes", "2. Clipping: per rule (losses in nats/char)", "clip " + _RECIPE),
    (
        "exp2",
        "cells",
        "2. Clipping: cells (bits/char)",
        "clip lr bpc_median bpc_q25 bpc_q75 n_diverged n_failed spikes_median clip_frac_median",
    ),
    (
        "exp3",
        "cells",
        "3. Decay shapes",
        "norm warmup lr shape loss_median loss_q25 loss_q75 n_diverged",
    ),
    ("exp4", "recipes", "4. Depth: per recipe", "depth norm warmup " + _RECIPE),
    (
        "exp4",
        "cells",
        "4. Depth: cells",
        "depth norm warmup lr loss_median loss_q25 loss_q75 n_diverged n_failed spikes_median "
        "update_ratio_max_median",
    ),
    (
        "exp4",
        "init",
        "4. Depth: gradient norm per layer at initialisation (median over seeds)",
        "depth norm grad_embed grad_first_block grad_last_block grad_head last_over_first "
        "identical",
    ),
)


def markdown(results: dict[str, Any]) -> str:
    """The summary tables of a results dict, as Markdown."""
    s = results["summary"]
    meta = results["meta"]
    parts = [
        "# Stability benchmark results",
        ("PARTIAL (interrupted) run, " if meta.get("partial") else "")
        + (f"{meta['seconds']:.0f} s " if "seconds" in meta else "")
        + f"on {meta['workers']} worker(s); seeds "
        f"{meta['plan']['seeds']}; unigram loss {meta['unigram_loss']:.3f} nats/char. "
        "Losses: median [q25, q75] over seeds of min(final val loss, loss at init), nats/char.",
    ]
    for exp, part, title, columns in _TABLES:
        if exp in s:
            parts += [f"## {title}", _table(s[exp][part], columns.split())]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------ command


def main(argv: list[str] | None = None) -> int:
    """``steadystep bench stability [--quick] [--out DIR] [--workers N] [--experiments 1,2,3]``."""
    parser = argparse.ArgumentParser(
        prog="steadystep bench stability",
        description="Warmup, decay and clipping stability benchmark (see docs/stability.md).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny CI-sized run (minutes)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("stability_results"),
        help="results folder (default: ./stability_results)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (default: min(2, CPUs))",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="train nothing: recompute tables and plots from OUT/stability.json",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs an interrupted run left in OUT and train only the rest",
    )
    parser.add_argument(
        "--experiments",
        default="1,2,3",
        help="comma-separated subset of 1,2,3,4 (3 needs 1 and runs it; 4 is the depth study)",
    )
    args = parser.parse_args(argv)
    try:
        experiments = sorted({int(x) for x in args.experiments.split(",")})
    except ValueError:
        experiments = []
    if not experiments or not set(experiments) <= {1, 2, 3, 4}:
        parser.error(
            f"argument --experiments: expected a subset of 1,2,3,4, got {args.experiments!r}"
        )
    if args.workers < 1:
        parser.error(f"argument --workers: must be >= 1, got {args.workers}")
    if args.replot:
        results = replot(args.out)
        print(markdown(results))
        return 0
    plan = QUICK if args.quick else FULL
    results = run(plan, args.out, experiments=experiments, workers=args.workers, resume=args.resume)
    print(
        f"\nwrote {args.out}/stability.json, .csv, .md and plots in {results['meta']['seconds']} s"
    )
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
