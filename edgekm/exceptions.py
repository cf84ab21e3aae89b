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
    """The model has not seen enough data to answer (fewer points than clusters)."""


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
