"""Redraw every schedule picture of the docs with ``steadystep plot``.

The commands live in the Markdown itself, one comment above each picture::

    <!-- plot: NAME.png | SPEC... [OPTIONS] -->

and this script runs ``steadystep plot SPEC... [OPTIONS] -o docs/img/NAME.png`` for each, so a
picture can only show what its spec says. Run from anywhere: ``python docs/make_plots.py``.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
MARKER = re.compile(r"<!-- plot: (?P<name>[\w.-]+\.(?:png|svg)) \| (?P<args>.+?) -->")


def plot_commands(markdown: str) -> list[tuple[str, list[str]]]:
    """``(picture name, steadystep plot arguments)`` of every marker in ``markdown``."""
    return [(m["name"], shlex.split(m["args"])) for m in MARKER.finditer(markdown)]


def main() -> int:
    from steadystep import cli

    failures = 0
    for page in sorted(DOCS.glob("*.md")):
        for name, args in plot_commands(page.read_text(encoding="utf-8")):
            target = DOCS / "img" / name
            code = cli.main(["plot", *args, "--size", "7", "3.2", "-o", str(target)])
            if code != 0:
                print(f"  ({page.name}: {name})", file=sys.stderr)
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
