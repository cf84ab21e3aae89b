"""``edgekm.sync.server``: the documented import path of :mod:`edgekm.sync.cloud.http`.

The code lives in ``sync/cloud/http/`` (app, routes, errors, admission, committer, serving); importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .cloud import http as _home

sys.modules[__name__] = _home
