"""The documentation runs: Python blocks execute, links resolve, pictures have their commands.

- README.md, docs/index.md, docs/guide.md, docs/schedules.md (this project's user docs):
  every ```python block runs, in order, in one namespace per page.
- Every docs page (also the reference pages written alongside): ```python blocks compile, and
  relative links point at files that exist.
- Every ``<!-- plot: NAME | ARGS -->`` marker names a picture under docs/img, and every picture
  a page shows has a marker or is the demo's report: nothing is drawn by hand.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXECUTED = ["README.md", "docs/index.md", "docs/guide.md", "docs/schedules.md"]
ALL_PAGES = sorted({*EXECUTED, *(str(p.relative_to(ROOT)) for p in DOCS.glob("*.md"))})
NEEDS = {"torch": "PyTorch", "matplotlib": "matplotlib"}

_BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def blocks(page: str, language: str = "python") -> list[str]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return [m.group(2) for m in _BLOCK.finditer(text) if m.group(1) == language]


def _load_make_plots():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_plots", DOCS / "make_plots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", EXECUTED)
def test_python_blocks_run(page: str) -> None:
    code = blocks(page)
    assert code, f"{page} has no python examples"
    for module, what in NEEDS.items():
        if any(re.search(rf"^\s*import {module}\b", c, re.MULTILINE) for c in code):
            pytest.importorskip(module, reason=f"{page}'s examples need {what}")
    namespace: dict[str, object] = {"__name__": f"docs_{Path(page).stem}"}
    for i, source in enumerate(code):
        try:
            exec(compile(source, f"{page}[python block {i + 1}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page}, python block {i + 1} failed:\n{source}") from exc


@pytest.mark.parametrize("page", ALL_PAGES)
def test_python_blocks_compile(page: str) -> None:
    for i, source in enumerate(blocks(page)):
        try:
            ast.parse(source)
        except SyntaxError as exc:
            raise AssertionError(f"{page}, python block {i + 1} is not Python: {exc}") from exc


@pytest.mark.parametrize("page", ALL_PAGES)
def test_relative_links_resolve(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (ROOT / page).parent / target.split("#")[0]
        assert path.exists(), f"{page} links to {target}, which does not exist"


def test_every_picture_comes_from_a_plot_command() -> None:
    make_plots = _load_make_plots()
    for page in ALL_PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        commands = dict(make_plots.plot_commands(text))
        for name, args in commands.items():
            assert (DOCS / "img" / name).is_file(), f"{page}: run python docs/make_plots.py"
            assert args, f"{page}: the marker for {name} has no spec"
        for image in re.findall(r"!\[[^\]]*\]\((?:docs/)?img/([^)]+)\)", text):
            assert image in commands or image == "demo.png", (
                f"{page} shows img/{image} without a <!-- plot: ... --> command"
            )


def test_plot_commands_are_valid() -> None:
    # every marker's spec parses (drawing them all is docs/make_plots.py's job)
    from steadystep import cli

    make_plots = _load_make_plots()
    text = (DOCS / "schedules.md").read_text(encoding="utf-8")
    commands = make_plots.plot_commands(text)
    assert len(commands) >= 20
    parser = cli.build_parser()
    for _, args in commands:
        ns = parser.parse_args(["plot", *args])
        options = cli._options(ns.set)
        for spec in ns.spec:
            cli.load_schedule(spec, options=options, steps=ns.steps)
        assert shlex.join(args)  # round-trips as a shell command line


def test_readme_quick_start_markers() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    main = [line for line in text.splitlines() if line.rstrip().endswith("# main-command")]
    test = [line for line in text.splitlines() if line.rstrip().endswith("# test-command")]
    assert len(main) == 1 and len(test) == 1
    assert "steadystep demo" in main[0]
    assert "pytest" in test[0]
