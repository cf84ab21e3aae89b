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

**Centroid versions**: publishing with stable labels (:mod:`.versions`), the
rollout (candidate, canary, active, retired; pins; rollback; device pulls:
:mod:`.rollout`), telemetry summaries and the drift report (:mod:`.telemetry`)
and the auto-publish policies (:mod:`.policies`).  Pulls and telemetry
uploads go through :meth:`Aggregator.accept_signed` like frames, so that
they share its group commit.

**Composition.** :class:`Aggregator` is a facade: each public method delegates
to one service, built in ``_compose`` with explicit references to what it
needs: :class:`~.database.Database` (connections and transactions),
:class:`~.registry.Registry` (devices, models, caps), :class:`~.trees.Trees`
(the coreset trees and the aggregate), :class:`~.ingest.Ingest`,
:class:`~.versions.Versions`, :class:`~.rollout.Rollout`,
:class:`~.telemetry.Telemetry`, :class:`~.policies.PublishPolicies` and
:class:`~.compaction.Compaction`.  None of them imports this module.

**Reproducibility.** Each model has a seed (drawn at creation, or derived
from ``random_state``) and a persisted counter of reduces; reduce number i
uses the seed ``sha256(seed, i)``, so replaying the same frames in the same
order into a fresh database gives the same trees, bit for bit.
"""

import time
from numbers import Integral, Real

from edgekm._validation import Interval, Options, validate_params
from edgekm.exceptions import (ConflictError, DeviceExistsError, DeviceWeightCapError,
                               DimensionError, ForbiddenError, FrameOverCapError,
                               FrameTooLargeError, RolloutError, UnavailableError,
                               UnknownDeviceError, UnknownModelError, UnknownVersionError,
                               WeightCapError)
from edgekm.solve import fit_centers

from edgekm.sync.wire import auth
from edgekm.sync.wire.auth import AuthError
from edgekm.sync.wire.frame import MAX_FEATURES, MAX_FRAME_BYTES, MAX_POINTS, FrameError
from edgekm.sync.wire.telemetry import TelemetryError

from .compaction import Compaction
from .database import DURABILITY, open_database
from .ingest import Ingest, Prepared, Pull, Upload
from .policies import PublishPolicies
from .registry import WEIGHT_CAP_POLICIES, Registry, check_cap, check_positive_int
from .gate import Gate
from .rollout import Rollout, abort_in, promote_in
from .status import metrics_snapshot, table_rows
from .telemetry import Telemetry, check_sender
from .trees import Trees
from .versions import Versions

__all__ = ["Aggregator", "Upload", "Pull", "AuthError", "FrameError", "ForbiddenError",
           "UnknownModelError", "UnknownDeviceError", "ConflictError", "DimensionError",
           "FrameTooLargeError", "DeviceExistsError", "UnavailableError", "TelemetryError",
           "RolloutError", "UnknownVersionError", "WeightCapError", "FrameOverCapError",
           "DeviceWeightCapError", "WEIGHT_CAP_POLICIES"]


class Aggregator:
    """Merge coreset frames from many devices into bounded per-model aggregates.

    Parameters
    ----------
    db_path : str or path-like
        The SQLite database (created, with its schema, if missing), or a PostgreSQL URL
        ``postgresql://user@host:port/dbname`` (the ``postgres`` extra; the schema is
        created or migrated in it): several Aggregators, in several processes or hosts,
        may share one PostgreSQL database (see ``docs/operations.md``).
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
        opts = validate_params({
            "coreset_size": coreset_size, "merge_degree": merge_degree,
            "window_seconds": window_seconds, "durability": durability,
            "retain_windows": retain_windows, "max_device_weight": max_device_weight,
            "weight_cap_policy": weight_cap_policy, "compact_windows": compact_windows,
            "publish_trim": publish_trim,
            "max_frame_bytes": max_frame_bytes, "max_points": max_points,
            "max_features": max_features, "max_skew": max_skew,
            "checkpoint_interval": checkpoint_interval}, {
            "coreset_size": Interval(Integral, 1, None),
            "merge_degree": Interval(Integral, 2, None),
            "durability": Options(sorted(DURABILITY)),
            "weight_cap_policy": Options(WEIGHT_CAP_POLICIES)})
        validate_params({"dedup_seconds": dedup_seconds}, {
            "dedup_seconds": [None, Interval(Real, 2 * opts["max_skew"], None, finite=True)]})
        self.coreset_size = opts["coreset_size"]
        self.merge_degree = opts["merge_degree"]
        self.max_device_weight = check_cap(max_device_weight)
        self.weight_cap_policy = weight_cap_policy
        self.compact_windows = opts["compact_windows"]
        self.dedup_seconds = None if dedup_seconds is None else float(dedup_seconds)
        self.publish_trim = float(publish_trim)
        self.window_seconds = float(window_seconds)
        self.auto_create_models = bool(auto_create_models)
        self.max_frame_bytes = opts["max_frame_bytes"]
        self.max_points = opts["max_points"]
        self.max_features = opts["max_features"]
        self.max_skew = opts["max_skew"]
        self.durability = durability
        self.retain_windows = opts["retain_windows"]
        self.clock = clock
        self.random_state = random_state
        self.db_path = str(db_path)
        self.checkpoint_interval = checkpoint_interval
        self._compose(durability, checkpoint_interval)

    def _compose(self, durability, checkpoint_interval):
        """Build the services, each with explicit references to what it needs."""
        clock = self.clock
        self.db = open_database(self.db_path, durability=durability,
                           checkpoint_interval=checkpoint_interval)
        self.registry = Registry(self.db, clock=clock, max_features=self.max_features,
                                 window_seconds=self.window_seconds,
                                 random_state=self.random_state,
                                 max_device_weight=self.max_device_weight,
                                 weight_cap_policy=self.weight_cap_policy)
        self.trees = Trees(self.db, coreset_size=self.coreset_size,
                           merge_degree=self.merge_degree, clock=clock)
        self.versions_service = Versions(self.db, self.trees, clock=clock,
                                         publish_trim=self.publish_trim)
        self.rollout = Rollout(self.db, self.versions_service, clock=clock)
        self.gate = Gate(self.versions_service, abort=abort_in, promote=promote_in)
        self.telemetry = Telemetry(self.db, self.versions_service, clock=clock, gate=self.gate)
        self.policies = PublishPolicies(self.db, self.versions_service, clock=clock)
        self.ingest = Ingest(self.db, self.registry, self.trees, self.telemetry, self.rollout,
                             clock=clock, coreset_size=self.coreset_size,
                             window_seconds=self.window_seconds,
                             auto_create_models=self.auto_create_models,
                             retain_windows=self.retain_windows,
                             max_frame_bytes=self.max_frame_bytes, max_points=self.max_points,
                             max_features=self.max_features, max_skew=self.max_skew)
        self.compaction = Compaction(self.db, self.trees, clock=clock,
                                     compact_windows=self.compact_windows,
                                     dedup_seconds=self.dedup_seconds)

    # ------------------------------------------------------------ devices and models
    def add_device(self, device_id):
        """Register a device; return its new secret key (hex, 256 bits).

        Raises :class:`DeviceExistsError` if the id is taken (revoked ids stay
        taken, for audit) and :class:`FrameError` for an invalid id.
        """
        return self.registry.add_device(device_id)

    def rotate_device_key(self, device_id):
        """Give a registered device a new secret key (hex); the old key stops working now.

        Raises :class:`UnknownDeviceError` for an unknown id and
        :class:`DeviceExistsError` for a revoked one.
        """
        return self.registry.rotate_device_key(device_id)

    def revoke_device(self, device_id):
        """Revoke a device: its requests are answered 403 from now on.

        The device stays in the table, with its revocation time.  Revoking a
        revoked device does nothing; an unknown id raises
        :class:`UnknownDeviceError`.
        """
        return self.registry.revoke_device(device_id)

    def list_devices(self):
        """Every device, as dicts with ``device_id``, ``created``, ``revoked`` (time or
        None), ``frames`` and ``last_received`` (keys are never listed)."""
        return self.registry.list_devices()

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
        return self.registry.add_model(model, n_features, dtype=dtype, window_seconds=window_seconds, max_device_weight=max_device_weight, weight_cap_policy=weight_cap_policy)

    def list_models(self):
        """Every model, as dicts (see :meth:`model_info`, without the windows)."""
        return self.registry.list_models()

    def model_info(self, model, *, with_windows=True):
        """A dict: model, n_features, dtype, window_seconds, total_weight, frames,
        devices, buckets and (``with_windows``) the windows with their weights."""
        return self.registry.model_info(model, with_windows=with_windows)

    def total_weight(self, model):
        """The exact sum of the weights of the accepted frames of ``model``."""
        return self.registry.total_weight(model)

    def current_window(self, model):
        """The window id of ``clock()`` for ``model``."""
        return self.registry.current_window(model)

    def frame_count(self, model=None):
        """Number of accepted frames (of one model, or of all)."""
        return self.registry.frame_count(model)

    def bucket_count(self, model, window=None):
        """Number of bucket rows of a model (of one tree when ``window`` is given;
        ``window=-1`` is the all-time tree)."""
        return self.registry.bucket_count(model, window)

    # ------------------------------------------------------------ ingest
    def authenticate(self, method, path, body, headers):
        """Check a request's signature; return the device id.

        Raises :class:`AuthError` (missing or bad signature, stale timestamp,
        reused nonce, unknown device) or :class:`ForbiddenError` (revoked
        device).  The nonce is recorded durably (its own transaction) before
        this returns.
        """
        return self.ingest.authenticate(method, path, body, headers)

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
        return self.ingest.accept(model, device_id, body)

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
        return self.ingest.accept_signed(uploads)

    def prepare(self, upload):
        """Decode and digest an upload's frame, touching no database (any thread).

        :meth:`accept_signed` takes the result in place of the :class:`Upload`;
        a server calls this in the request's thread so that the writer does
        less.  A frame that fails to decode is reported only after the
        request is authenticated.  An upload whose path ends in
        ``/telemetry`` is decoded as a telemetry summary; a :class:`Pull`
        needs no decoding.
        """
        return self.ingest.prepare(upload)

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
        return self.compaction.compact(now)

    # ------------------------------------------------------------ the aggregate
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
            windows = check_positive_int("windows", windows)
        return self.trees.aggregate(model, windows)

    # ------------------------------------------------------------ versions
    def publish(self, model, n_clusters, windows=None, *, n_init=10, random_state=0,
                actor="api", reason=None, trim=None):
        """Fit centres on the aggregate and store them as a new immutable version.

        Parameters
        ----------
        model : str
        n_clusters : int
        windows : int or None, default=None
            Fit on the last N time windows; None: all time.
        n_init, random_state
            Passed to :meth:`edgekm.Coreset.fit_centers`.
        actor : {"api", "cli", "http", "policy"}
            Recorded in the event log.
        reason : str or None
            Recorded in the event log (the auto-publish trigger).
        trim : float in [0, 0.5) or None, default=None
            Robust publication: fit with :func:`edgekm.solve.trimmed_kmeans`, which leaves
            out up to this fraction of the aggregate's weight, farthest from
            the centres, so that a far-outlier cluster of at most that weight
            cannot capture a centre.  0: the plain solver.  None: the
            aggregator's ``publish_trim`` (0 unless set).

        Returns
        -------
        int
            The new version id (1, 2, ... per model).  The first version of a
            model, or any version published while no version is active,
            becomes active at once; the others start as ``candidate``.

        Raises
        ------
        UnknownModelError, edgekm.NotFittedError
            No model, or no data in the selected windows.
        ValueError
            Fewer aggregate points than ``n_clusters``.
        """
        return self.versions_service.publish(model, n_clusters, windows, n_init=n_init, random_state=random_state, actor=actor, reason=reason, trim=trim)

    def publish_centers(self, model, centers, coreset=None, *, actor="api", reason=None):
        """Store centres fitted elsewhere as a new immutable version.

        For centres that were not fitted on the aggregate, for example by an
        offline fit on a cluster (:func:`edgekm.dask.fit_coreset`).  The
        version is built exactly as :meth:`publish` builds one (stable labels
        against the parent, status, rollout), with the centres as given.

        Parameters
        ----------
        model : str
            An existing model.
        centers : array-like of shape (n_clusters, n_features)
            Finite centres; stored in the model's dtype.
        coreset : edgekm.Coreset or None, default=None
            The data the centres were fitted on: the cluster weights, anomaly
            quantiles, training weight and cost of the version are computed on
            it.  None uses the model's all-time aggregate.
        actor : {"api", "cli", "http", "policy"}
        reason : str or None
            Recorded in the event log.

        Returns
        -------
        int
            The new version id (status as in :meth:`publish`).

        Raises
        ------
        UnknownModelError, edgekm.NotFittedError
            No model, or (``coreset=None``) no data in the aggregate.
        ValueError
            Centres that are not a finite 2-D array with the model's
            n_features, or a coreset with another n_features.
        """
        return self.versions_service.publish_centers(model, centers, coreset, actor=actor, reason=reason)

    def versions(self, model):
        """Every version of ``model``, oldest first, as dicts: version, status, created,
        parent, k, d, training_weight, cost, shift, windows, model_weight, digest
        (and ``canary_percent`` for the canary)."""
        return self.versions_service.versions(model)

    def version(self, model, version):
        """The stored :class:`~edgekm.sync.wire.version.CentroidVersion` (digest checked)."""
        return self.versions_service.version(model, version)

    def version_body(self, model, version):
        """``(body, digest)``: the exact bytes devices download for this version."""
        return self.versions_service.version_body(model, version)

    def version_events(self, model, limit=None):
        """The event log of ``model``, oldest first: dicts with event, version, at,
        actor, action, old_status, new_status and detail."""
        return self.versions_service.version_events(model, limit)

    # ------------------------------------------------------------ rollout
    def rollout_state(self, model):
        """``{"active": v|None, "canary": v|None, "canary_percent": p, "history": [...],
        "pins": {device: v}}``."""
        return self.rollout.rollout_state(model)

    def canary(self, model, version, percent, *, actor="api", auto_abort=False,
               auto_promote_after=None):
        """Send ``version`` to ``percent`` % of the devices (the cohort hash).

        A candidate, a retired version, or the current canary (to change its
        percentage) may be canaried; there is one canary at a time.  With
        ``auto_abort`` the aggregator withdraws the canary itself when its cohort
        behaves worse than the control cohort (the active version's devices) by the
        model's gate thresholds; with ``auto_promote_after = N`` it promotes a canary
        whose cohort streamed N points with no regression
        (:mod:`edgekm.sync.cloud.gate`).  Raises :class:`RolloutError`,
        :class:`UnknownVersionError` or ``ValueError``.
        """
        return self.rollout.canary(model, version, percent, actor=actor, auto_abort=auto_abort,
                                   auto_promote_after=auto_promote_after)

    def set_canary_policy(self, model, *, min_points=None, tail_margin=None,
                          cost_margin=None, z=None):
        """Set the model's canary gate thresholds (None: the default,
        :data:`edgekm.sync.cloud.gate.DEFAULTS`); returns them."""
        return self.gate.set_policy(self.db, model, min_points=min_points,
                                    tail_margin=tail_margin, cost_margin=cost_margin, z=z)

    def promote(self, model, version, *, actor="api"):
        """Make ``version`` active: the previous active is retired, the canary cleared.

        A canary other than ``version`` goes back to ``candidate``.  Returns
        ``{"active": version, "retired": previous or None}``.
        """
        return self.rollout.promote(model, version, actor=actor)

    def abort_canary(self, model, *, actor="api"):
        """Withdraw the canary: it goes back to ``candidate`` and the active version stays.

        Devices in the cohort that were served the canary get the active
        version at their next pull, with the ``x-edgekm-rollback: 1`` header
        (it is older), so they accept it.  Returns ``{"aborted": canary,
        "active": active or None}``; raises :class:`RolloutError` when there is
        no canary.
        """
        return self.rollout.abort_canary(model, actor=actor)

    def rollback(self, model, *, actor="api"):
        """Atomically retire the active version and make the previous active one active.

        Any canary goes back to ``candidate``.  Devices that were served a
        newer version get the ``x-edgekm-rollback: 1`` header at their next
        pull.  Returns ``{"active": previous, "retired": current}``; raises
        :class:`RolloutError` when there is no earlier active version.
        """
        return self.rollout.rollback(model, actor=actor)

    def pin(self, model, device_id, version, *, actor="api"):
        """Pin a device to a version (any status), or unpin it with ``version=None``.

        A pinned device is served its pin whatever the rollout, with the
        header ``x-edgekm-pinned: 1``.  Returns ``{"device": ..., "version": v|None,
        "previous": v|None}``.
        """
        return self.rollout.pin(model, device_id, version, actor=actor)

    def version_for(self, model, device_id):
        """The version ``device_id`` should use, and how it was chosen.

        Its pin if pinned; else the canary when the device is in the canary
        cohort; else the active version.  Records the version as served to
        the device (one transaction, so never half a rollback).

        Returns
        -------
        version : CentroidVersion or None
        flags : dict
            ``pinned``, ``canary``, ``rollback`` (the version is older than
            the last one served to this device), ``digest`` and ``body``
            (the exact bytes to send; None without a version).
        """
        return self.rollout.version_for(model, device_id)

    # ------------------------------------------------------------ telemetry
    def accept_telemetry(self, model, device_id, body):
        """Validate, deduplicate and record one telemetry summary (one transaction).

        Dedup is on ``(model, device, boot, seq)`` with the body's sha256, as
        for frames.  Returns ``{"status": "accepted" | "duplicate",
        "summary_id": [...], "version": v, "drift_score": s}``.  Raises
        :class:`~edgekm.sync.wire.telemetry.TelemetryError` (400),
        ``ForbiddenError``, ``UnknownModelError``, ``DimensionError``,
        ``ConflictError``.
        """
        return self.telemetry.accept_telemetry(model, device_id, body)

    def anomalies(self, model, limit=100):
        """The most recent forwarded anomalies (newest first), as dicts with device,
        version, received, points (list of lists), labels and scores."""
        return self.telemetry.anomalies(model, limit)

    def drift(self, model):
        """The aggregator's drift report for ``model``.

        Returns
        -------
        dict
            - ``versions``: per version, oldest first: status, cost, training
              weight, ``shift`` (largest centre movement against its parent),
              ``shares`` (cluster weight shares), ``share_change`` (largest
              absolute change of a label's share against the parent),
              ``empty_clusters`` (labels with no training weight), new and
              vanished clusters, and ``observed_shares`` (the cluster shares
              devices reported while using it) with ``observed_share_change``
              (largest gap to the training shares), and ``pooled_drift``: the
              calibrated drift test (:mod:`edgekm.drift`) on every device's v2
              summaries pooled for the version (None before the first);
            - ``canary_gate``: the gate's ``thresholds`` (the model's or the
              defaults), and for a gated canary its settings and ``figures``
              (:mod:`edgekm.sync.cloud.gate`);
            - ``devices``: from each device's latest summary: ``reporting``,
              ``mean_drift_score``, ``max_drift_score``, ``mean_psi``,
              ``max_psi``, ``over_threshold`` (devices whose score reaches
              ``threshold``) and ``top`` (the ten highest scores);
            - ``telemetry``: summaries, points, raw and forwarded bytes,
              ``compression_ratio`` (forwarded / raw) and anomalies;
            - ``active``, ``canary``, ``canary_percent``.
        """
        return self.telemetry.drift(model)

    # ------------------------------------------------------------ publish policies
    def set_publish_policy(self, model, every_seconds=None, every_weight=None,
                           drift_threshold=None, *, n_clusters=None, windows=None, n_init=10,
                           random_state=0, actor="api"):
        """Publish automatically: every ``every_seconds``, after ``every_weight`` new
        merged weight, or when the devices' mean drift score reaches ``drift_threshold``.

        Any trigger fires only when weight was merged since the last version
        (refitting the same data is pointless).  All three None removes the
        policy.  ``n_clusters`` defaults to the k of the latest version.  The
        policy is evaluated by :meth:`run_publish_policies` (the server calls
        it on a timer).  Returns the policy as a dict, or None when removed.
        """
        return self.policies.set_publish_policy(model, every_seconds, every_weight, drift_threshold, n_clusters=n_clusters, windows=windows, n_init=n_init, random_state=random_state, actor=actor)

    def publish_policy(self, model):
        """The model's auto-publish policy as a dict, or None."""
        return self.policies.publish_policy(model)

    def due_publications(self, now=None):
        """The models whose policy fires now: a list of ``(model, reason, policy)``.

        A cheap read (one query per policy), safe to call after every batch.
        """
        return self.policies.due_publications(now)

    def run_publish_policies(self, now=None):
        """Publish every model whose policy fires; returns ``[(model, version, reason)]``.

        A model whose data cannot be fitted (too few points) is skipped and logged.
        """
        return self.policies.run_publish_policies(now)

    def fit(self, model, n_clusters, windows=None, n_init=10, random_state=0):
        """Weighted k-means++ and Lloyd (best of ``n_init``) on :meth:`aggregate`.

        Returns
        -------
        centers : ndarray of shape (n_clusters, n_features)
        """
        centers, _, _ = fit_centers(self.aggregate(model, windows), n_clusters, n_init=n_init,
                                    random_state=random_state)
        return centers

    # ------------------------------------------------------------ state
    def metrics_snapshot(self):
        """State for ``/metrics``, read in one snapshot: per model, the merged weight,
        frames, versions per status, the active version, devices with frames, the
        devices' drift and the telemetry totals."""
        return metrics_snapshot(self.db)

    def table_rows(self):
        """Row counts of the tables that grow with use (for metrics and capacity checks)."""
        return table_rows(self.db.reader())

    def check(self):
        """Check the database (SQLite's quick_check); return "ok" or the first problem found."""
        return self.db.check()

    def ping(self):
        """A cheap read, for health checks; raises if the database is unreadable."""
        self.db.reader().execute("SELECT version FROM schema_version").fetchone()
        return True

    # ------------------------------------------------------------ lifecycle
    def close(self):
        """Close every connection; further calls raise :class:`UnavailableError`."""
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def _writer(self):
        return self.db.writer

    @property
    def _lock(self):
        return self.db.lock
