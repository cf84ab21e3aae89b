"""The aggregator core: merges device coreset frames under Observation 1, in SQLite.

It knows nothing of HTTP (:mod:`edgekm.sync.cloud.http.app` is a thin layer over it).

**Accepting a frame** is one SQLite transaction (``BEGIN IMMEDIATE`` ...
``COMMIT``) that ends before :meth:`Aggregator.accept` returns: the frame is
validated, deduplicated on ``(model, device, boot, seq)`` by the sha256 of its
body, merged into the model's coreset trees, and recorded.
:meth:`Aggregator.accept_signed` does the same, plus authentication, for a
batch of requests in one transaction (group commit; each request has its own
savepoint, so one rejection never undoes another request).

**The aggregate stays bounded.** Each model keeps r-way coreset trees of
buckets of at most ``coreset_size`` weighted points: one per time window and
one for all time.  A frame enters its window's tree as a level-0 bucket
(reduced to ``coreset_size`` points first if larger).  When a level holds
``merge_degree`` buckets, their union (a coreset of the union of their data:
Observation 1) is reduced by the StreamKM++ coreset tree into one bucket of the
next level, like a carry in base r.  A tree over N frames holds at most
``(r - 1) * (log_r(N) + 1)`` buckets.

The all-time tree receives whole windows: when the first frame of a later
window arrives, the buckets of the earlier windows are added to the
all-time tree, each at its own level (the carries go on from there), and
``models.folded_through`` records it.  The all-time aggregate is the union of
the all-time tree and the trees of the windows not folded yet (normally
just the current one).  A frame is reduced in one tree, not two, which halves
the work of an accept; the bound and the reduce depth of every point are
those of a single tree over all the frames.  If the clock steps back into a
window already folded, its frames go to both trees.

Weights are kept exactly: the reduce conserves the total weight, so with
integer weights the aggregate's weight equals the sum of the accepted frame
weights to the last unit (below 2**53).

**Time windows** are numbered ``floor(received / window_seconds)``, where
``received`` is the aggregator's clock (``clock()``, Unix seconds), never the
device's.  ``window_seconds`` is fixed per model when it is created.
``aggregate(model, windows=N)`` is the union of the windows
``current - N + 1 .. current``, ``current`` being the window of ``clock()``.

**Centroid versions** (:mod:`edgekm.sync.cloud.versions`, mixed in): publishing
with stable labels, the rollout (candidate, canary, active, retired; pins;
rollback), device pulls, telemetry summaries and the drift report.  Pulls
and telemetry uploads go through :meth:`Aggregator.accept_signed` like
frames, so that they share its group commit.

**Reproducibility.** Each model has a seed (drawn at creation, or derived
from ``random_state``) and a persisted counter of reduces; reduce number i
uses the seed ``sha256(seed, i)``, so replaying the same frames in the same
order into a fresh database gives the same trees, bit for bit.
"""

import contextlib
import hashlib
import math
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from edgekm import Coreset
from edgekm.exceptions import (ConflictError, DeviceExistsError, DeviceWeightCapError,
                               DimensionError, EdgekmError, ForbiddenError, FrameOverCapError,
                               FrameTooLargeError, NotFittedError, UnavailableError,
                               UnknownDeviceError, UnknownModelError, WeightCapError)

from edgekm.sync.wire import auth
from edgekm.sync.cloud import database as store
from edgekm.sync.wire.auth import AuthError
from edgekm.sync.wire.frame import (DTYPES, MAX_FEATURES, MAX_FRAME_BYTES, MAX_POINTS, FrameError, check_id,
                    decode_frame, seqsum)
from .database import ALL_TIME, COMPACTED
from edgekm.sync.wire.telemetry import TelemetryError
from .versions import RolloutError, UnknownVersionError, VersionsMixin

__all__ = ["Aggregator", "Upload", "Pull", "AuthError", "FrameError", "ForbiddenError",
           "UnknownModelError", "UnknownDeviceError", "ConflictError", "DimensionError",
           "FrameTooLargeError", "DeviceExistsError", "UnavailableError", "TelemetryError",
           "RolloutError", "UnknownVersionError", "WeightCapError", "FrameOverCapError",
           "DeviceWeightCapError", "WEIGHT_CAP_POLICIES"]

#: what the aggregator does with a frame that would take its device over the weight cap
WEIGHT_CAP_POLICIES = ("reject", "clip")


@dataclass(frozen=True)
class Upload:
    """One signed frame upload, as :meth:`Aggregator.accept_signed` takes it.

    ``headers`` maps the lower-case header names of :mod:`edgekm.sync.wire.auth`
    to their values; ``path`` is the request path exactly as signed.
    """

    model: str
    method: str
    path: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Pull:
    """A signed pull of centroids (``GET .../centroids?device=ID``), for :meth:`Aggregator.accept_signed`.

    ``path`` is the path as signed, query string included; ``device`` the
    ``device`` query parameter (None: the signing device).
    """

    model: str
    path: str
    headers: Mapping[str, str]
    device: object = None


@dataclass(frozen=True)
class Prepared:
    """An :class:`Upload` with its body decoded, and the body's sha256.

    ``kind`` is "frame" (``decoded``: (Frame, digest) or the FrameError),
    "telemetry" ((TelemetrySummary, digest) or the TelemetryError) or "pull"
    (``decoded``: the requested device id or None).
    """

    upload: Upload
    decoded: object
    kind: str = "frame"


def _signed64(value):
    return value - (1 << 64) if value >= (1 << 63) else value


def _reduce_seed(seed, counter):
    digest = hashlib.sha256(f"edgekm-reduce:{seed}:{counter}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}.")
    return int(value)


def _check_cap(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(value) and value > 0):
        raise ValueError(f"max_device_weight must be None or a finite number > 0; "
                         f"got {value!r}.")
    return float(value)


def check_sender(what, item, model, device_id):
    """An upload (frame or summary) must name the signing device and the URL's model."""
    if item.device != device_id:
        raise ForbiddenError(f"the {what} is from device {item.device!r} but the request is "
                             f"signed by {device_id!r}")
    if item.model != model:
        raise ForbiddenError(f"the {what} is for model {item.model!r} but was sent to "
                             f"model {model!r}")

class Aggregator(VersionsMixin):
    """Merge coreset frames from many devices into bounded per-model aggregates.

    Parameters
    ----------
    db_path : str or path-like
        The SQLite database (created, with its schema, if missing).
    coreset_size : int, default=200
        m, the maximum number of points of a bucket.
    merge_degree : int, default=2
        r, the number of buckets of a level that are merged into one bucket of
        the next level.
    window_seconds : float, default=3600
        Length of a time window, for models created from now on.
    auto_create_models : bool, default=True
        Create a model at its first frame (n_features and dtype from that
        frame); when False, frames for unregistered models raise
        :class:`UnknownModelError`.
    max_frame_bytes, max_points, max_features : int
        Limits on untrusted frames, passed to :func:`~edgekm.sync.wire.frame.decode_frame`.
    max_skew : int, default=300
        Allowed clock skew of a request timestamp, in seconds.
    durability : {"full", "normal"}, default="full"
        SQLite ``synchronous`` setting.  "full" syncs the WAL at every commit,
        so an accepted frame survives a power loss; "normal" may lose the last
        commits on power loss (never on a process crash).
    retain_windows : int or None, default=None
        Keep the buckets of only this many most recent windows per model (the
        all-time tree and the frame records are always kept).  None keeps all.
    clock : callable, default=time.time
        The aggregator's clock, in Unix seconds: receive times, windows, nonce
        expiry and the timestamp check of signed requests.
    random_state : int or None, default=None
        Derive each model's seed from this and the model name (reproducible
        trees); None draws a random seed per model.
    checkpoint_interval : float or None, default=0.5
        Copy the WAL into the database from a background thread every this
        many seconds, so that commits never pay for it; None leaves it to
        SQLite's automatic checkpoints, run by the committing thread.
    max_device_weight : float or None, default=None
        The weight cap: the most weight one device may have merged into one
        model in one time window (the aggregator's window of
        ``window_seconds``).  None: no cap.  A model may have its own
        (:meth:`add_model`).
    weight_cap_policy : {"reject", "clip"}, default="reject"
        What happens to a frame that would take its device over the cap.
        "reject": nothing is merged; a frame heavier than the cap on its own
        raises :class:`FrameOverCapError` (HTTP 422 ``frame_over_cap``), any
        other :class:`DeviceWeightCapError` (HTTP 429 ``device_weight_cap``,
        retry after the window ends).  "clip": the frame is merged with its
        weights scaled so that the device reaches the cap exactly; the weight
        removed is recorded (frame, device window, model) and reported as
        ``clipped_weight`` in the answer.
    compact_windows : int or None, default=168
        Compaction (:meth:`compact`) keeps this many most recent windows per
        model as separate trees and merges the older ones (already folded
        into the all-time tree) into one compacted tree.  None: never.
    dedup_seconds : float or None, default=604800
        Compaction collapses the dedup rows (frames, telemetry) received
        more than this many seconds ago into runs of consecutive ``seq``, and
        deletes forwarded anomalies older than this.  None: never.
    publish_trim : float in [0, 0.5), default=0.0
        The default ``trim`` of :meth:`publish` (and of the auto-publish
        policies): fit the published centres with
        :func:`~edgekm.solve.trimmed_kmeans`, which leaves out up to
        this fraction of the aggregate's weight farthest from the centres.
        0: the plain solver.

    The object is thread-safe: writes are serialised on one connection, and
    each reading thread has its own connection (WAL readers never block the
    writer).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from edgekm.sync import Aggregator, encode_frame
    >>> tmp = tempfile.mkdtemp()
    >>> agg = Aggregator(os.path.join(tmp, "a.db"), random_state=0)
    >>> key = agg.add_device("sensor-1")
    >>> body = encode_frame(model="m", device="sensor-1", boot=1, seq=0, span=(0, 2),
    ...                     points=np.eye(3), weights=[1.0, 1.0, 1.0], level=0, created=0.0)
    >>> agg.accept("m", "sensor-1", body)["status"]
    'accepted'
    >>> agg.accept("m", "sensor-1", body)["status"]
    'duplicate'
    >>> agg.total_weight("m")
    3.0
    >>> agg.close()
    """

    def __init__(self, db_path, *, coreset_size=200, merge_degree=2, window_seconds=3600,
                 auto_create_models=True, max_frame_bytes=MAX_FRAME_BYTES,
                 max_points=MAX_POINTS, max_features=MAX_FEATURES,
                 max_skew=auth.MAX_SKEW_SECONDS, durability="full", retain_windows=None,
                 clock=time.time, random_state=None, checkpoint_interval=0.5,
                 max_device_weight=None, weight_cap_policy="reject", compact_windows=168,
                 dedup_seconds=7 * 86400.0, publish_trim=0.0):
        self.coreset_size = _check_positive_int("coreset_size", coreset_size)
        self.merge_degree = _check_positive_int("merge_degree", merge_degree)
        if self.merge_degree < 2:
            raise ValueError(f"merge_degree must be >= 2; got {merge_degree!r}.")
        if not (isinstance(window_seconds, (int, float)) and math.isfinite(window_seconds)
                and window_seconds > 0):
            raise ValueError(f"window_seconds must be a number > 0; got {window_seconds!r}.")
        if durability not in store.DURABILITY:
            raise ValueError(f"durability must be one of {sorted(store.DURABILITY)}; "
                             f"got {durability!r}.")
        if retain_windows is not None:
            retain_windows = _check_positive_int("retain_windows", retain_windows)
        self.max_device_weight = _check_cap(max_device_weight)
        if weight_cap_policy not in WEIGHT_CAP_POLICIES:
            raise ValueError(f"weight_cap_policy must be one of {WEIGHT_CAP_POLICIES}; "
                             f"got {weight_cap_policy!r}.")
        self.weight_cap_policy = weight_cap_policy
        if compact_windows is not None:
            compact_windows = _check_positive_int("compact_windows", compact_windows)
        self.compact_windows = compact_windows
        if dedup_seconds is not None and not (
                isinstance(dedup_seconds, (int, float)) and not isinstance(dedup_seconds, bool)
                and math.isfinite(dedup_seconds) and dedup_seconds >= 2 * max_skew):
            raise ValueError(f"dedup_seconds must be None or a number >= 2 * max_skew; "
                             f"got {dedup_seconds!r}.")
        self.dedup_seconds = None if dedup_seconds is None else float(dedup_seconds)
        if isinstance(publish_trim, bool) or not isinstance(publish_trim, (int, float)) \
                or not 0 <= publish_trim < 0.5:
            raise ValueError(f"publish_trim must be a number in [0, 0.5); got {publish_trim!r}.")
        self.publish_trim = float(publish_trim)
        self.window_seconds = float(window_seconds)
        self.auto_create_models = bool(auto_create_models)
        self.max_frame_bytes = _check_positive_int("max_frame_bytes", max_frame_bytes)
        self.max_points = _check_positive_int("max_points", max_points)
        self.max_features = _check_positive_int("max_features", max_features)
        self.max_skew = _check_positive_int("max_skew", max_skew)
        self.durability = durability
        self.retain_windows = retain_windows
        self.clock = clock
        self.random_state = random_state
        self.db_path = str(db_path)

        self._lock = threading.RLock()          # serialises the write connection
        self._local = threading.local()         # one read connection per thread
        self._readers = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._next_nonce_purge = 0.0
        self._cache = {}                        # model_id -> _Trees (writer only)
        if checkpoint_interval is not None and not (
                isinstance(checkpoint_interval, (int, float)) and checkpoint_interval > 0):
            raise ValueError(f"checkpoint_interval must be None or a number > 0; "
                             f"got {checkpoint_interval!r}.")
        self.checkpoint_interval = checkpoint_interval
        self._checkpointer = None
        self._writer = store.connect(self.db_path, durability=durability)
        try:
            store.migrate(self._writer)
            if checkpoint_interval is not None:
                self._writer.execute("PRAGMA wal_autocheckpoint = 0")
                self._checkpointer = store.Checkpointer(self.db_path, checkpoint_interval,
                                                        durability=durability)
        except BaseException:
            self._writer.close()
            raise

    # ------------------------------------------------------------ lifecycle
    def close(self):
        """Close every connection; further calls raise :class:`UnavailableError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.stop()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._lock:
            try:    # copy the WAL into the database and empty it
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                pass
            self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self):
        if self._closed:
            raise UnavailableError("the aggregator is closed.")

    @contextlib.contextmanager
    def _snapshot(self):
        """This thread's read-only connection inside one read transaction, so that
        every query in the block sees the same state."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _reader(self):
        self._check_open()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = store.connect(self.db_path, durability=self.durability)
            conn.execute("PRAGMA query_only = ON")
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    raise UnavailableError("the aggregator is closed.")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _transaction(self, work):
        """Run ``work(cursor)`` in one BEGIN IMMEDIATE ... COMMIT on the writer."""
        with self._lock:
            self._check_open()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                self._cache.clear()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    # ------------------------------------------------------------ devices
    def add_device(self, device_id):
        """Register a device; return its new secret key (hex, 256 bits).

        Raises :class:`DeviceExistsError` if the id is taken (revoked ids stay
        taken, for audit) and :class:`FrameError` for an invalid id.
        """
        check_id(device_id, "device_id")
        key = auth.new_key()

        def work(conn):
            try:
                conn.execute("INSERT INTO devices (device_id, key_hex, created) VALUES (?, ?, ?)",
                             (device_id, key, float(self.clock())))
            except sqlite3.IntegrityError:
                raise DeviceExistsError(f"device {device_id!r} already exists.") from None
        self._transaction(work)
        return key

    def revoke_device(self, device_id):
        """Revoke a device: its requests are answered 403 from now on.

        The device stays in the table, with its revocation time.  Revoking a
        revoked device does nothing; an unknown id raises
        :class:`UnknownDeviceError`.
        """
        def work(conn):
            row = conn.execute("SELECT revoked FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is None:
                raise UnknownDeviceError(f"no device {device_id!r}.")
            if row[0] is None:
                conn.execute("UPDATE devices SET revoked = ? WHERE device_id = ?",
                             (float(self.clock()), device_id))
        self._transaction(work)

    def list_devices(self):
        """Every device, as dicts with ``device_id``, ``created``, ``revoked`` (time or
        None), ``frames`` and ``last_received`` (keys are never listed)."""
        rows = self._reader().execute(
            "SELECT d.device_id, d.created, d.revoked, "
            "(SELECT count(*) FROM frames f WHERE f.device_id = d.device_id) + "
            "(SELECT coalesce(sum(n_items), 0) FROM seq_ranges r WHERE r.kind = 'frame' "
            "AND r.device_id = d.device_id), "
            "(SELECT max(received) FROM frames f WHERE f.device_id = d.device_id) "
            "FROM devices d ORDER BY d.device_id").fetchall()
        return [{"device_id": r[0], "created": r[1], "revoked": r[2], "frames": r[3],
                 "last_received": r[4]} for r in rows]

    # ------------------------------------------------------------ models
    def add_model(self, model, n_features, *, dtype="float32", window_seconds=None,
                  max_device_weight=None, weight_cap_policy=None):
        """Register a model with ``n_features`` features.

        ``dtype`` ("float32" or "float64") is the storage type of its
        buckets (frames of the other type are converted); ``window_seconds``
        defaults to the aggregator's.  ``max_device_weight`` and
        ``weight_cap_policy`` set the model's own weight cap (None: the
        aggregator's); given for an existing model, they replace its cap.
        Raises ``ValueError`` if the model exists with another n_features.
        """
        cap = _check_cap(max_device_weight)
        if weight_cap_policy is not None and weight_cap_policy not in WEIGHT_CAP_POLICIES:
            raise ValueError(f"weight_cap_policy must be None or one of {WEIGHT_CAP_POLICIES}; "
                             f"got {weight_cap_policy!r}.")
        check_id(model, "model")
        n_features = _check_positive_int("n_features", n_features)
        if n_features > self.max_features:
            raise ValueError(f"n_features={n_features} exceeds max_features={self.max_features}.")
        code = np.dtype(dtype).newbyteorder("<").str
        if code not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64; got {dtype!r}.")
        seconds = self.window_seconds if window_seconds is None else float(window_seconds)
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"window_seconds must be a number > 0; got {window_seconds!r}.")

        def work(conn):
            row = self._model_row(conn, model)
            if row is not None:
                if row["n_features"] != n_features:
                    raise ValueError(f"model {model!r} exists with n_features="
                                     f"{row['n_features']}, not {n_features}.")
            else:
                row = self._create_model(conn, model, n_features, code, seconds)
            if cap is not None or weight_cap_policy is not None:
                conn.execute("UPDATE models SET max_device_weight = ?, weight_cap_policy = ? "
                             "WHERE model_id = ?", (cap, weight_cap_policy, row["model_id"]))
        self._transaction(work)

    def list_models(self):
        """Every model, as dicts (see :meth:`model_info`, without the windows)."""
        names = [r[0] for r in self._reader().execute("SELECT name FROM models ORDER BY name")]
        return [self.model_info(name, with_windows=False) for name in names]

    def model_info(self, model, *, with_windows=True):
        """A dict: model, n_features, dtype, window_seconds, total_weight, frames,
        devices, buckets and (``with_windows``) the windows with their weights."""
        with self._snapshot() as conn:          # one snapshot for every query below
            row = self._model_row(conn, model)
            if row is None:
                raise UnknownModelError(f"no model {model!r}.")
            mid = row["model_id"]
            devices = conn.execute("SELECT count(DISTINCT device_id) FROM frames "
                                   "WHERE model_id = ?", (mid,)).fetchone()[0]
            buckets = conn.execute("SELECT count(*) FROM buckets WHERE model_id = ?",
                                   (mid,)).fetchone()[0]
            cap, policy = self._cap(row)
            compacted = conn.execute("SELECT total_weight, n_frames FROM windows WHERE "
                                     "model_id = ? AND window = ?", (mid, COMPACTED)).fetchone()
            info = {"model": model, "n_features": row["n_features"],
                    "dtype": np.dtype(row["dtype"]).name,
                    "window_seconds": row["window_seconds"],
                    "total_weight": row["total_weight"], "frames": row["n_frames"],
                    "devices": devices, "buckets": buckets,
                    "weight_cap": {"max_device_weight": cap, "policy": policy,
                                   "clipped_weight": row["clipped_weight"]},
                    "compacted": {"through": row["compacted_through"],
                                  "total_weight": compacted[0] if compacted else 0.0,
                                  "frames": compacted[1] if compacted else 0}}
            if with_windows:
                ws = row["window_seconds"]
                info["windows"] = [
                    {"window": w, "start": w * ws, "end": (w + 1) * ws, "total_weight": tw,
                     "frames": nf}
                    for w, tw, nf in conn.execute(
                        "SELECT window, total_weight, n_frames FROM windows WHERE model_id = ? "
                        "AND window >= 0 ORDER BY window", (mid,))]
        return info

    _MODEL_COLUMNS = ("model_id", "n_features", "dtype", "window_seconds", "total_weight",
                      "n_frames", "seed", "n_reduces", "folded_through", "clipped_weight",
                      "max_device_weight", "weight_cap_policy", "compacted_through")

    def _cap(self, row):
        """The (cap, policy) of a model row: its own, else the aggregator's."""
        cap = row["max_device_weight"]
        if cap is None:
            cap = self.max_device_weight
        return cap, row["weight_cap_policy"] or self.weight_cap_policy

    def _model_row(self, conn, model):
        row = conn.execute(f"SELECT {', '.join(self._MODEL_COLUMNS)} FROM models WHERE name = ?",
                           (model,)).fetchone()
        return None if row is None else dict(zip(self._MODEL_COLUMNS, row))

    def _create_model(self, conn, model, n_features, code, window_seconds):
        if self.random_state is None:
            seed = secrets.randbits(63)
        else:
            digest = hashlib.sha256(f"edgekm-model:{self.random_state}:{model}".encode()).digest()
            seed = int.from_bytes(digest[:8], "little") >> 1
        conn.execute("INSERT INTO models (name, n_features, dtype, window_seconds, created, seed) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (model, n_features, code, window_seconds, float(self.clock()), seed))
        return self._model_row(conn, model)

    # ------------------------------------------------------------ authentication
    def authenticate(self, method, path, body, headers):
        """Check a request's signature; return the device id.

        Raises :class:`AuthError` (missing or bad signature, stale timestamp,
        reused nonce, unknown device) or :class:`ForbiddenError` (revoked
        device).  The nonce is recorded durably (its own transaction) before
        this returns.
        """
        now = float(self.clock())
        return self._transaction(lambda conn: self._authenticate(conn, method, path, body,
                                                                 headers, now))

    def _authenticate(self, conn, method, path, body, headers, now):
        device_id = headers.get(auth.H_DEVICE) if hasattr(headers, "get") else None
        if not isinstance(device_id, str) or not device_id:
            raise AuthError(f"missing header {auth.H_DEVICE}")
        row = conn.execute("SELECT key_hex, revoked FROM devices WHERE device_id = ?",
                           (device_id,)).fetchone()
        if row is None:
            raise AuthError("unknown device")
        key_hex, revoked = row
        _, timestamp, nonce = auth.verify(key_hex, method, path, body, headers, now=now,
                                          max_skew=self.max_skew)
        # Only a correctly signed request learns that its device is revoked.
        if revoked is not None:
            raise ForbiddenError(f"device {device_id!r} is revoked")
        if now >= self._next_nonce_purge:
            conn.execute("DELETE FROM nonces WHERE timestamp < ?", (now - 2 * self.max_skew,))
            self._next_nonce_purge = now + 10.0
        try:
            conn.execute("INSERT INTO nonces (device_id, nonce, timestamp) VALUES (?, ?, ?)",
                         (device_id, nonce, timestamp))
        except sqlite3.IntegrityError:
            raise AuthError("nonce already used") from None
        return device_id

    # ------------------------------------------------------------ accepting frames
    def _decode(self, body):
        if isinstance(body, (bytes, bytearray, memoryview)) and len(body) > self.max_frame_bytes:
            raise FrameTooLargeError(f"frame of {len(body)} bytes exceeds max_frame_bytes="
                                     f"{self.max_frame_bytes}.")
        return decode_frame(body, max_frame_bytes=self.max_frame_bytes,
                            max_points=self.max_points, max_features=self.max_features)

    def accept(self, model, device_id, body):
        """Validate, deduplicate, merge and record one frame, in one committed transaction.

        Parameters
        ----------
        model : str
            The model the frame is sent to (the URL's); the frame must name it.
        device_id : str
            The authenticated device; the frame must name it.
        body : bytes
            The msgpack frame.

        Returns
        -------
        dict
            ``{"status": "accepted" | "duplicate", "frame_id": [model, device,
            boot, seq], "weight": w, "total_weight": model_total}``.

        Raises
        ------
        FrameError, FrameTooLargeError, ForbiddenError, UnknownModelError,
        ConflictError, DimensionError
            Nothing is merged or recorded when any of these is raised.
        """
        frame = self._decode(body)
        digest = hashlib.sha256(body).digest()
        now = float(self.clock())

        def work(conn):
            row = conn.execute("SELECT revoked FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is None:
                raise ForbiddenError(f"unknown device {device_id!r}")
            if row[0] is not None:
                raise ForbiddenError(f"device {device_id!r} is revoked")
            return self._accept(conn, model, device_id, frame, digest, now)
        return self._transaction(work)

    def accept_signed(self, uploads):
        """Authenticate and accept a batch of uploads in ONE transaction (group commit).

        Each upload has its own savepoints: a rejected request changes nothing
        (its nonce stays recorded once its signature is verified), and the
        others go on.  Every result is committed when this returns.

        Parameters
        ----------
        uploads : sequence of :class:`Upload`, :class:`Pull` or :meth:`prepare` results
            Uploads to ``.../telemetry`` and pulls are taken too, so that
            they share the group commit.

        Returns
        -------
        list
            One entry per upload, in order: the result dict of :meth:`accept`
            (:meth:`accept_telemetry` for a summary, ``{"version":
            CentroidVersion or None, "flags": ...}`` as :meth:`version_for`
            for a pull), or the :class:`~edgekm.exceptions.EdgekmError` that
            rejected it.
        """
        # CPU work that needs no database runs before the write lock is taken.
        uploads = [up if isinstance(up, Prepared) else self.prepare(up) for up in uploads]
        prepared = [(up.kind, up.decoded) for up in uploads]
        uploads = [up.upload for up in uploads]
        now = float(self.clock())

        def work(conn):
            results = []
            for up, item in zip(uploads, prepared):
                results.append(self._accept_one_signed(conn, up, item, now))
            return results
        try:
            return self._transaction(work)
        except EdgekmError:
            raise
        except Exception:
            if len(uploads) == 1:
                raise
        # An unexpected failure (a bug or a database error) aborted the whole
        # batch: retry each upload alone, so that only the culprit fails.
        results = []
        for up, item in zip(uploads, prepared):
            try:
                results.append(self._transaction(
                    lambda conn, up=up, item=item: self._accept_one_signed(conn, up, item, now)))
            except Exception as exc:
                results.append(exc)
        return results

    def prepare(self, upload):
        """Decode and digest an upload's frame, touching no database (any thread).

        :meth:`accept_signed` takes the result in place of the :class:`Upload`;
        a server calls this in the request's thread so that the writer does
        less.  A frame that fails to decode is reported only after the
        request is authenticated.  An upload whose path ends in
        ``/telemetry`` is decoded as a telemetry summary; a :class:`Pull`
        needs no decoding.
        """
        if isinstance(upload, Pull):
            return Prepared(Upload(upload.model, "GET", upload.path, b"", upload.headers),
                            upload.device, "pull")
        if upload.path.split("?", 1)[0].endswith("/telemetry"):
            try:
                decoded = (self._decode_telemetry(upload.body),
                           hashlib.sha256(upload.body).digest())
            except (TelemetryError, FrameTooLargeError) as exc:
                decoded = exc
            return Prepared(upload, decoded, "telemetry")
        try:
            decoded = (self._decode(upload.body), hashlib.sha256(upload.body).digest())
        except FrameError as exc:
            decoded = exc
        return Prepared(upload, decoded)

    def _accept_one_signed(self, conn, up, item, now):
        kind, item = item
        conn.execute("SAVEPOINT upload")
        try:
            device_id = self._authenticate(conn, up.method, up.path, up.body, up.headers, now)
        except EdgekmError as exc:
            conn.execute("ROLLBACK TO upload")
            conn.execute("RELEASE upload")
            return exc
        conn.execute("RELEASE upload")
        if isinstance(item, (FrameError, TelemetryError)):
            return item
        conn.execute("SAVEPOINT upload")
        try:
            if kind == "pull":
                if item is not None and item != device_id:
                    raise ForbiddenError(f"device {device_id!r} may not pull for {item!r:.80}")
                version, flags = self._resolve(conn, up.model, device_id, now)
                result = {"version": version, "flags": flags}
            elif kind == "telemetry":
                summary, digest = item
                result = self._accept_telemetry(conn, up.model, device_id, summary, digest, now)
            else:
                frame, digest = item
                result = self._accept(conn, up.model, device_id, frame, digest, now)
        except EdgekmError as exc:
            self._cache.clear()
            conn.execute("ROLLBACK TO upload")
            conn.execute("RELEASE upload")
            return exc
        except BaseException:
            self._cache.clear()
            conn.execute("ROLLBACK TO upload")
            conn.execute("RELEASE upload")
            raise
        conn.execute("RELEASE upload")
        return result

    def _accept(self, conn, model, device_id, frame, digest, now):
        """Inside a transaction: check, deduplicate, merge and record one decoded frame."""
        check_sender("frame", frame, model, device_id)
        row = self._model_row(conn, model)
        if row is None:
            if not self.auto_create_models:
                raise UnknownModelError(f"no model {model!r} (auto-creation is off)")
            row = self._create_model(conn, model, frame.n_features,
                                     frame.points.dtype.newbyteorder("<").str,
                                     self.window_seconds)
        if frame.n_features != row["n_features"]:
            raise DimensionError(f"the frame has {frame.n_features} features; model {model!r} "
                                 f"has {row['n_features']}")
        mid = row["model_id"]
        key = (mid, device_id, _signed64(frame.boot), frame.seq)
        frame_id = [model, device_id, frame.boot, frame.seq]
        seen = conn.execute("SELECT digest, weight, clipped FROM frames WHERE model_id = ? AND "
                            "device_id = ? AND boot = ? AND seq = ?", key).fetchone()
        if seen is not None:
            if bytes(seen[0]) != digest:
                raise ConflictError(f"frame {frame_id} was accepted before with a different "
                                    "body")
            result = {"status": "duplicate", "frame_id": frame_id, "weight": seen[1],
                      "total_weight": row["total_weight"]}
            if seen[2] > 0:
                result["clipped_weight"] = seen[2]
            return result
        if _in_ranges(conn, "frame", key):
            # collapsed by compaction: accepted once, body digest no longer kept
            return {"status": "duplicate", "frame_id": frame_id, "weight": None,
                    "total_weight": row["total_weight"], "collapsed": True}

        window = max(0, math.floor(now / row["window_seconds"]))
        weight = frame.total_weight
        weights = frame.weights
        clipped = 0.0
        cap, policy = self._cap(row)
        if cap is not None:
            used = conn.execute("SELECT weight FROM device_windows WHERE model_id = ? AND "
                                "device_id = ? AND window = ?",
                                (mid, device_id, window)).fetchone()
            used = 0.0 if used is None else used[0]
            if used + weight > cap:
                if policy == "reject":
                    if weight > cap:
                        raise FrameOverCapError(
                            f"frame {frame_id} has weight {weight!r}, over the cap of {cap!r} "
                            "per device and window")
                    end = (window + 1) * row["window_seconds"]
                    raise DeviceWeightCapError(
                        f"device {device_id!r} has merged {used!r} of its cap of {cap!r} in "
                        f"this window; frame {frame_id} (weight {weight!r}) fits after it ends",
                        retry_after=max(1, math.ceil(end - now)))
                room = max(0.0, cap - used)
                weights = frame.weights * (room / weight)
                if room <= 0 or not (weights > 0).all():
                    weights = None          # nothing left to merge
                    merged = 0.0
                else:
                    merged = seqsum(weights)
                clipped = weight - merged
                weight = merged
        counter = [row["n_reduces"]]

        def next_seed():
            counter[0] += 1
            return _reduce_seed(row["seed"], counter[0] - 1)

        trees = self._trees(conn, row)
        folded = row["folded_through"]
        if weights is not None:
            dtype = np.dtype(row["dtype"])
            points = frame.points.astype(dtype.newbyteorder("="), copy=False)
            bucket = Coreset(points, weights, level=frame.level)
            if len(bucket) > self.coreset_size:
                bucket = bucket.merge(size=self.coreset_size, random_state=next_seed())
            if folded is not None and window <= folded:
                # the clock stepped back into a folded window: it goes to both trees
                trees.push(conn, ALL_TIME, bucket, 0, next_seed)
            elif folded is None or folded < window - 1:
                self._fold(conn, trees, mid, folded, window, next_seed)
                folded = window - 1
            trees.push(conn, window, bucket, 0, next_seed)

        conn.execute("INSERT INTO frames (model_id, device_id, boot, seq, digest, weight, "
                     "n_points, span_first, span_last, level, created, received, window, "
                     "clipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     key + (digest, weight, len(frame.weights), frame.span[0], frame.span[1],
                            frame.level, frame.created, now, window, clipped))
        conn.execute("INSERT INTO device_windows VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT "
                     "(model_id, device_id, window) DO UPDATE SET weight = weight + ?, "
                     "n_frames = n_frames + 1, clipped = clipped + ?",
                     (mid, device_id, window, weight, clipped, weight, clipped))
        total = row["total_weight"] + weight
        conn.execute("UPDATE models SET total_weight = ?, n_frames = n_frames + 1, "
                     "n_reduces = ?, folded_through = ?, clipped_weight = clipped_weight + ? "
                     "WHERE model_id = ?",
                     (total, counter[0], folded, clipped, mid))
        trees.stamp = (row["n_frames"] + 1, counter[0])
        updated = conn.execute("UPDATE windows SET total_weight = total_weight + ?, "
                               "n_frames = n_frames + 1, last_received = ? "
                               "WHERE model_id = ? AND window = ?", (weight, now, mid, window))
        if updated.rowcount == 0:
            conn.execute("INSERT INTO windows VALUES (?, ?, ?, 1, ?, ?)",
                         (mid, window, weight, now, now))
            if self.retain_windows is not None:
                self._expire_windows(conn, mid, window)
        result = {"status": "accepted", "frame_id": frame_id, "weight": weight,
                  "total_weight": total}
        if clipped > 0:
            result["clipped_weight"] = clipped
        return result

    def _expire_windows(self, conn, mid, window):
        oldest = window - self.retain_windows + 1
        conn.execute("DELETE FROM buckets WHERE model_id = ? AND window >= 0 AND window < ?",
                     (mid, oldest))
        trees = self._cache.get(mid)
        if trees is not None:
            for old in [w for w in trees.windows if 0 <= w < oldest]:
                trees.forget(old)

    def _trees(self, conn, row):
        """The write-through cache of a model's trees, valid for the row's state."""
        stamp = (row["n_frames"], row["n_reduces"])
        trees = self._cache.get(row["model_id"])
        if trees is None or trees.stamp != stamp:
            trees = self._cache[row["model_id"]] = _Trees(row["model_id"], stamp, self)
        return trees

    def _fold(self, conn, trees, mid, folded, window, next_seed):
        """Add the trees of the windows in (folded, window) to the all-time tree."""
        lo = -1 if folded is None else folded
        for (old,) in conn.execute("SELECT window FROM windows WHERE model_id = ? AND "
                                   "window > ? AND window < ? ORDER BY window",
                                   (mid, lo, window)).fetchall():
            levels = trees.tree(conn, old)
            for level, buckets in enumerate(levels):
                for bucket in list(buckets):
                    trees.push(conn, ALL_TIME, bucket, level, next_seed)
            trees.forget(old)

    def _accept_telemetry(self, conn, model, device_id, s, digest, now):
        """A summary whose dedup row was collapsed by :meth:`compact` is a duplicate;
        anything else goes to the versions mixin."""
        check_sender("summary", s, model, device_id)
        row = self._model_row(conn, model)
        if row is not None:
            key = (row["model_id"], device_id, _signed64(s.boot), s.seq)
            if _in_ranges(conn, "telemetry", key):
                return {"status": "duplicate", "summary_id": [model, device_id, s.boot, s.seq],
                        "version": s.version, "drift_score": s.drift_score, "collapsed": True}
        return super()._accept_telemetry(conn, model, device_id, s, digest, now)

    # ------------------------------------------------------------ compaction
    def compact(self, now=None):
        """Bound the database: compact old windows and collapse old dedup rows, in ONE
        transaction.

        1. Per model, the windows older than the ``compact_windows`` most
           recent (counting from the window of ``now``) and already folded
           into the all-time tree are merged into the model's compacted tree
           (``window = -2``): their buckets are pushed into it level by level,
           as a fold does, so their weight is kept exactly; their ``windows``
           and ``device_windows`` rows are summed into one row at
           ``window = -2``.  Windowed queries (``aggregate(windows=N)``) see
           only the windows not compacted; the all-time aggregate is unchanged.
        2. The dedup rows of frames and telemetry summaries received more than
           ``dedup_seconds`` before ``now`` are collapsed, per (model, device,
           boot), into runs of consecutive ``seq`` (``seq_ranges``), except
           the most recent frame row of each (model, device).  A frame (or
           summary) whose ``seq`` is in a run is answered ``duplicate`` and
           never merged again; its body digest is gone, so a changed body
           there is a duplicate too, not a 409.  Forwarded anomalies older
           than ``dedup_seconds`` are deleted.

        Parameters
        ----------
        now : float or None
            The time to compact at (Unix seconds); None: ``clock()``.

        Returns
        -------
        dict
            ``windows_compacted``, ``buckets_before``, ``buckets_after``,
            ``frames_collapsed``, ``telemetry_collapsed``, ``ranges``,
            ``anomalies_deleted``.
        """
        now = float(self.clock()) if now is None else float(now)

        def work(conn):
            stats = {"windows_compacted": 0, "frames_collapsed": 0, "telemetry_collapsed": 0,
                     "anomalies_deleted": 0,
                     "buckets_before": conn.execute("SELECT count(*) FROM buckets").fetchone()[0]}
            if self.compact_windows is not None:
                names = [r[0] for r in conn.execute("SELECT name FROM models ORDER BY model_id")]
                for name in names:
                    stats["windows_compacted"] += self._compact_model(
                        conn, self._model_row(conn, name), now)
            if self.dedup_seconds is not None:
                cutoff = now - self.dedup_seconds
                stats["frames_collapsed"] = _collapse(conn, "frame", cutoff)
                stats["telemetry_collapsed"] = _collapse(conn, "telemetry", cutoff)
                stats["anomalies_deleted"] = conn.execute(
                    "DELETE FROM anomalies WHERE received < ?", (cutoff,)).rowcount
            stats["buckets_after"] = conn.execute("SELECT count(*) FROM buckets").fetchone()[0]
            stats["ranges"] = conn.execute("SELECT count(*) FROM seq_ranges").fetchone()[0]
            return stats
        return self._transaction(work)

    def _compact_model(self, conn, row, now):
        mid = row["model_id"]
        folded = row["folded_through"]
        if folded is None:
            return 0
        limit = min(folded, math.floor(now / row["window_seconds"]) - self.compact_windows)
        old = [r[0] for r in conn.execute(
            "SELECT window FROM windows WHERE model_id = ? AND window >= 0 AND window <= ? "
            "ORDER BY window", (mid, limit))]
        if not old:
            return 0
        counter = [row["n_reduces"]]

        def next_seed():
            counter[0] += 1
            return _reduce_seed(row["seed"], counter[0] - 1)
        trees = _Trees(mid, None, self)        # a private mirror; the cache is dropped below
        for window in old:
            for level, buckets in enumerate(trees.tree(conn, window)):
                for bucket in list(buckets):
                    trees.push(conn, COMPACTED, bucket, level, next_seed)
            trees.forget(window)
        marks = ",".join("?" * len(old))
        conn.execute(f"DELETE FROM buckets WHERE model_id = ? AND window IN ({marks})",
                     (mid, *old))
        conn.execute(
            "INSERT INTO windows SELECT model_id, ?, sum(total_weight), sum(n_frames), "
            f"min(first_received), max(last_received) FROM windows WHERE model_id = ? AND "
            f"window IN ({marks}) GROUP BY model_id ON CONFLICT (model_id, window) DO UPDATE SET "
            "total_weight = total_weight + excluded.total_weight, "
            "n_frames = n_frames + excluded.n_frames, "
            "first_received = min(first_received, excluded.first_received), "
            "last_received = max(last_received, excluded.last_received)",
            (COMPACTED, mid, *old))
        conn.execute(f"DELETE FROM windows WHERE model_id = ? AND window IN ({marks})",
                     (mid, *old))
        conn.execute(
            "INSERT INTO device_windows SELECT model_id, device_id, ?, sum(weight), "
            f"sum(n_frames), sum(clipped) FROM device_windows WHERE model_id = ? AND "
            f"window IN ({marks}) GROUP BY device_id ON CONFLICT (model_id, device_id, window) "
            "DO UPDATE SET weight = weight + excluded.weight, "
            "n_frames = n_frames + excluded.n_frames, clipped = clipped + excluded.clipped",
            (COMPACTED, mid, *old))
        conn.execute(f"DELETE FROM device_windows WHERE model_id = ? AND window IN ({marks})",
                     (mid, *old))
        through = max(old) if row["compacted_through"] is None \
            else max(old[-1], row["compacted_through"])
        conn.execute("UPDATE models SET n_reduces = ?, compacted_through = ? WHERE model_id = ?",
                     (counter[0], through, mid))
        self._cache.pop(mid, None)
        return len(old)

    def table_rows(self):
        """Row counts of the tables that grow with use (for metrics and capacity checks)."""
        conn = self._reader()
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("frames", "seq_ranges", "buckets", "windows", "device_windows",
                          "telemetry", "anomalies", "nonces", "version_events")}

    # ------------------------------------------------------------ queries
    def total_weight(self, model):
        """The exact sum of the weights of the accepted frames of ``model``."""
        row = self._reader().execute("SELECT total_weight FROM models WHERE name = ?",
                                     (model,)).fetchone()
        if row is None:
            raise UnknownModelError(f"no model {model!r}.")
        return float(row[0])

    def current_window(self, model):
        """The window id of ``clock()`` for ``model``."""
        row = self._model_row(self._reader(), model)
        if row is None:
            raise UnknownModelError(f"no model {model!r}.")
        return math.floor(float(self.clock()) / row["window_seconds"])

    def aggregate(self, model, windows=None):
        """The model's aggregate as one :class:`edgekm.Coreset`.

        Parameters
        ----------
        model : str
        windows : int or None, default=None
            None: the all-time tree.  N: the union of the trees of the last N
            windows (the current window of ``clock()`` and the N - 1 before).

        Returns
        -------
        edgekm.Coreset
            The union of the buckets (at most ``coreset_size`` points per
            bucket); its ``total_weight`` is the weight of the frames merged.

        Raises
        ------
        UnknownModelError
        edgekm.NotFittedError
            The selected windows hold no data.
        """
        if windows is not None:
            windows = _check_positive_int("windows", windows)
        with self._snapshot() as conn:
            row = self._model_row(conn, model)
            if row is None:
                raise UnknownModelError(f"no model {model!r}.")
            mid = row["model_id"]
            select = ("SELECT n_points, n_features, dtype, points, weights, coreset_level "
                      "FROM buckets WHERE model_id = ? ")
            if windows is None:
                folded = row["folded_through"]
                rows = conn.execute(
                    select + "AND (window = ? OR window > ?) ORDER BY window, level DESC, "
                    "position", (mid, ALL_TIME, -1 if folded is None else folded)).fetchall()
            else:
                current = math.floor(float(self.clock()) / row["window_seconds"])
                rows = conn.execute(    # never the all-time (-1) or compacted (-2) trees
                    select + "AND window >= 0 AND window > ? AND window <= ? "
                    "ORDER BY window, level DESC, position",
                    (mid, current - windows, current)).fetchall()
        if not rows:
            which = "all time" if windows is None else f"the last {windows} window(s)"
            raise NotFittedError(f"model {model!r} has no data for {which}.")
        parts = [_bucket_coreset(r) for r in rows]
        return parts[0].merge(*parts[1:]) if len(parts) > 1 else parts[0]

    def fit(self, model, n_clusters, windows=None, n_init=10, random_state=0):
        """Weighted k-means++ and Lloyd (best of ``n_init``) on :meth:`aggregate`.

        Returns
        -------
        centers : ndarray of shape (n_clusters, n_features)
        """
        centers, _, _ = self.aggregate(model, windows).fit_centers(
            n_clusters, n_init=n_init, random_state=random_state)
        return centers

    def frame_count(self, model=None):
        """Number of accepted frames (of one model, or of all)."""
        conn = self._reader()
        if model is None:
            return conn.execute("SELECT coalesce(sum(n_frames), 0) FROM models").fetchone()[0]
        row = self._model_row(conn, model)
        if row is None:
            raise UnknownModelError(f"no model {model!r}.")
        return row["n_frames"]

    def bucket_count(self, model, window=None):
        """Number of bucket rows of a model (of one tree when ``window`` is given;
        ``window=-1`` is the all-time tree)."""
        conn = self._reader()
        row = self._model_row(conn, model)
        if row is None:
            raise UnknownModelError(f"no model {model!r}.")
        if window is None:
            return conn.execute("SELECT count(*) FROM buckets WHERE model_id = ?",
                                (row["model_id"],)).fetchone()[0]
        return conn.execute("SELECT count(*) FROM buckets WHERE model_id = ? AND window = ?",
                            (row["model_id"], window)).fetchone()[0]

    def check(self):
        """Run SQLite's quick_check; return "ok" or the first problem found."""
        return self._reader().execute("PRAGMA quick_check").fetchone()[0]

    def ping(self):
        """A cheap read, for health checks; raises if the database is unreadable."""
        self._reader().execute("SELECT version FROM schema_version").fetchone()
        return True


class _Trees:
    """The coreset trees of one model, mirrored in memory (write-through).

    ``stamp`` is the model's (n_frames, n_reduces) that the mirror matches;
    the aggregator rebuilds the mirror when the row says otherwise (another
    process wrote) and drops it on any rollback.
    """

    MAX_WINDOWS = 3

    def __init__(self, mid, stamp, aggregator):
        self.mid = mid
        self.stamp = stamp
        self.coreset_size = aggregator.coreset_size
        self.merge_degree = aggregator.merge_degree
        self._levels = {}            # window -> list (level) of lists (position) of Coreset

    @property
    def windows(self):
        return list(self._levels)

    def forget(self, window):
        self._levels.pop(window, None)

    def tree(self, conn, window):
        levels = self._levels.get(window)
        if levels is None:
            levels = []
            for row in conn.execute(
                    "SELECT level, n_points, n_features, dtype, points, weights, coreset_level "
                    "FROM buckets WHERE model_id = ? AND window = ? ORDER BY level, position",
                    (self.mid, window)):
                while len(levels) <= row[0]:
                    levels.append([])
                levels[row[0]].append(_bucket_coreset(row[1:]))
            if len(self._levels) >= self.MAX_WINDOWS:
                for old in [w for w in self._levels if w != ALL_TIME][:-1]:
                    del self._levels[old]
            self._levels[window] = levels
        return levels

    def push(self, conn, window, bucket, level, next_seed):
        """Add a bucket at ``level`` of one tree and carry merges up, as in base r."""
        levels = self.tree(conn, window)
        while True:
            while len(levels) <= level:
                levels.append([])
            held = levels[level]
            if len(held) + 1 < self.merge_degree:
                _write_bucket(conn, self.mid, window, level, len(held), bucket)
                held.append(bucket)
                return
            bucket = Coreset.merge(*held, bucket, size=self.coreset_size,
                                   random_state=next_seed())
            conn.execute("DELETE FROM buckets WHERE model_id = ? AND window = ? AND level = ?",
                         (self.mid, window, level))
            held.clear()
            level += 1


def _in_ranges(conn, kind, key):
    """True when ``key`` (model_id, device_id, boot, seq) lies in a collapsed seq run."""
    mid, device_id, boot, seq = key
    hit = conn.execute("SELECT seq_hi FROM seq_ranges WHERE kind = ? AND model_id = ? AND "
                       "device_id = ? AND boot = ? AND seq_lo <= ? ORDER BY seq_lo DESC LIMIT 1",
                       (kind, mid, device_id, boot, seq)).fetchone()
    return hit is not None and hit[0] >= seq


def _collapse(conn, kind, cutoff):
    """Collapse the dedup rows of ``kind`` received before ``cutoff`` into seq runs."""
    table, weight = ("frames", "weight") if kind == "frame" else ("telemetry", "0.0")
    keep = set()
    if kind == "frame":     # the newest frame row of each (model, device) stays
        keep = set(conn.execute(
            "SELECT f.model_id, f.device_id, f.boot, f.seq FROM frames f JOIN "
            "(SELECT model_id, device_id, max(received) AS r FROM frames GROUP BY model_id, "
            "device_id) m ON f.model_id = m.model_id AND f.device_id = m.device_id AND "
            "f.received = m.r").fetchall())
    groups = {}
    for mid, device, boot, seq, w in conn.execute(
            f"SELECT model_id, device_id, boot, seq, {weight} FROM {table} WHERE received < ? "
            "ORDER BY model_id, device_id, boot, seq", (cutoff,)):
        if (mid, device, boot, seq) not in keep:
            groups.setdefault((mid, device, boot), []).append((seq, seq, 1, w))
    collapsed = 0
    for (mid, device, boot), items in groups.items():
        runs = [tuple(r) for r in conn.execute(
            "SELECT seq_lo, seq_hi, n_items, weight FROM seq_ranges WHERE kind = ? AND "
            "model_id = ? AND device_id = ? AND boot = ?", (kind, mid, device, boot))]
        merged = []
        for lo, hi, n, w in sorted(runs + items):
            if merged and lo == merged[-1][1] + 1:
                plo, _, pn, pw = merged[-1]
                merged[-1] = (plo, hi, pn + n, pw + w)
            else:
                merged.append((lo, hi, n, w))
        conn.execute("DELETE FROM seq_ranges WHERE kind = ? AND model_id = ? AND device_id = ? "
                     "AND boot = ?", (kind, mid, device, boot))
        conn.executemany("INSERT INTO seq_ranges VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [(kind, mid, device, boot, *m) for m in merged])
        conn.executemany(f"DELETE FROM {table} WHERE model_id = ? AND device_id = ? AND "
                         "boot = ? AND seq = ?", [(mid, device, boot, i[0]) for i in items])
        collapsed += len(items)
    return collapsed


def _write_bucket(conn, mid, window, level, position, bucket):
    points = bucket.points
    code = points.dtype.newbyteorder("<").str
    conn.execute(
        "INSERT INTO buckets (model_id, window, level, position, n_points, n_features, "
        "dtype, points, weights, total_weight, coreset_level) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (mid, window, level, position, len(bucket), bucket.n_features, code,
         points.astype(code, copy=False).tobytes(),
         bucket.weights.astype("<f8", copy=False).tobytes(), bucket.total_weight,
         bucket.level))


def _bucket_coreset(row):
    n, d, code, points, weights, level = row
    X = np.frombuffer(points, dtype=code).reshape(n, d)
    w = np.frombuffer(weights, dtype="<f8")
    return Coreset(X.astype(X.dtype.newbyteorder("="), copy=False), w, level=level)
