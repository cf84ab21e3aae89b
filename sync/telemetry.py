"""``edgekm.sync.telemetry``: the documented import path of :mod:`edgekm.sync.wire.telemetry`.

The code lives in ``sync/wire/telemetry.py``; importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .wire import telemetry as _home

sys.modules[__name__] = _home
