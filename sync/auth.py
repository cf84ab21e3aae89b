"""``edgekm.sync.auth``: the documented import path of :mod:`edgekm.sync.wire.auth`.

The code lives in ``sync/wire/auth.py``; importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .wire import auth as _home

sys.modules[__name__] = _home
