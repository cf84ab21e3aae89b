"""``python -m edgekm``: the same as the ``edgekm`` command."""

import sys

from edgekm.cli import main

sys.exit(main())
