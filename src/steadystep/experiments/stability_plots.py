"""Plots of the stability benchmark (matplotlib, no pyplot state: safe in worker processes).

* ``stability_exp1.png``: final validation loss against LR, one line per warmup recipe, one
  panel per norm placement (the U-shaped LR-sensitivity curves of Wortsman et al. 2023);
* ``stability_exp2.png``: bits per character and fraction of steps clipped against LR, one line
  per clipping rule;
* ``stability_exp3.png``: the four LR schedules and their validation-loss curves.

Medians over seeds with the interquartile range as error bars; a cell with diverged seeds is
marked with a cross and the count.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from . import stability_harness as h

__all__ = ["plot_all"]


def _loss_vs_lr(ax: Any, cells: list[dict[str, Any]], by: str, scale: float = 1.0) -> None:
    for name in dict.fromkeys(c[by] for c in cells):
        group = sorted((c for c in cells if c[by] == name), key=lambda c: c["lr"])
        lr = np.array([c["lr"] for c in group])
        med = np.array([c["loss_median"] for c in group]) * scale
        lo = med - np.array([c["loss_q25"] for c in group]) * scale
        hi = np.array([c["loss_q75"] for c in group]) * scale - med
        line = ax.errorbar(lr, med, yerr=[lo, hi], marker="o", ms=4, capsize=2, label=name)
        for c, m in zip(group, med, strict=True):
            if c["n_diverged"]:
                color = line[0].get_color()
                ax.plot(c["lr"], m, "x", color=color, ms=10, mew=2)
                ax.annotate(
                    str(c["n_diverged"]),
                    (c["lr"], m),
                    textcoords="offset points",
                    xytext=(4, 4),
                    color=color,
                    fontsize=8,
                )
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.grid(alpha=0.3)


def _reference_lines(ax: Any, results: dict[str, Any], init: float, scale: float = 1.0) -> None:
    ax.axhline(init * scale, color="grey", ls="--", lw=1, label="loss at init")
    ax.axhline(results["meta"]["unigram_loss"] * scale, color="grey", ls=":", lw=1, label="unigram")


def plot_exp1(results: dict[str, Any]) -> Figure:
    cells = results["summary"]["exp1"]["cells"]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, norm in zip(axes, ("post", "pre"), strict=True):
        part = [c for c in cells if c["norm"] == norm]
        _loss_vs_lr(ax, part, "warmup")
        if part:
            _reference_lines(ax, results, float(np.median([c["init_loss"] for c in part])))
        ax.set_title(f"{norm.capitalize()}-LN transformer, Adam(0.9, 0.98)")
    axes[0].set_ylabel("final val loss (nats/char), capped at init")
    axes[1].legend(title="warmup", fontsize=8)
    return fig


def plot_exp2(results: dict[str, Any]) -> Figure:
    cells = results["summary"]["exp2"]["cells"]
    fig = Figure(figsize=(10, 4))
    ax, ax2 = fig.subplots(1, 2)
    _loss_vs_lr(ax, cells, "clip", scale=1 / math.log(2))
    _reference_lines(
        ax, results, float(np.median([c["init_loss"] for c in cells])), scale=1 / math.log(2)
    )
    ax.set_ylabel("final val bits/char, capped at init")
    ax.set_title("tanh RNN (exploding init), SGD")
    ax.legend(title="clipping", fontsize=8)
    for name in dict.fromkeys(c["clip"] for c in cells):
        group = sorted(
            (c for c in cells if c["clip"] == name and "clip_frac_median" in c),
            key=lambda c: c["lr"],
        )
        if group:
            ax2.plot(
                [c["lr"] for c in group],
                [c["clip_frac_median"] for c in group],
                marker="o",
                ms=4,
                label=name,
            )
    ax2.set_xscale("log")
    ax2.set_xlabel("learning rate")
    ax2.set_ylabel("fraction of steps clipped (median)")
    ax2.set_ylim(-0.02, 1.02)
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=8)
    return fig


def plot_exp3(results: dict[str, Any], plan: Any) -> Figure:
    from .stability import tf_schedule

    runs = [r for r in results["runs"] if r["experiment"] == 3]
    fig = Figure(figsize=(10, 4))
    ax, ax2 = fig.subplots(1, 2)
    steps = np.arange(plan.tf_steps)
    for shape in dict.fromkeys(r["shape"] for r in runs):
        group = [r for r in runs if r["shape"] == shape]
        first = group[0]
        ax.plot(steps, tf_schedule(first["warmup"], first["lr"], plan, shape)(steps), label=shape)
        x = [p[0] for p in first["curve"]]
        ys = np.array([[p[1] for p in r["curve"]] for r in group], dtype=float)
        ax2.plot(x, np.nanmedian(ys, axis=0), marker="o", ms=3, label=shape)
    if runs:
        r = runs[0]
        ax.set_title(f"schedules ({r['norm']}-LN, warmup={r['warmup']}, peak lr={r['lr']:g})")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax2.set_xlabel("step")
    ax2.set_ylabel("val loss (nats/char), median over seeds")
    ax2.set_ylim(top=float(results["meta"]["unigram_loss"]) + 0.2)
    ax2.set_title("decay shapes")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    return fig


def plot_all(results: dict[str, Any], out: Path, plan: Any) -> None:
    """Write one PNG per experiment present in ``results`` into ``out``."""
    summary = results["summary"]
    if "exp1" in summary:
        h.save_figure(plot_exp1(results), out / "stability_exp1.png")
    if "exp2" in summary:
        h.save_figure(plot_exp2(results), out / "stability_exp2.png")
    if "exp3" in summary:
        h.save_figure(plot_exp3(results, plan), out / "stability_exp3.png")
