"""``python -m hope`` (and ``torchrun -m hope``) run the ``hope`` command."""

import sys

from hope.cli import main

sys.exit(main())
