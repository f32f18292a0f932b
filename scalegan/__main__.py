"""``python -m scalegan`` = the ``scalegan`` command."""

import sys

from .cli import main

sys.exit(main())
