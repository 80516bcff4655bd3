"""``steadystep demo``: the same model trained twice at an aggressive learning rate.

Run 1 ("plain") uses a constant learning rate and no clipping. Run 2 ("steadystep") uses the
seed recipe: linear warmup, cosine decay to a tenth of the peak (``ss.torch.Scheduler``) and
global-norm clipping (``ss.torch.clip_grad_norm_``). Same model initialisation, same batches,
same peak learning rate. The model is a Post-LN character transformer
(:mod:`steadystep.experiments.models`), the form that needs warmup (Xiong et al., 2020), trained
with AdamW on ``pydoc_data.topics`` (:mod:`steadystep.experiments.data`).

The report (``report.png``: loss, learning rate and gradient norm of both runs; ``report.md``,
``report.html`` and ``metrics.json``) is written atomically, file by file, at the end: after a
Ctrl-C no report file is left half written. ``docs/guide.md`` records the calibration.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import steadystep as ss

from ..errors import UsageError

__all__ = ["DEFAULTS", "DemoConfig", "RunResult", "make_model", "run", "run_find_lr", "train"]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Everything that defines the demo runs (``DEFAULTS`` is what ``steadystep demo`` uses)."""

    steps: int = 600
    lr: float = 8e-3
    warmup: int | None = None  # None: a quarter of the steps
    clip: float = 1.0
    min_lr_ratio: float = 0.1
    batch_size: int = 32
    context: int = 64
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    norm: str = "post"
    seed: int = 0
    val_batches: int = 8

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else max(1, self.steps // 4)

    def schedule(self) -> ss.Schedule:
        """The recipe run's learning rate: linear warmup, then cosine to ``min_lr_ratio * lr``."""
        w = min(self.warmup_steps, self.steps - 1)
        decay = ss.cosine(self.lr, self.lr * self.min_lr_ratio, steps=max(1, self.steps - w))
        return ss.warmup(decay, steps=w) if w > 0 else decay


DEFAULTS = DemoConfig()


@dataclasses.dataclass
class RunResult:
    """Curves and numbers of one training run (``loss``, ``lr``, ``grad_norm``: one per update)."""

    name: str
    loss: list[float]
    lr: list[float]
    grad_norm: list[float]
    val_loss: float
    seconds: float
    diverged_at: int | None = None

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10% of updates (inf if the run diverged)."""
        if self.diverged_at is not None:
            return math.inf
        tail = self.loss[-max(1, len(self.loss) // 10) :]
        return sum(tail) / len(tail)

    @property
    def spikes(self) -> int:
        """Updates whose loss exceeds 1.5x the lowest loss before them (first 5% not counted)."""
        start = max(1, len(self.loss) // 20)
        best, count = min(self.loss[:start], default=math.inf), 0
        for value in self.loss[start:]:
            if not math.isfinite(value) or value > 1.5 * best:
                count += 1
            best = min(best, value)
        return count


def pick_device(device: str | None) -> Any:
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(
            f"Argument `device` is not usable here. Received: device={device!r} ({exc})"
        ) from None
    return dev


def make_model(config: DemoConfig, vocab_size: int, device: Any) -> Any:
    """The demo model, initialised from ``config.seed`` (the same weights for both runs)."""
    import torch

    from .models import CharTransformer, ModelConfig

    torch.manual_seed(config.seed)
    shape = ModelConfig(
        vocab_size=vocab_size,
        context=config.context,
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        norm=config.norm,  # type: ignore[arg-type]
    )
    return CharTransformer(shape).to(device)


def _optimizer(model: Any, lr: float) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)


def train(
    name: str,
    config: DemoConfig,
    corpus: Any,
    device: Any,
    *,
    recipe: bool,
    on_step: Callable[[int, float], None] | None = None,
) -> RunResult:
    """Train one run for ``config.steps`` updates; ``recipe`` turns on warmup, decay, clipping.

    A run whose loss becomes non-finite stops there (``diverged_at``).
    """
    import torch

    from .data import BatchSampler

    model = make_model(config, len(corpus.vocab), device)
    optimizer = _optimizer(model, config.lr)
    scheduler = ss.torch.Scheduler(optimizer, config.schedule()) if recipe else None
    params = [p for p in model.parameters() if p.requires_grad]
    batches = BatchSampler(corpus.train, config.batch_size, config.context, seed=config.seed)
    losses: list[float] = []
    lrs: list[float] = []
    norms: list[float] = []
    diverged_at = None
    start = time.perf_counter()
    model.train()
    for step in range(config.steps):
        x, y = batches.sample()
        loss = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe:
            norm = ss.torch.clip_grad_norm_(params, config.clip)
        else:  # measured only: the plain run is not clipped
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        value, n = float(loss.detach()), float(norm)
        losses.append(value)
        norms.append(n)
        if on_step is not None:
            on_step(step, value)
        if not math.isfinite(value):
            diverged_at = step
            break
    val = _evaluate(model, corpus, config, device) if diverged_at is None else math.inf
    seconds = time.perf_counter() - start
    return RunResult(name, losses, lrs, norms, val, seconds, diverged_at)


def _evaluate(model: Any, corpus: Any, config: DemoConfig, device: Any) -> float:
    import torch

    from .data import BatchSampler

    sampler = BatchSampler(corpus.val, 64, config.context, seed=12345, device=device)
    model.eval()
    with torch.no_grad():
        total = sum(float(model.loss(*sampler.sample())) for _ in range(config.val_batches))
    return total / config.val_batches


# -- report -----------------------------------------------------------------------------------
def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    out, avg = [], None
    for v in values:
        avg = v if avg is None or not math.isfinite(avg) else weight * avg + (1 - weight) * v
        out.append(avg)
    return out


def _figure(runs: list[RunResult], config: DemoConfig) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4), dpi=100, layout="constrained")
    ax_loss, ax_lr, ax_norm = fig.subplots(1, 3)
    colours = ["tab:red", "tab:blue"]
    for run, colour in zip(runs, colours, strict=False):
        steps = range(len(run.loss))
        ax_loss.plot(steps, run.loss, color=colour, alpha=0.25, linewidth=0.8)
        ax_loss.plot(steps, _smooth(run.loss), color=colour, label=run.name, linewidth=1.6)
        ax_lr.plot(steps, run.lr, color=colour, label=run.name, linewidth=1.6)
        ax_norm.plot(steps, run.grad_norm, color=colour, label=run.name, linewidth=1.0)
    ax_loss.set(title="training loss (nats/char)", xlabel="step")
    ax_lr.set(title="learning rate", xlabel="step")
    ax_norm.set(title="gradient norm before clipping", xlabel="step", yscale="log")
    if config.clip:
        ax_norm.axhline(config.clip, color="gray", linestyle="--", linewidth=1, label="clip")
    for ax in (ax_loss, ax_lr, ax_norm):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _rows(runs: list[RunResult]) -> list[list[str]]:
    rows = []
    for r in runs:
        status = f"diverged at step {r.diverged_at}" if r.diverged_at is not None else "finished"
        rows.append(
            [
                r.name,
                f"{r.final_loss:.3f}",
                f"{r.val_loss:.3f}",
                f"{max(r.grad_norm):.3g}",
                str(r.spikes),
                status,
                f"{r.seconds:.1f}",
            ]
        )
    return rows


_HEADER = ["run", "final train loss", "val loss", "max grad norm", "loss spikes", "status", "s"]


def _markdown(runs: list[RunResult], config: DemoConfig, device: Any) -> str:
    lines = [
        "# steadystep demo",
        "",
        f"Post-LN char transformer ({config.n_layers} layers, width {config.d_model}) on "
        f"`pydoc_data.topics`, AdamW, peak LR {config.lr:g}, {config.steps} steps, "
        f"batch {config.batch_size}x{config.context} chars, seed {config.seed}, device {device}.",
        "",
        f"- **plain**: constant LR {config.lr:g}, no clipping.",
        f"- **steadystep**: `{config.schedule()!r}`, "
        f"`ss.torch.clip_grad_norm_(params, {config.clip:g})`.",
        "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "---|" * len(_HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(runs)]
    lines += [
        "",
        "Losses in nats per character (a uniform guess is ln(vocab) ≈ 4.6; predicting "
        "character frequencies alone gives ≈ 3.2). Final train loss: mean over the last 10% "
        "of updates; val loss: held-out last 10% of the corpus.",
        "",
        "![loss, learning rate and gradient norm](report.png)",
        "",
    ]
    return "\n".join(lines)


def _html(markdown: str, runs: list[RunResult], config: DemoConfig, device: Any) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _rows(runs)
    )
    intro = html.escape(markdown.split("\n")[2])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>steadystep demo</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}</style></head>"
        f"<body><h1>steadystep demo</h1><p>{intro}</p>"
        f"<p>steadystep run: <code>{html.escape(repr(config.schedule()))}</code>, clip "
        f"{config.clip:g}.</p><table><tr>{head}</tr>{body}</table>"
        "<p><img src='report.png' alt='loss, learning rate and gradient norm' width='100%'></p>"
        "</body></html>\n"
    )


def write_report(runs: list[RunResult], config: DemoConfig, device: Any, out: Path) -> Path:
    """Write report.png, metrics.json, report.md, report.html into ``out``; each atomically."""
    from ..plot import atomic_path, save_figure

    out.mkdir(parents=True, exist_ok=True)
    save_figure(_figure(runs, config), out / "report.png")
    metrics = {
        "config": dataclasses.asdict(config),
        "schedule": repr(config.schedule()),
        "device": str(device),
        "runs": [
            {**dataclasses.asdict(r), "final_loss": r.final_loss, "spikes": r.spikes} for r in runs
        ],
    }
    text = markdown = _markdown(runs, config, device)
    for name, content in (
        ("metrics.json", json.dumps(metrics, indent=1, allow_nan=True)),
        ("report.html", _html(markdown, runs, config, device)),
        ("report.md", text),
    ):
        with atomic_path(out / name) as tmp:
            tmp.write_text(content, encoding="utf-8")
    return out / "report.md"


# -- the command --------------------------------------------------------------------------------
class _Progress:
    """rich progress bars when rich is installed and wanted; silence otherwise."""

    def __init__(self, enabled: bool) -> None:
        self._progress: Any = None
        if enabled:
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            except ImportError:
                enabled = False
            else:
                self._progress = Progress(
                    TextColumn("{task.description:<12}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]}"),
                    TimeRemainingColumn(),
                )

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, name: str, total: int) -> Callable[[int, float], None]:
        if self._progress is None:
            return lambda step, loss: None
        task = self._progress.add_task(name, total=total, loss="-")
        progress = self._progress

        def update(step: int, loss: float) -> None:
            progress.update(task, completed=step + 1, loss=f"{loss:.3f}")

        return update


def run(
    *,
    steps: int | None = None,
    lr: float | None = None,
    device: str | None = None,
    out: Path | str = "steadystep-demo",
    seed: int = 0,
    warmup: int | None = None,
    clip: float = DEFAULTS.clip,
    progress: bool = True,
) -> int:
    """Train both runs, write the report into ``out`` and print where it is; the exit code."""
    from .data import load_corpus

    changes: dict[str, Any] = {"seed": seed, "clip": clip, "warmup": warmup}
    if steps is not None:
        changes["steps"] = steps
    if lr is not None:
        changes["lr"] = lr
    config = dataclasses.replace(DEFAULTS, **changes)
    if config.warmup is not None and config.warmup >= config.steps:
        raise UsageError(
            f"--warmup ({config.warmup}) must be smaller than --steps ({config.steps})"
        )
    out = Path(out)
    _check_writable(out)
    try:
        dev = pick_device(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    corpus = load_corpus()
    print(
        f"steadystep demo: {config.steps} steps x 2 runs on {dev}, peak LR {config.lr:g} "
        f"(plain vs warmup {config.warmup_steps} + cosine + clip {config.clip:g})"
    )
    runs = []
    with _Progress(progress) as bars:
        for name, recipe in (("plain", False), ("steadystep", True)):
            on_step = bars.task(name, config.steps)
            runs.append(train(name, config, corpus, dev, recipe=recipe, on_step=on_step))
    try:
        report = write_report(runs, config, dev, out)
    except OSError as exc:
        raise UsageError(f"cannot write the report into {str(out)!r}: {exc}", 1) from None
    for row in _rows(runs):
        print(f"  {row[0]:<11} final train loss {row[1]}, val loss {row[2]}, {row[5]}")
    print(f"report: {report} (also report.html, report.png, metrics.json)")
    return 0


def _check_writable(out: Path) -> None:
    """Fail before training, not after, when the report folder cannot be created or written."""

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".steadystep-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write the report into {str(out)!r}: {exc}", 1) from None


def _cycle(sampler: Any) -> Iterator[Any]:
    while True:
        yield sampler.sample()


def run_find_lr(
    *,
    steps: int = 100,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    device: str | None = None,
    output: Path | str | None = None,
    seed: int = 0,
) -> int:
    """``steadystep find-lr``: the LR range test on the demo model; prints the suggestion."""
    from ..torch import find_lr
    from .data import BatchSampler, load_corpus

    if start_lr >= end_lr:
        raise UsageError(f"--start-lr ({start_lr:g}) must be smaller than --end-lr ({end_lr:g})")
    if output is not None:
        _check_writable(Path(output).parent)
    try:
        dev = pick_device(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config = dataclasses.replace(DEFAULTS, seed=seed)
    corpus = load_corpus()
    model = make_model(config, len(corpus.vocab), dev)
    optimizer = _optimizer(model, start_lr)
    sampler = BatchSampler(corpus.train, config.batch_size, config.context, seed=seed, device=dev)
    result = find_lr(
        model,
        optimizer,
        lambda m, batch: m.loss(*batch),
        _cycle(sampler),
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=steps,
    )
    print(result.summary())
    if output is not None:
        from ..plot import save_figure

        try:
            save_figure(result.plot(), output)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot write {str(output)!r}: {exc}", 1) from None
        print(f"wrote {output}")
    return 0
