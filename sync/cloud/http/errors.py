"""The one mapping from exception classes to HTTP (status, reason), as Starlette handlers.

:data:`ERRORS` is looked up along the exception's MRO (Starlette's own rule), so
the most specific class listed wins.  Every answer is ``{"error": message,
"reason": code}``; no response ever carries a traceback.
"""

import logging
import sqlite3
import time
from contextlib import contextmanager

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from edgekm.exceptions import (ConflictError, DeviceWeightCapError, DimensionError, EdgekmError,
                               ForbiddenError, FrameOverCapError, FrameTooLargeError,
                               NotFittedError, RolloutError, UnavailableError,
                               UnknownDeviceError, UnknownModelError, UnknownVersionError,
                               UnsupportedEncodingError)

from edgekm.sync.wire.auth import AuthError
from edgekm.sync.wire.frame import FrameError
from edgekm.sync.wire.telemetry import TelemetryError

__all__ = ["ERRORS", "BadRequest", "NotEnoughData", "error", "reason_of", "plain_errors",
           "EXCEPTION_HANDLERS", "RETRY_AFTER_SECONDS"]

logger = logging.getLogger("edgekm.sync.cloud.http.app")

RETRY_AFTER_SECONDS = 1


class BadRequest(ValueError):
    """A malformed request (HTTP 400 ``bad_request``)."""


class NotEnoughData(ValueError):
    """Data that cannot be fitted (HTTP 422 ``not_enough_data``)."""


#: exception class -> (status, reason); the most specific class on the MRO wins
ERRORS = {
    BadRequest: (400, "bad_request"),
    ClientDisconnect: (400, "bad_request"),
    NotEnoughData: (422, "not_enough_data"),
    NotFittedError: (422, "not_enough_data"),
    FrameTooLargeError: (413, "too_large"),
    UnsupportedEncodingError: (415, "unsupported_encoding"),
    FrameError: (400, "bad_frame"),
    TelemetryError: (400, "bad_telemetry"),
    AuthError: (401, "unauthorized"),
    ForbiddenError: (403, "forbidden"),
    UnknownModelError: (404, "unknown_model"),
    UnknownVersionError: (404, "unknown_version"),
    UnknownDeviceError: (404, "unknown_device"),
    RolloutError: (409, "rollout_conflict"),
    ConflictError: (409, "conflict"),
    DimensionError: (422, "wrong_dimension"),
    FrameOverCapError: (422, "frame_over_cap"),
    DeviceWeightCapError: (429, "device_weight_cap"),
    UnavailableError: (503, "unavailable"),
    sqlite3.Error: (503, "unavailable"),
}


def error(status_code, reason, message, retry_after=None, **extra):
    """The JSON error response (503s always carry Retry-After)."""
    if status_code == 503 and retry_after is None:
        retry_after = RETRY_AFTER_SECONDS
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message, "reason": reason, **extra}, status_code=status_code,
                        headers=headers)


def _lookup(exc):
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return None


def reason_of(exc):
    """The ``reason`` code an exception is answered with (for the metrics)."""
    if isinstance(exc, ClientDisconnect):     # counted as before the mapping existed
        return "internal"
    hit = _lookup(exc)
    return "internal" if hit is None else hit[1]


def error_for(exc):
    """The response for any exception: its :data:`ERRORS` entry, else 500 ``internal``."""
    hit = _lookup(exc)
    if hit is None:
        logger.error("internal error", exc_info=exc)
        return error(500, "internal", "internal error")
    status, reason = hit
    if isinstance(exc, ClientDisconnect):
        message = "the client disconnected"
    elif isinstance(exc, sqlite3.Error):
        logger.error("database error: %s", exc)
        message = "database unavailable"
    else:
        message = str(exc)
    extra = {"server_time": int(time.time())} if status == 401 else {}
    retry_after = getattr(exc, "retry_after", None) if status == 429 else None
    return error(status, reason, message, retry_after=retry_after, **extra)


async def _handle(request, exc):
    return error_for(exc)


async def _http_exception(request, exc):
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    return error(exc.status_code, reason, str(exc.detail))


#: for ``Starlette(exception_handlers=...)``
EXCEPTION_HANDLERS = {**dict.fromkeys(ERRORS, _handle), HTTPException: _http_exception}


@contextmanager
def plain_errors(answer, types=(ValueError,)):
    """Turn a plain ``types`` error of a service (a bad argument, not an
    :class:`~edgekm.exceptions.EdgekmError`) into ``answer`` (BadRequest or NotEnoughData)."""
    try:
        yield
    except types as exc:
        if isinstance(exc, EdgekmError):
            raise
        raise answer(str(exc)) from None
