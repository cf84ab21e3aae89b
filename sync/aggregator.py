"""``edgekm.sync.aggregator``: the documented import path of :mod:`edgekm.sync.cloud.aggregator`.

The code lives in ``sync/cloud/aggregator.py``; importing this name gives that very module, so
there is one home and one set of module globals.
"""

import sys

from .cloud import aggregator as _home

sys.modules[__name__] = _home
