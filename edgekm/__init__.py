"""edgekm: fixed-memory streaming k-means for edge devices.

Public surface: :class:`StreamingKMeans`, :class:`Coreset`, :class:`Assigner`,
:class:`AssignResult`, :class:`EdgeFilter`,
:func:`show_config` and the exceptions.  Compiled modules are private.
``edgekm.river`` (the river adapter) is imported only when asked for: importing
edgekm loads neither river, pandas nor scikit-learn.
"""

from . import _backend
from .coreset import Coreset
from .exceptions import BackendWarning, EdgekmError, NotFittedError
from .streaming import StreamingKMeans

# Assignment and the edge filter (and the thread pool behind them) load at first use: a
# device that only streams and syncs never needs them at start.
_LAZY = {"Assigner": "assign", "AssignResult": "assign", "EdgeFilter": "filter"}

__version__ = "0.1.0"

__all__ = ["StreamingKMeans", "Coreset", "Assigner", "AssignResult", "EdgeFilter", "show_config", "EdgekmError", "NotFittedError",
           "BackendWarning", "__version__"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgekm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def show_config(file=None):
    """Print (and return) which backend runs: the compiled core or the NumPy reference."""
    import sys

    import numpy

    info = {
        "edgekm": __version__,
        "backend": _backend.NAME,
        "forced_by_EDGEKM_PUREPYTHON": _backend.FORCED,
        "import_error": None if _backend.IMPORT_ERROR is None else str(_backend.IMPORT_ERROR),
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
    }
    out = file if file is not None else sys.stdout
    for key, value in info.items():
        print(f"{key}: {value}", file=out)
    return info
