"""``edgekm.sync.server``: the documented import path of :mod:`edgekm.sync.cloud.http.app`.

The code lives in ``sync/cloud/http/app.py``; importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .cloud.http import app as _home

sys.modules[__name__] = _home
