"""Plots of the stability benchmark (matplotlib, no pyplot state: safe in worker processes).

* ``stability_exp1.png``: final validation loss against LR, one line per warmup recipe, one
  panel per norm placement (the U-shaped LR-sensitivity curves of Wortsman et al. 2023);
* ``stability_exp2.png``: bits per character and fraction of steps clipped against LR, one line
  per clipping rule;
* ``stability_exp3.png``: the four LR schedules and their validation-loss curves;
* ``stability_exp4.png``: experiment 1's curves at each depth; ``stability_exp4_mechanism.png``:
  per-layer gradient norms at initialisation and over the first updates, and the relative
  update size ``||ΔW|| / ||W||``, against depth (Xiong et al. 2020's argument).

This module draws from a results dict only; it imports nothing from :mod:`.stability` (which
imports it), so the dependency goes one way.

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


def _loss_vs_lr(
    ax: Any,
    cells: list[dict[str, Any]],
    by: str,
    scale: float = 1.0,
    colors: dict[Any, str] | None = None,
) -> None:
    for name in dict.fromkeys(c[by] for c in cells):
        group = sorted((c for c in cells if c[by] == name), key=lambda c: c["lr"])
        lr = np.array([c["lr"] for c in group])
        med = np.array([c["loss_median"] for c in group]) * scale
        lo = med - np.array([c["loss_q25"] for c in group]) * scale
        hi = np.array([c["loss_q75"] for c in group]) * scale - med
        color = (colors or {}).get(name)
        line = ax.errorbar(
            lr, med, yerr=[lo, hi], marker="o", ms=4, capsize=2, label=name, color=color
        )
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


def plot_exp3(results: dict[str, Any], schedules: dict[str, np.ndarray]) -> Figure:
    """``schedules[shape]``: the LR of every step of that shape's schedule."""
    runs = [r for r in results["runs"] if r["experiment"] == 3]
    fig = Figure(figsize=(10, 4))
    ax, ax2 = fig.subplots(1, 2)
    for shape in dict.fromkeys(r["shape"] for r in runs):
        group = [r for r in runs if r["shape"] == shape]
        if shape in schedules:
            ax.plot(np.arange(len(schedules[shape])), schedules[shape], label=shape)
        x = [p[0] for p in group[0]["curve"]]
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


def plot_exp4(results: dict[str, Any]) -> Figure:
    """Final loss against LR: one panel per depth (columns) and norm (rows), one line per
    warmup."""
    cells = results["summary"]["exp4"]["cells"]
    depths = sorted({c["depth"] for c in cells})
    fig = Figure(figsize=(3.6 * len(depths), 7))
    axes = fig.subplots(2, len(depths), sharey=True, squeeze=False)
    init = float(np.median([c["init_loss"] for c in cells]))
    lrs = sorted({c["lr"] for c in cells})
    colors = {w: f"C{i}" for i, w in enumerate(dict.fromkeys(c["warmup"] for c in cells))}
    for row, norm in enumerate(("post", "pre")):
        for ax, depth in zip(axes[row], depths, strict=True):
            part = [c for c in cells if c["norm"] == norm and c["depth"] == depth]
            _loss_vs_lr(ax, part, "warmup", colors=colors)
            _reference_lines(ax, results, init)
            ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
            ax.minorticks_off()
            ax.set_title(f"{norm.capitalize()}-LN, {depth} blocks")
        axes[row][0].set_ylabel("final val loss, capped at init")
    axes[0][-1].legend(title="warmup", fontsize=8)
    fig.tight_layout()
    return fig


def _median_iqr(values: list[float]) -> tuple[float, float, float]:
    q25, med, q75 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(med), float(med - q25), float(q75 - med)


def plot_exp4_mechanism(results: dict[str, Any]) -> Figure:
    """Xiong et al.'s mechanism against depth: per-layer gradient norms at initialisation,
    the gradient near the output, its course over the first updates, and the update size
    ``||ΔW|| / ||W||`` (largest over blocks and probed updates) at the middle LR."""
    runs = [r for r in results["runs"] if r["experiment"] == 4 and r.get("grad_norms")]
    init = results["summary"]["exp4"]["init"]
    depths = sorted({r["depth"] for r in runs})
    lrs = sorted({r["lr"] for r in runs})
    mid = lrs[len(lrs) // 2]
    fig = Figure(figsize=(12, 9))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    styles = {"post": "-", "pre": "--"}
    colors = {d: f"C{i}" for i, d in enumerate(depths)}
    for row in init:
        g = row["grad_layers"]
        ax1.plot(
            range(len(g)), g, styles[row["norm"]], marker="o", ms=3, color=colors[row["depth"]]
        )
    ax1.plot([], [], "k-", label="Post-LN")
    ax1.plot([], [], "k--", label="Pre-LN")
    for d in depths:
        ax1.plot([], [], color=colors[d], label=f"{d} blocks")
    ax1.set_yscale("log")
    ax1.set_xlabel("layer (0 = embeddings, 1..L = blocks, L+1 = head)")
    ax1.set_ylabel("gradient norm at init (median over seeds)")
    ax1.set_title("per-layer gradient norm at initialisation")
    ax1.legend(fontsize=8)
    for norm in ("post", "pre"):
        for key, marker in (("grad_last_block", "o"), ("grad_first_block", "s")):
            rows = [r for r in init if r["norm"] == norm]
            ax2.plot(
                [r["depth"] for r in rows],
                [r[key] for r in rows],
                styles[norm],
                marker=marker,
                label=f"{norm}-LN, {key[5:].replace('_', ' ')}",
            )
    ax2.set_yscale("log")
    ax2.set_xlabel("depth (blocks)")
    ax2.set_ylabel("gradient norm at init")
    ax2.set_title("first and last block at initialisation vs depth")
    ax2.legend(fontsize=8)
    for norm in ("post", "pre"):
        for d in depths:
            group = [
                r for r in runs
                if (r["norm"], r["depth"], r["warmup"], r["lr"]) == (norm, d, "none", mid)
            ]  # fmt: skip
            if not group:
                continue
            n = min(len(r["grad_norms"]) for r in group)
            steps = np.array(group[0]["probe_steps"][:n]) + 1
            last = np.median([[g[-2] for g in r["grad_norms"][:n]] for r in group], axis=0)
            ax3.plot(steps, last, styles[norm], marker="o", ms=3, color=colors[d])
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.set_xlabel("update (1 = first)")
    ax3.set_ylabel("last block's gradient norm (median over seeds)")
    ax3.set_title(f"over the first updates, no warmup, lr={mid:g} (solid Post-LN)")
    ax3.grid(alpha=0.3)
    for norm in ("post", "pre"):
        for warmup in dict.fromkeys(r["warmup"] for r in runs):
            values = {
                d: [
                    r["update_ratio_max"] for r in runs
                    if (r["norm"], r["depth"], r["warmup"], r["lr"]) == (norm, d, warmup, mid)
                ]
                for d in depths
            }  # fmt: skip
            points = [(d, _median_iqr(v)) for d, v in values.items() if v]  # cut-short runs
            if not points:
                continue
            ax4.errorbar(
                [d for d, _ in points],
                [m for _, (m, _, _) in points],
                yerr=[[lo for _, (_, lo, _) in points], [hi for _, (_, _, hi) in points]],
                fmt=styles[norm],
                marker="o",
                ms=4,
                capsize=2,
                label=f"{norm}-LN, {warmup}",
            )
    ax4.set_yscale("log")
    ax4.set_xlabel("depth (blocks)")
    ax4.set_ylabel("largest ||ΔW|| / ||W|| of a block")
    ax4.set_title(f"update size over the probed updates, lr={mid:g}")
    ax4.legend(fontsize=7)
    for ax in (ax1, ax2, ax4):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_all(
    results: dict[str, Any], out: Path, schedules: dict[str, np.ndarray] | None = None
) -> None:
    """Write one PNG per experiment present in ``results`` into ``out`` (two for experiment 4).

    ``schedules``: experiment 3's LR per step and shape (:func:`plot_exp3`).
    """
    summary = results["summary"]
    if "exp1" in summary:
        h.save_figure(plot_exp1(results), out / "stability_exp1.png")
    if "exp2" in summary:
        h.save_figure(plot_exp2(results), out / "stability_exp2.png")
    if "exp3" in summary:
        h.save_figure(plot_exp3(results, schedules or {}), out / "stability_exp3.png")
    if "exp4" in summary:
        h.save_figure(plot_exp4(results), out / "stability_exp4.png")
        h.save_figure(plot_exp4_mechanism(results), out / "stability_exp4_mechanism.png")
