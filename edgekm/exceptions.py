"""Exceptions raised by edgekm.

Each inherits from a builtin and from :class:`EdgekmError`, so callers can
catch either.
"""


class EdgekmError(Exception):
    """Base class of every edgekm error."""


class NotFittedError(ValueError, AttributeError, EdgekmError):
    """The model has not seen enough data to answer (fewer points than clusters)."""


class BackendWarning(UserWarning):
    """The compiled core is missing and the NumPy reference runs instead."""
