"""The ``steadystep`` command: plot, show, spec errors, files, compat names, bench dispatch.

Most tests call ``steadystep.cli.main(argv)`` in-process (fast); the ones about exit codes and
tracebacks as a person sees them run ``python -m steadystep`` in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import steadystep as ss
from steadystep import cli

SPEC = "warmup(cosine(0.001, 1e-05, steps=9000), steps=1000)"


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steadystep", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- show ---------------------------------------------------------------------------------------
def test_show_prints_values_and_key_points(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "show", SPEC, "--steps", "10001", "--at", "0", "500", "10000")
    assert code == 0
    rows = dict(line.split() for line in out.splitlines()[1:4])
    s = ss.parse(SPEC)
    assert float(rows["500"]) == pytest.approx(s(500), rel=1e-5)
    assert rows["0"] == "0" and float(rows["10000"]) == pytest.approx(1e-5)
    assert "peak:        0.001 at step 1000" in out
    assert "warmup ends: 0.001 at step 1000" in out
    assert "end:         1e-05 at step 10000" in out


def test_show_default_steps_cover_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "show", SPEC)
    assert code == 0
    steps = [int(line.split()[0]) for line in out.splitlines()[1:12]]
    assert steps == list(range(0, 10001, 1000))  # length 10000 -> steps 0..10000
    assert "warmup ends" in out


def test_key_points_of_a_decay_have_no_warmup() -> None:
    points = cli.key_points(ss.cosine(1.0, 0.0, steps=10), 11)
    assert points == [("peak", 0, 1.0), ("end", 10, 0.0)]


def test_key_points_sample_huge_step_counts() -> None:
    # 10**12 steps cannot be evaluated one by one; the grid keeps the ends exact
    s = ss.warmup(ss.linear(1.0, 0.0, steps=10**12), steps=10**11)
    names = [name for name, _, _ in cli.key_points(s, 10**12)]
    assert names == ["peak", "warmup ends", "end"]


# -- plot ---------------------------------------------------------------------------------------
def test_plot_text_in_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(
        capsys, "plot", "linear(1.0, 0.0, steps=100)", "constant(0.5)", "--width", "40"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("1 |*")  # starts at the top
    assert lines[15].startswith("0 |") and lines[15].endswith("*")  # ends at the bottom
    assert any("o" * 30 in line for line in lines)  # the constant: one flat row
    assert "* linear(1.0, 0.0, steps=100)" in out and "o constant(0.5)" in out


@pytest.mark.parametrize(("suffix", "size"), [(".png", (450, 800)), (".svg", None)])
def test_plot_to_a_file(tmp_path: Path, suffix: str, size: tuple[int, int] | None) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / f"s{suffix}"
    code = cli.main(["plot", SPEC, "transformers:cosine", "--steps", "2000", "-o", str(out)])
    assert code == 0
    if size is None:
        text = out.read_text()
        assert text.lstrip().startswith("<?xml") and "</svg>" in text
    else:
        import matplotlib.image

        image = matplotlib.image.imread(out)
        assert image.shape[:2] == size
        assert image[..., :3].std() > 0.05  # not a blank canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp files left


def test_plot_labels_and_log_axis(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from steadystep.plot import plot_schedules

    fig = plot_schedules({"a": ss.presets.noam(1e-3, 100), "b": ss.constant(1e-4)}, 500, log=True)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(
        ax.get_lines()[0].get_ydata(), ss.presets.noam(1e-3, 100)(np.arange(500))
    )


def test_plot_refuses_unknown_suffix(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    code, _, err = run_main(capsys, "plot", SPEC, "-o", str(tmp_path / "s.bmpx"))
    assert code == 2 and "Argument `path` must end in one of" in err
    assert list(tmp_path.iterdir()) == []


def test_plot_unwritable_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_main(capsys, "plot", SPEC, "-o", str(blocker / "s.png"))
    assert code == 1 and "cannot write" in err and "Traceback" not in err
    assert blocker.read_text() == "x"


# -- spec sources -------------------------------------------------------------------------------
def test_json_and_yaml_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    s = ss.parse(SPEC)
    (tmp_path / "s.json").write_text(json.dumps(s.to_dict()))
    (tmp_path / "s.yaml").write_text(f"'{SPEC}'\n")
    for name in ("s.json", "s.yaml"):
        assert cli.load_schedule(str(tmp_path / name)) == s


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"type": "cosine", "start": 1', "malformed schedule file"),
        ("[1, 2]", "must hold spec text or a schedule dict"),
        ('{"type": "nope"}', "invalid schedule in"),
        ('{"type": "cosine", "start": 1, "end": 0, "steps": -5}', "steps=-5"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(cli.CLIError, match=message) as info:
        cli.load_schedule(str(path))
    assert info.value.code == 2


def test_missing_file() -> None:
    with pytest.raises(cli.CLIError, match="does not exist"):
        cli.load_schedule("nowhere/s.yaml")


def test_compat_names_call_the_library_function() -> None:
    compat = pytest.importorskip("steadystep.compat.transformers")
    s = cli.load_schedule(
        "transformers:cosine", options={"num_warmup_steps": 10, "num_training_steps": 100}
    )
    expected = compat.get_scheduler("cosine", num_warmup_steps=10, num_training_steps=100)
    assert s == expected
    # defaults: the run length, a tenth of it warming up
    assert cli.load_schedule("transformers:linear", steps=50) == compat.get_scheduler(
        "linear", num_warmup_steps=5, num_training_steps=50
    )


def test_compat_errors() -> None:
    with pytest.raises(cli.CLIError, match="unknown library 'nolib'"):
        cli.load_schedule("nolib:cosine")
    with pytest.raises(cli.CLIError, match="name='nope'"):
        cli.load_schedule("transformers:nope")
    with pytest.raises(cli.CLIError, match="--set applies to LIB:NAME"):
        cli.load_schedule(SPEC, options={"x": 1})


def test_set_values_are_literals(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("steadystep.compat.transformers")
    code, out, _ = run_main(
        capsys,
        "show",
        "transformers:cosine_with_restarts",
        "--set",
        "num_warmup_steps=0",
        "--set",
        "num_training_steps=100",
        "--set",
        "scheduler_specific_kwargs={'num_cycles': 2}",
        "--at",
        "25",
        "50",
    )
    assert code == 0  # 2 hard-restart cycles over 100 steps: half-way down at 25, restart at 50
    assert [line.split() for line in out.splitlines()[1:3]] == [["25", "0.5"], ["50", "1"]]
    code, _, err = run_main(capsys, "show", "transformers:cosine", "--set", "novalue")
    assert code == 2 and "KEY=VALUE" in err


# -- errors as a person sees them -----------------------------------------------------------------
def test_spec_error_points_at_the_bad_token() -> None:
    result = run_cli("show", "warmup(cosine(1e-3, 0, steps=), steps=10)")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert "column 30" in lines[0] and "expected a value" in lines[0]
    caret = lines[2].index("^") - lines[1].index("w")
    assert "warmup(cosine(1e-3, 0, steps=), steps=10)"[caret] == ")"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "cosinus(1, 0, 10)"], "unknown schedule 'cosinus'"),
        (["show", "cosine(1, 0, steps=-5)"], "steps=-5"),
        (["plot", "linear(1, 0, 10)", "--steps", "0"], "--steps: must be > 0"),
        (["show", "linear(1, 0, 10)", "--steps", "ten"], "--steps: must be a whole number"),
        (["demo", "--steps", "0"], "--steps: must be > 0"),
        (["demo", "--lr", "-1"], "--lr: must be a finite number > 0"),
        (["nope"], "invalid choice"),
        ([], "required: COMMAND"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_subprocess_exit_codes() -> None:
    assert run_cli("show", "cosinus(1, 0, 10)").returncode == 2
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"steadystep {ss.__version__}"


# -- bench dispatch -------------------------------------------------------------------------------
def test_bench_dispatches_to_the_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("steadystep.experiments.stability")
    fake.main = lambda argv: seen.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "steadystep.experiments.stability", fake)
    assert cli.main(["bench", "stability", "--quick", "--out", "x"]) == 7
    assert seen == [["--quick", "--out", "x"]]


def test_bench_missing_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "steadystep.experiments.stability", None)
    code, _, err = run_main(capsys, "bench", "stability")
    assert code == 1 and "is not available" in err


def test_import_steadystep_stays_light() -> None:
    code = (
        "import sys, steadystep, steadystep.cli, steadystep.plot; "
        "heavy = {'torch', 'jax', 'keras', 'matplotlib'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# -- pathological input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        "-" * 5000 + "1",  # Python's parser recurses once per sign
        "~" * 5000 + "1",
        "not " * 3000 + "1",
        "[" * 5000,
        "1+" * 6000 + "1",  # over the length limit
        "1" + "0" * 400,  # an int too big for a float
        "1e999",
    ],
    ids=["unary minus", "invert", "not", "brackets", "huge expression", "huge int", "inf"],
)
def test_pathological_set_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    pytest.importorskip("steadystep.compat.transformers")
    code, _, err = run_main(
        capsys, "show", "transformers:cosine", "--set", f"num_training_steps={value}"
    )
    assert code == 2 and "Traceback" not in err
    assert err.startswith("steadystep: error:") and len(err) < 2000


def test_a_pathological_set_value_in_a_subprocess_exits_2() -> None:
    pytest.importorskip("steadystep.compat.transformers")
    result = run_cli(
        "show", "transformers:cosine", "--set", "num_training_steps=" + "-" * 5000 + "1"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nested too deeply" in result.stderr


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "s.yaml"
    path.write_text("type: cosine\nstart: 1e-3\nend: 1.0e-5\nsteps: 1e3\n")
    assert cli.load_schedule(str(path)) == ss.cosine(1e-3, 1e-5, steps=1000.0)
    path.write_text("type: constant\nvalue: '1e-3'\n")  # quoted: still a string, refused
    with pytest.raises(cli.CLIError, match="value"):
        cli.load_schedule(str(path))
    path.write_text("type: linear\nstart: +.5E+3\nend: -2_0e-1\nsteps: 10\n")
    assert cli.load_schedule(str(path)) == ss.linear(500.0, -2.0, steps=10)


@pytest.mark.parametrize("name", ["configs", "configs.yaml", "s.json"])
def test_a_directory_for_a_spec_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    (tmp_path / name).mkdir()
    code, _, err = run_main(capsys, "show", str(tmp_path / name))
    assert code == 2 and "is a directory" in err and "Traceback" not in err


def test_experiments_do_not_import_the_command_layer() -> None:
    """The command sits on top: experiments raise steadystep.errors.UsageError, mapped to exit 2."""
    import ast
    import pathlib

    import steadystep.experiments as experiments
    from steadystep.errors import UsageError

    for path in pathlib.Path(experiments.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").endswith("cli"), f"{path.name} imports cli"
    from steadystep.cli import CLIError

    assert issubclass(CLIError, UsageError)
