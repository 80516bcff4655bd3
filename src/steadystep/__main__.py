"""``python -m steadystep``: the same as the ``steadystep`` command."""

from steadystep.cli import run

run()
