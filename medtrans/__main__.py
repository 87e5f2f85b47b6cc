"""``python -m medtrans``: the ``medtrans`` command."""

import sys

from medtrans.commands.cli import main

sys.exit(main())
