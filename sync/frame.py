"""``edgekm.sync.frame``: the documented import path of :mod:`edgekm.sync.wire.frame`.

The code lives in ``sync/wire/frame.py``; importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .wire import frame as _home

sys.modules[__name__] = _home
