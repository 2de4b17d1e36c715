"""``python -m activate``: the same program as ``model-repo``."""

import sys

from .cli import main

sys.exit(main())
