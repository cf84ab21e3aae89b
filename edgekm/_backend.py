"""Pick the compiled core or its pure-NumPy twin, once, at import.

``EDGEKM_PUREPYTHON=1`` forces the reference.  A missing or broken extension
falls back to the reference with a :class:`~edgekm.exceptions.BackendWarning`
rather than silently running slower.
"""

import os
import warnings

from .exceptions import BackendWarning

FORCED = os.environ.get("EDGEKM_PUREPYTHON", "").strip() not in ("", "0")
IMPORT_ERROR = None

if FORCED:
    from ._reference import ops
    from ._reference.engine import Engine
    NAME = "reference"
else:
    try:
        from ._core import _ops as ops
        from ._core._engine import Engine
        NAME = "cython"
    except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
        IMPORT_ERROR = exc
        warnings.warn(
            f"edgekm: the compiled core could not be imported ({exc}); running the "
            "pure-NumPy reference, which is much slower. Reinstall edgekm with a C "
            "compiler, or set EDGEKM_PUREPYTHON=1 to silence this warning.",
            BackendWarning,
            stacklevel=2,
        )
        from ._reference import ops
        from ._reference.engine import Engine
        NAME = "reference"

# The assignment kernel of centroid versions (edgekm.Assigner), chosen the same way.
if NAME == "cython":
    try:
        from ._core import _assign as assign
    except ImportError as exc:  # pragma: no cover - an extension built before _assign existed
        IMPORT_ERROR = exc
        warnings.warn(
            f"edgekm: the compiled assignment kernel could not be imported ({exc}); "
            "edgekm.Assigner runs the pure-NumPy reference. Rebuild edgekm.",
            BackendWarning,
            stacklevel=2,
        )
        from ._reference import assign
else:
    from ._reference import assign

__all__ = ["ops", "Engine", "assign", "NAME", "FORCED", "IMPORT_ERROR"]
