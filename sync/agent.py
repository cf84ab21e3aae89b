"""``edgekm.sync.agent``: the documented import path of :mod:`edgekm.sync.device.agent`.

The code lives in ``sync/device/agent.py``; importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .device import agent as _home

sys.modules[__name__] = _home
