"""``edgekm.sync.version``: the documented import path of :mod:`edgekm.sync.wire.version`.

The code lives in ``sync/wire/version.py``; importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .wire import version as _home

sys.modules[__name__] = _home
