"""Every exception edgekm raises, in one module.

Each inherits from a builtin and from :class:`EdgekmError`, so callers can
catch either: ``except ValueError`` keeps working for bad input, and
``except EdgekmError`` catches everything edgekm raises on purpose.  The
modules that raise them re-export their own, so ``edgekm.sync.wire.frame.FrameError``
is this module's ``FrameError``.

The classes are grouped by the room of the data path that raises them: the
core (estimators, data files), the wire (codecs, signatures), the device
(agent, outbox), the cloud (aggregator, versions, rollout, database) and the
command line.
"""


class EdgekmError(Exception):
    """Base class of every edgekm error."""


class BackendWarning(UserWarning):
    """The compiled core is missing and the NumPy reference runs instead."""


# --- the core ---------------------------------------------------------------------------

class NotFittedError(ValueError, AttributeError, EdgekmError):
    """The model has not seen enough data to answer (fewer points than clusters).

    When scikit-learn is in use, the error raised is also a
    ``sklearn.exceptions.NotFittedError``, so ``except NotFittedError`` catches it
    under either name.  scikit-learn is not a dependency: ``NotFittedError(...)``
    returns an instance of a subclass that also derives from scikit-learn's class
    whenever ``sklearn.exceptions`` is loaded at that moment, which it is as soon
    as the calling code can name scikit-learn's class.  An ``except`` clause
    matches on real base classes only (never ``__subclasscheck__``), hence the
    subclass rather than a registration.  Without scikit-learn nothing is
    imported and the class is this one.
    """

    def __new__(cls, *args, **kwargs):
        if cls is NotFittedError:
            cls = _not_fitted_class()
        return super().__new__(cls, *args, **kwargs)

    def __reduce__(self):
        # the subclass is created at run time: unpickling builds it anew
        return NotFittedError, self.args


_SKLEARN_NOT_FITTED = []


def _not_fitted_class():
    """:class:`NotFittedError`, or its subclass that also derives from scikit-learn's
    ``NotFittedError`` when ``sklearn.exceptions`` is loaded (created once)."""
    import sys

    module = sys.modules.get("sklearn.exceptions")
    base = getattr(module, "NotFittedError", None)
    if not isinstance(base, type) or not issubclass(base, Exception):
        return NotFittedError
    if not _SKLEARN_NOT_FITTED:
        # ``append`` is atomic: two racing threads may each build a class, and
        # every later call returns the first one
        _SKLEARN_NOT_FITTED.append(type("NotFittedError", (NotFittedError, base), {
            "__module__": __name__, "__qualname__": "NotFittedError",
            "__doc__": NotFittedError.__doc__}))
    return _SKLEARN_NOT_FITTED[0]


class DataError(ValueError, EdgekmError):
    """A data file that is missing, unreadable or malformed."""


class FitError(ValueError, EdgekmError):
    """Bad parameters or a data file that cannot be fitted (too few points)."""


# --- the wire ---------------------------------------------------------------------------

class FrameError(ValueError, EdgekmError):
    """A frame that cannot be decoded or fails validation; the message says why."""


class FrameTooLargeError(FrameError):
    """A body larger than ``max_frame_bytes`` (HTTP 413)."""


class VersionError(ValueError, EdgekmError):
    """A version document that fails its digest or validation."""


class TelemetryError(ValueError, EdgekmError):
    """A telemetry summary that cannot be decoded or fails validation."""


class AuthError(PermissionError, EdgekmError):
    """A request that is not signed correctly (the aggregator answers 401)."""


# --- the device -------------------------------------------------------------------------

class AgentLockedError(RuntimeError, EdgekmError):
    """Another agent already uses this ``state_dir``."""


class OutboxError(RuntimeError, EdgekmError):
    """The outbox belongs to another device or model, or its schema is unknown."""


class AnswerError(RuntimeError, EdgekmError):
    """A JSON request that got no answer, a non-2xx answer or a body that is not JSON
    (``status`` is the HTTP status, None when there was no answer)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class SeedUploadError(RuntimeError, EdgekmError):
    """The aggregator refused a frame of a seed upload (or could not be reached)."""


# --- the cloud --------------------------------------------------------------------------

class SchemaError(RuntimeError, EdgekmError):
    """The database was written by a newer edgekm, or is not an edgekm database."""


class ForbiddenError(PermissionError, EdgekmError):
    """An authenticated request that may not do this: a revoked device, or a frame
    whose device or model differs from the request's (HTTP 403)."""


class UnknownModelError(LookupError, EdgekmError):
    """The model is not registered and ``auto_create_models`` is off (HTTP 404)."""


class UnknownDeviceError(LookupError, EdgekmError):
    """No device has this id (device administration)."""


class DeviceExistsError(ValueError, EdgekmError):
    """``add_device`` of a device id that is already registered (revoked or not)."""


class ConflictError(ValueError, EdgekmError):
    """A frame id that was accepted before with a different body (HTTP 409)."""


class DimensionError(ValueError, EdgekmError):
    """A frame whose n_features differs from the model's (HTTP 422)."""


class WeightCapError(ValueError, EdgekmError):
    """A frame refused by the per-device, per-window weight cap (policy ``reject``)."""

    retry_after = None


class FrameOverCapError(WeightCapError):
    """The frame's weight alone exceeds the cap: it can never be merged (HTTP 422)."""


class DeviceWeightCapError(WeightCapError):
    """The device's merged weight in the current window plus this frame would exceed
    the cap; the frame fits in a later window (HTTP 429, ``retry_after`` seconds)."""

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = int(retry_after)


class UnavailableError(RuntimeError, EdgekmError):
    """The aggregator is closed, overloaded or failed to commit (HTTP 503)."""


class StorageIntegrityError(ValueError, EdgekmError):
    """A database constraint (a primary key, a trigger) refused a write; on SQLite this is
    :class:`sqlite3.IntegrityError`."""


class RolloutError(ValueError, EdgekmError):
    """A rollout change that the current state does not allow (HTTP 409): a second
    canary, promoting the active version, a rollback with nothing to go back to."""


class UnknownVersionError(LookupError, EdgekmError):
    """No such version of this model (HTTP 404)."""


class UnsupportedEncodingError(ValueError, EdgekmError):
    """A request body sent with a ``Content-Encoding`` (gzip, ...): bodies travel as
    they are (HTTP 415)."""


# --- the command line and the demo ----------------------------------------------------

class ConfigError(EdgekmError):
    """A bad configuration file, environment variable or missing setting (exit status 2)."""


class UsageError(EdgekmError):
    """A mistake in the command line or its input files; exit status 2."""


class BenchInputError(ValueError, EdgekmError):
    """A problem with the benchmark's input (data file or parameters), not with edgekm."""


class FleetDemoError(ValueError, EdgekmError):
    """Bad demo input (data file, parameters); the CLI prints it and exits 2."""


class DemoStepError(RuntimeError, EdgekmError):
    """A step of the fleet demo failed (an admin call refused or unanswered, the server
    not starting, a stop asked for); the run stops and reports it as a failure."""
