"""The README's own install command, in a fresh virtual environment, then the installed command.

The venv is made with ``--system-site-packages`` so the dependencies already installed here are
reused (no download of torch); the install command is the README's ``# main-command`` line up to
its ``&&``, run as written with the venv's ``python3`` first on ``PATH``. Then the installed
``steadystep`` entry point (the venv's ``bin/steadystep``) runs ``show`` and ``plot``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _main_command() -> str:
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.rstrip().endswith("# main-command"):
            return re.sub(r"\s*# main-command\s*$", "", line).strip()
    raise AssertionError("README.md has no line marked '# main-command'")


def test_readme_install_then_entry_point(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    install, _, run = _main_command().partition(" && ")
    assert install.startswith("python3 -m pip install") and run.startswith("steadystep ")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(env_dir),
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PYTHONPATH", None)
    # the venv has no pip of its own; the system pip (a system site package) installs into it
    result = subprocess.run(
        install, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0 and re.search(
        r"Could not find a version|No matching distribution|NewConnectionError|Network",
        result.stdout + result.stderr,
    ):
        pytest.skip(f"installing needs the network here: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    exe = bindir / "steadystep"
    assert exe.is_file(), "the install did not create the steadystep entry point"
    show = subprocess.run(
        [str(exe), "show", "warmup(linear(1.0, 0.0, steps=10), steps=10)", "--at", "5", "15"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert show.returncode == 0, show.stderr
    assert show.stdout.splitlines()[1:3] == ["   5  0.5", "  15  0.5"]
    out = tmp_path / "lr.png"
    plot = subprocess.run(
        [str(exe), "plot", "cosine(1.0, 0.0, steps=100)", "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plot.returncode == 0, plot.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and it is the venv's interpreter that runs it
    head = exe.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    assert str(env_dir) in head or sys.platform == "win32"
