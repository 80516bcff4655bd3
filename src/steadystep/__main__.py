"""``python -m steadystep``: the same as the ``steadystep`` command."""

import sys

from steadystep.cli import main

sys.exit(main())
