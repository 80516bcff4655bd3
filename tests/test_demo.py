"""``steadystep demo`` and the experiment building blocks (corpus, sampler, model).

The demo runs here in a reduced ``--steps`` mode through a subprocess, as a person would run it;
the full-length run (and its timing) is ``benchmarks/bench_demo.py``.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import steadystep as ss  # noqa: E402
from steadystep.experiments import data, demo, models  # noqa: E402
from steadystep.plot import atomic_path  # noqa: E402

REPORT_FILES = ["metrics.json", "report.html", "report.md", "report.png"]


def _demo(spawn: Callable[..., Popen[str]], *argv: str) -> Popen[str]:
    command = [sys.executable, "-m", "steadystep", "demo", "--no-progress", *argv]
    return spawn(command, PYTHONUNBUFFERED="1")


# -- the corpus and the sampler -------------------------------------------------------------------
def test_corpus_is_deterministic_and_split_contiguously() -> None:
    corpus = data.load_corpus()
    text = data.load_text()
    assert corpus.vocab == data.Vocab.from_text(text)
    assert list(corpus.vocab.chars) == sorted(set(text))
    assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.val])) == text
    assert len(corpus.val) == len(text) - int(len(text) * 0.9)
    with pytest.raises(ValueError, match=r"val_fraction=1\.0"):
        data.load_corpus(val_fraction=1.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        data.Vocab("ab").encode("abc")


def test_sampler_is_seeded_and_shifted() -> None:
    tokens = np.arange(1000)
    a = data.BatchSampler(tokens, 8, 16, seed=3)
    b = data.BatchSampler(tokens, 8, 16, seed=3)
    c = data.BatchSampler(tokens, 8, 16, seed=4)
    xa, ya = a.sample()
    xb, _ = b.sample()
    xc, _ = c.sample()
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    assert torch.equal(ya, xa + 1)  # consecutive tokens: targets are the next ones
    assert xa.dtype == torch.int64 and xa.shape == (8, 16)
    assert int(xa.max()) < 1000 - 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"context": 2.0}, "context=2.0"),
        ({"tokens": np.arange(5)}, "longer than `context`"),
    ],
)
def test_sampler_bad_input(kwargs: dict, message: str) -> None:
    args = {"tokens": np.arange(100), "batch_size": 4, "context": 8, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        data.BatchSampler(**args)


# -- the model ----------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_model_is_causal(norm: str) -> None:
    torch.manual_seed(0)
    config = models.ModelConfig(vocab_size=20, context=12, d_model=16, n_layers=2, norm=norm)
    model = models.CharTransformer(config).eval()
    x = torch.randint(0, 20, (2, 12))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 20
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :7], b[:, :7])  # earlier positions never see later tokens
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    assert (model.ln_f.__class__ is torch.nn.LayerNorm) == (norm == "pre")


def test_model_initial_loss_is_near_uniform() -> None:
    torch.manual_seed(0)
    model = models.CharTransformer(models.ModelConfig(vocab_size=100, context=8, d_model=32))
    x = torch.randint(0, 100, (16, 8))
    assert model.loss(x, x).item() == pytest.approx(math.log(100), abs=0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "divisible by `n_heads`"),
        ({"norm": "sandwich"}, "norm='sandwich'"),
        ({"n_layers": 0}, "n_layers=0"),
        ({"dropout": 1.0}, "dropout=1.0"),
    ],
)
def test_model_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        models.ModelConfig(vocab_size=10, **kwargs)


def test_too_long_input() -> None:
    model = models.CharTransformer(models.ModelConfig(vocab_size=10, context=4, d_model=8))
    with pytest.raises(ValueError, match="context=4"):
        model(torch.zeros(1, 5, dtype=torch.int64))


# -- the recipe ----------------------------------------------------------------------------------
def test_recipe_schedule() -> None:
    config = demo.DemoConfig(steps=100, lr=0.01)
    s = config.schedule()
    assert s == ss.warmup(ss.cosine(0.01, 0.001, steps=75), steps=25)
    assert s(0) == 0.0 and s(25) == 0.01 and s(100) == pytest.approx(0.001)
    assert demo.DemoConfig(steps=100, warmup=5).schedule().steps == 5


def test_spikes_and_final_loss() -> None:
    run = demo.RunResult("x", [4.0] * 20 + [2.0, 3.5, 2.0, 2.0], [0.1] * 24, [1.0] * 24, 2.0, 1.0)
    assert run.spikes == 1  # 3.5 > 1.5 * 2.0
    assert run.final_loss == pytest.approx(2.0)
    run.diverged_at = 5
    assert run.final_loss == math.inf


# -- the command --------------------------------------------------------------------------------
def test_demo_reduced_run(tmp_path: Path, spawn: Callable[..., Popen[str]]) -> None:
    out = tmp_path / "report"
    proc = _demo(spawn, "--steps", "24", "--out", str(out), "--seed", "1")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"report: {out / 'report.md'}" in stdout
    assert sorted(p.name for p in out.iterdir()) == REPORT_FILES

    metrics = json.loads((out / "metrics.json").read_text())
    plain, recipe = metrics["runs"]
    assert (plain["name"], recipe["name"]) == ("plain", "steadystep")
    assert len(plain["loss"]) == len(recipe["loss"]) == 24
    # same initialisation and batches: the first losses agree exactly
    assert plain["loss"][0] == recipe["loss"][0]
    assert plain["loss"][0] == pytest.approx(math.log(103), abs=0.3)
    assert plain["lr"] == [demo.DEFAULTS.lr] * 24
    s = ss.parse(metrics["schedule"])
    np.testing.assert_allclose(recipe["lr"], s(np.arange(24)), rtol=1e-12)
    assert metrics["config"]["seed"] == 1

    import matplotlib.image

    image = matplotlib.image.imread(out / "report.png")
    assert image.shape[:2] == (400, 1200) and image[..., :3].std() > 0.05
    md = (out / "report.md").read_text()
    assert f"{plain['val_loss']:.3f}" in md and f"{recipe['val_loss']:.3f}" in md
    html = (out / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "report.png" in html


def test_demo_interrupted_leaves_no_report(
    tmp_path: Path, spawn: Callable[..., Popen[str]]
) -> None:
    out = tmp_path / "report"
    proc = _demo(spawn, "--steps", "100000", "--out", str(out))
    assert proc.stdout is not None
    first = proc.stdout.readline()  # printed when training starts
    assert first.startswith("steadystep demo:"), proc.stderr.read() if proc.stderr else ""
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT, stderr  # a shell reports it as 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []


def test_demo_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from steadystep import cli

    code = cli.main(["demo", "--out", str(blocker / "report"), "--steps", "5"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot write the report" in err  # before any training


def test_demo_warmup_longer_than_run(capsys: pytest.CaptureFixture[str]) -> None:
    from steadystep import cli

    code = cli.main(["demo", "--steps", "10", "--warmup", "10"])
    assert (
        code == 2 and "--warmup (10) must be smaller than --steps (10)" in capsys.readouterr().err
    )


def test_atomic_write_keeps_the_old_file_on_interrupt(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    target.write_text("old report")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_find_lr_command(tmp_path: Path) -> None:
    out = tmp_path / "curve.png"
    result = subprocess.run(
        [sys.executable, "-m", "steadystep", "find-lr", "--steps", "20", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "suggested max lr" in result.stdout
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (450, 700)
