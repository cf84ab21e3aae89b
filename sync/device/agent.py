"""The device agent: local streaming k-means, a sync window and a durable outbox.

Standard library, numpy, msgpack and edgekm only: it runs on the device.
HTTP goes through the device's one client (:mod:`edgekm.sync.device.client`); the
protocol is in ``sync/PROTOCOL.md``.

Weight accounting.  Every point the agent ingests is, at every moment, in
exactly one of four places: the sync window (memory), the outbox's pending
frames, the aggregator (acknowledged), or the outbox's ``rejected`` table.
:meth:`DeviceAgent.stats` reports the four weights; they add up to the
weight ingested exactly (integer weights in float64).  Across a clean
restart (:meth:`DeviceAgent.close`) nothing is lost; after a crash the
window's points, which were only in memory, are lost together with their
count, so the durable equation still holds.  Call :meth:`DeviceAgent.flush`
(or :meth:`DeviceAgent.sync`) more often to lose less.
"""

import numbers
import os
import random
import time

import numpy as np

from edgekm.streaming import StreamingKMeans
from edgekm._validation import (Interval, check_array, check_coreset_size, resolve_seed,
                                validate_params)
from edgekm.exceptions import AgentLockedError, EdgekmError

from edgekm.sync.wire import frame as _frame
from edgekm.sync.wire.version import VersionError, decode_version

# Assignment, the edge filter and the telemetry codec load with the first centroid version
# (in _switch): an agent that has none yet, or only ingests, never imports them.

from .client import (REFUSALS, RETRYABLE_4XX, Outcome, SignedClient, by_status, check_key,
                     check_server_url)
from .outbox import Outbox, _fsync_dir

try:
    import fcntl
except ImportError:         # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None

LOCK_FILE = "agent.lock"
#: the centroid version in use and the one before it (encoded documents, digest inside)
VERSION_FILE = "version.current"
PREVIOUS_VERSION_FILE = "version.previous"
_VERSION_TMP = "version.tmp"

#: answers that are final for this frame only: it goes to the ``rejected`` table and
#: the next frames are uploaded
FRAME_REFUSALS = REFUSALS
#: 4xx answers that are retried (PROTOCOL.md section 6); every other 4xx, including
#: 401 (unless the clock was off), 403 and 404, concerns the device or the model: the
#: frame is kept aside in ``rejected`` and the sync stops, since the next frames
#: would get the same answer.  (Both live in :mod:`edgekm.sync.device.client`.)
RETRYABLE_4XX = RETRYABLE_4XX

#: algorithm of the sync window: one coreset per sync, so a cache cannot help
WINDOW_ALGORITHM = "ct"
#: a frame carries at most the wire's point limit
_RULES = {"coreset_size": Interval(numbers.Integral, 1, _frame.MAX_POINTS)}

def summarize(window):
    """:func:`edgekm.sync.wire.telemetry.summarize`, imported at the first call."""
    from edgekm.sync.wire.telemetry import summarize as _summarize

    return _summarize(window)


def encode_telemetry(summary):
    """:func:`edgekm.sync.wire.telemetry.encode_telemetry`, imported at the first call."""
    from edgekm.sync.wire.telemetry import encode_telemetry as _encode

    return _encode(summary)


def _log():
    """This module's logger (logging loads at the first warning, not at import)."""
    import logging

    return logging.getLogger(__name__)


#: the verdict on one HTTP attempt (the client's; the old private name stays)
_Outcome = Outcome


def _classify_telemetry(answer):
    """The verdict on one telemetry upload: acknowledged, refused (400/409/413/422: the
    summary is dropped), or kept for later (anything else, retried when retryable)."""
    if answer.status is None:
        return Outcome("retry", error=f"telemetry: {answer.error}"[:300], answer=answer)
    body = answer.json()
    if 200 <= answer.status < 300 and body.get("status") in ("accepted", "duplicate"):
        return Outcome("ack", status=answer.status, answer=answer)
    error = f"telemetry: HTTP {answer.status} {body.get('reason', '')}".strip()
    if 200 <= answer.status < 300:
        return Outcome("retry", status=answer.status, error=error, answer=answer)
    return by_status(answer, error)


def server_urls(server_url):
    """The aggregator URLs of ``server_url``: one URL, or a sequence of replicas' URLs."""
    return [server_url] if isinstance(server_url, str) else list(server_url)


#: statuses after which the agent fails over to the next replica (no answer: None)
FAILOVER_STATUSES = frozenset({None, 502, 503, 504})


def _check_arguments(server_url, model, device_id, key, n_clusters, coreset_size, algorithm,
                     timeout, max_retries, backoff_base, backoff_max, dtype, random_state):
    """DeviceAgent's argument checks (ValueError), in the order the constructor runs them;
    returns ``n_clusters``, ``coreset_size`` and ``max_retries`` as ints."""
    urls = server_urls(server_url)
    if not urls:
        raise ValueError("server_url: give at least one URL")
    for url in urls:
        check_server_url(url)
    _frame.check_id(model, "model")
    _frame.check_id(device_id, "device_id")
    check_key(key)
    args = validate_params({"n_clusters": n_clusters, "algorithm": algorithm,
                            "coreset_size": coreset_size, "dtype": dtype,
                            "random_state": random_state}, _RULES)
    check_coreset_size(n_clusters, coreset_size)
    args.update(validate_params({"timeout": timeout, "backoff_base": backoff_base,
                                 "backoff_max": backoff_max, "max_retries": max_retries}))
    return args["n_clusters"], args["coreset_size"], args["max_retries"]


class DeviceAgent:
    """Streams points into a local model and ships coreset frames to an aggregator.

    Each point goes into :attr:`model`, the device's own
    :class:`edgekm.StreamingKMeans`, and into a *sync window*, a second
    fixed-memory coreset tree that :meth:`sync` drains into one frame of at
    most ``coreset_size`` points and then replaces by an empty one: memory
    does not grow with the number of points between syncs.  Frames go to a
    durable outbox in ``state_dir`` (see :mod:`edgekm.sync.device.outbox`) and are
    uploaded in order, deleted only when the aggregator acknowledges them.

    Parameters
    ----------
    server_url : str or sequence of str
        Base URL of the aggregator, e.g. ``"http://127.0.0.1:8750"``, or the URLs of
        several replicas on one database: after no answer or a 502/503/504 the agent
        moves on to the next one (:attr:`current_server`), keeping its outbox and its
        frame ids, so that a frame merged by the first is answered ``duplicate``.
    model : str
        Model name (1-64 characters of ``A-Za-z0-9._-``).
    device_id : str
        This device's id, registered on the aggregator.
    key : str
        The device's secret key, hex (``edgekm devices add``).
    state_dir : str or path
        Directory of the outbox and the lock; survives restarts.  One agent
        at a time per directory (:class:`AgentLockedError` otherwise).
    n_clusters : int, default=8
        Clusters of the local model.
    coreset_size : int, default=200
        m: points per frame, bucket size of the window and of the local model.
    algorithm : {"ct", "cc", "rcc", "onlinecc", "sequential"}, default="cc"
        Algorithm of the local model.  The window is always a coreset tree.
    max_pending : int, default=64
        Bound on queued frames (>= 2); beyond it, frames are merged.
    timeout : float, default=10.0
        Seconds for each HTTP request.
    max_retries : int, default=5
        Retries of one frame within one :meth:`sync` after a retryable failure.
    backoff_base, backoff_max : float, default=0.5, 30.0
        Before retry ``a`` (0-based) the agent sleeps a uniform random time in
        ``[0, min(backoff_max, backoff_base * 2**a)]`` (exponential backoff
        with full jitter), or the server's ``Retry-After`` if longer; a
        ``Retry-After`` above ``backoff_max`` ends the call instead.  Answers
        400, 409, 413 and 422 move the frame to ``rejected`` and the upload
        goes on; 408, 429, 5xx, network errors and a 401 caused by clock skew
        are retried; any other 4xx (401, 403, 404, ...) moves the frame to
        ``rejected`` and ends the call.
    dtype : {numpy.float32, numpy.float64}, default=numpy.float32
        Storage and wire type of the points.
    random_state : None, int or numpy Generator, default=None
        Seeds the local model, the windows and the outbox merges.
    sleep : callable, default=time.sleep
        Used for the backoff (inject it in tests).
    rng : random.Random-like, default=None
        Source of the jitter (``.random()``); a ``random.Random`` seeded from
        ``random_state`` when None.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from edgekm.sync import DeviceAgent
    >>> state = tempfile.mkdtemp()
    >>> with DeviceAgent("http://127.0.0.1:9", "demo", "dev-1", "00" * 32, state,
    ...                  n_clusters=2, coreset_size=20, max_retries=0) as agent:
    ...     agent.ingest(np.random.default_rng(0).random((100, 3)))
    ...     report = agent.sync()           # nothing listens on port 9
    >>> report["uploaded"], report["pending"], report["pending_weight"]
    (0, 1, 100.0)
    """

    def __init__(self, server_url, model, device_id, key, state_dir, n_clusters=8, *,
                 coreset_size=200, algorithm="cc", max_pending=64, timeout=10.0,
                 max_retries=5, backoff_base=0.5, backoff_max=30.0, dtype=np.float32,
                 random_state=None, sleep=time.sleep, rng=None, anomaly_threshold=1.0,
                 telemetry_window_seconds=60.0, max_anomalies=32, clock=time.time):
        n_clusters, coreset_size, max_retries = _check_arguments(
            server_url, model, device_id, key, n_clusters, coreset_size, algorithm,
            timeout, max_retries, backoff_base, backoff_max, dtype, random_state)
        self.server_url = server_url
        self.model_name = model
        self.device_id = device_id
        self._key = key
        self.state_dir = os.fspath(state_dir)
        self.n_clusters = n_clusters
        self.coreset_size = coreset_size
        self.algorithm = algorithm
        self.max_pending = max_pending
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.dtype = np.dtype(dtype)
        self._dtype_code = self.dtype.newbyteorder("<").str
        self._sleep = sleep
        self._rng = (random_state if isinstance(random_state, np.random.Generator)
                     else np.random.default_rng(resolve_seed(random_state)))
        self._jitter = rng if rng is not None else random.Random(int(self._rng.integers(2**62)))
        self._clients = [SignedClient(
            url, device_id=device_id, key=key, timeout=timeout, max_retries=max_retries,
            backoff_base=backoff_base, backoff_max=backoff_max, sleep=sleep, rng=self._jitter)
            for url in server_urls(server_url)]
        self._current = 0                 # the replica in use (an index into _clients)
        self._frames_path = f"/v1/models/{model}/frames"
        self._centroids_path = f"/v1/models/{model}/centroids?device={device_id}"
        self._telemetry_path = f"/v1/models/{model}/telemetry"
        self.anomaly_threshold = anomaly_threshold
        self.telemetry_window_seconds = telemetry_window_seconds
        self.max_anomalies = max_anomalies
        self._clock = clock
        self.assigner = None              # the Assigner of the version in use, or None
        self.filter = None                # its EdgeFilter
        self.last_pull = None             # what the last pull() did (a dict)
        self._telemetry_unencodable = 0   # summaries dropped: they could not be encoded
        self._unscored_before = 0         # unscored points of filters no longer in use
        self._version_doc = None
        self._window = None
        self._window_weight = 0.0
        self._window_first = None
        self._outbox = None
        self._lock_fd = None
        os.makedirs(self.state_dir, exist_ok=True)
        self._lock()
        try:
            self._outbox = Outbox(self.state_dir, device_id=device_id, model=model,
                                  coreset_size=coreset_size, max_pending=max_pending,
                                  random_state=self._rng)
            self._next_point = self._outbox.next_point
            self._n_features, stored = self._outbox.layout()
            if stored is not None and stored != self._dtype_code:
                raise ValueError(f"{self.state_dir} holds {stored} frames; the agent's dtype "
                                 f"is {self._dtype_code}.")
            self.model = self._new_model()
            self._restore_model()
            self._load_stored_version()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ lifecycle
    def _lock(self):
        if fcntl is None:           # pragma: no cover
            return
        fd = os.open(os.path.join(self.state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AgentLockedError(
                f"another DeviceAgent uses {self.state_dir}; one agent per state_dir.") from None
        self._lock_fd = fd

    def close(self):
        """Move the window into the outbox (no network), save the model summary, release.

        Nothing ingested is lost across a clean close and reopen.
        """
        try:
            if self._outbox is not None:
                self.flush()
                self._flush_filter()
        finally:
            if self._outbox is not None:
                self._outbox.close()
                self._outbox = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)       # releases the flock
                self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open_outbox(self):
        if self._outbox is None:
            raise ValueError("this DeviceAgent is closed.")
        return self._outbox

    @property
    def boot(self):
        """This run's boot id (a fresh random 64-bit number at every start)."""
        return self._open_outbox().boot

    @property
    def outbox(self):
        """The :class:`edgekm.sync.device.outbox.Outbox` (for inspection and requeueing)."""
        return self._outbox

    # ------------------------------------------------------------ models
    def _new_model(self):
        return StreamingKMeans(self.n_clusters, algorithm=self.algorithm,
                               coreset_size=self.coreset_size, dtype=self.dtype.type,
                               random_state=self._rng)

    def _new_window(self):
        return StreamingKMeans(self.n_clusters, algorithm=WINDOW_ALGORITHM,
                               coreset_size=self.coreset_size, dtype=self.dtype.type,
                               random_state=self._rng)

    def _restore_model(self):
        body = self._outbox.load_snapshot()
        if body is None:
            return
        snap = _frame.decode_frame(body)
        points = snap.points.astype(self.dtype, copy=False)
        self.model.partial_fit(points, sample_weight=snap.weights)

    def _save_model(self):
        """Store the local model's coreset, encoded as a frame, for the next boot."""
        if getattr(self.model, "_engine", None) is None or self.algorithm == "sequential":
            return
        try:
            summary = self.model.coreset()
        except EdgekmError:
            return
        if len(summary) > _frame.MAX_POINTS:        # pragma: no cover - huge m only
            summary = summary.merge(size=_frame.MAX_POINTS, random_state=self._rng)
        body = _frame.encode_frame(
            model=self.model_name, device=self.device_id, boot=self.boot, seq=0,
            span=(0, max(int(summary.total_weight) - 1, 0)), points=summary.points,
            weights=summary.weights, level=min(summary.level, _frame.MAX_LEVEL),
            created=time.time(), spread=summary.spread)
        self._outbox.save_snapshot(body)

    # ------------------------------------------------------------ ingest
    def ingest(self, X):
        """Add one point (1-D array of ``n_features``) or a batch (2-D array).

        Validated once (finite numbers, a fixed number of features, which the
        first point fixes and the outbox remembers across restarts); a rejected
        batch raises ``ValueError`` and changes nothing.
        """
        self._open_outbox()
        n_features = self._n_features
        if (n_features is not None and self._window is not None and isinstance(X, np.ndarray)
                and X.ndim == 1 and X.dtype == self.dtype and X.flags.c_contiguous):
            self.model.learn_one(X)             # the fast path: checked in the engine
            self._window.learn_one(X)
            self._window_weight += 1
            self._next_point += 1
            if self.filter is not None:
                self._observe(X)
            return
        raw = X
        if not (hasattr(X, "toarray") or hasattr(X, "tocsr")):   # sparse: check_array refuses
            raw = np.asarray(X)
            if raw.ndim == 1:
                raw = raw.reshape(1, -1)
        X = check_array(raw, self.dtype.type, n_features=n_features, estimator="DeviceAgent")
        if n_features is None:
            d = X.shape[1]
            size = self.coreset_size * (d * self.dtype.itemsize + 8) + 512
            if d > _frame.MAX_FEATURES or size > _frame.MAX_FRAME_BYTES:
                raise ValueError(
                    f"{d} features with coreset_size={self.coreset_size} make frames of about "
                    f"{size} bytes, above the wire limits (max_features={_frame.MAX_FEATURES}, "
                    f"max_frame_bytes={_frame.MAX_FRAME_BYTES}); lower coreset_size.")
            self._outbox.set_layout(d, self._dtype_code)
            self._n_features = d
        self.model.partial_fit(X)
        if self._window is None:
            self._window = self._new_window()
            self._window_first = self._next_point
        self._window.partial_fit(X)
        self._window_weight += X.shape[0]
        self._next_point += X.shape[0]
        if self.filter is not None:
            self._observe(X)

    # ------------------------------------------------------------ sync
    def flush(self):
        """Drain the window into one durable frame (no network); returns the merge count.

        Also stores a summary of :attr:`model` (its coreset) in the outbox, from
        which the next boot warm-starts its local model (except with
        ``algorithm="sequential"``, which keeps no coreset: it restarts empty).
        """
        self._open_outbox()
        if self._window is None:
            return 0
        summary = self._window.coreset()
        if summary.total_weight != self._window_weight:     # pragma: no cover - a core bug
            raise AssertionError(f"the window's coreset weighs {summary.total_weight!r}, "
                                 f"not the {self._window_weight!r} points it received")
        span = (self._window_first, self._window_first + int(self._window_weight) - 1)
        _, merges = self._outbox.append(summary, span=span, created=time.time())
        self._window = None                   # committed: the outbox holds the weight now
        self._window_weight = 0.0
        self._window_first = None
        self._save_model()
        return merges

    def sync(self):
        """Flush the window into the outbox, then upload the pending frames in order.

        Never raises on network failure: what is not acknowledged stays in
        the outbox for the next call.

        Returns
        -------
        dict
            ``uploaded``: frames acknowledged during this call (``accepted``
            plus ``duplicates``, the ones the aggregator already had);
            ``rejected``: frames the aggregator refused for good during this
            call (kept in the outbox's ``rejected`` table); ``merged``: pair
            merges the flush needed to respect ``max_pending``; ``failed_attempts``:
            HTTP attempts that failed with a retryable error;
            ``pending``, ``pending_weight``: what is still queued; ``error``:
            the last error of this call (even if a retry then succeeded), or
            None; ``telemetry_uploaded``, ``telemetry_pending``: telemetry
            summaries acknowledged during this call and still queued;
            ``version``: the centroid version in use (None before the first
            successful :meth:`pull`).  Telemetry goes up after the frames, in
            seq order; a retryable failure (or a 404 from an aggregator without
            the endpoint) keeps the rest for the next call, a 400/409/413/422
            drops that summary (counted in ``outbox.telemetry_stats()``).
        """
        report = {"uploaded": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "merged": 0,
                  "failed_attempts": 0, "error": None}
        report["merged"] = self.flush()
        after = -1
        while True:
            pending = self._outbox.next_pending(after)
            if pending is None:
                break
            after = pending.seq
            outcome = self._upload(pending, report)
            if outcome.kind == "ack":
                self._outbox.ack(pending.seq)
                report["uploaded"] += 1
                report["duplicates" if outcome.duplicate else "accepted"] += 1
                continue
            report["error"] = outcome.error
            if outcome.kind == "retry":
                break                         # keep the order: later frames wait
            self._outbox.reject(pending.seq, outcome.status, outcome.error)
            report["rejected"] += 1
            if outcome.kind == "reject_stop":
                break
        stats = self._outbox.stats()
        report["pending"] = stats["pending"]
        report["pending_weight"] = stats["pending_weight"]
        self._flush_filter()
        report["telemetry_uploaded"] = self._upload_telemetry(report)
        report["telemetry_pending"] = self._outbox.telemetry_stats()["telemetry_pending"]
        report["version"] = self.version
        return report

    @property
    def _client(self):
        """The client of the replica in use."""
        return self._clients[self._current]

    @property
    def current_server(self):
        """The URL of the aggregator replica the agent talks to now."""
        return self._client.server_url

    def _failover(self, answer):
        """After no answer or a 502/503/504, move on to the next replica's URL: the
        outbox, the frame ids and the seqs stay, so a frame retried there is answered
        ``duplicate`` if the first replica had merged it."""
        if answer is not None and answer.status in FAILOVER_STATUSES:
            self._current = (self._current + 1) % len(self._clients)

    def _upload(self, pending, report):
        """Send one frame, retrying retryable failures with backoff; returns an Outcome."""
        def failed(outcome):
            report["error"] = outcome.error
            report["failed_attempts"] += 1
            self._outbox.record_error(pending.seq, outcome.error)

        return self._client.retrying(
            lambda: self._post(pending), after_failure=failed,
            before_attempt=lambda: self._outbox.mark_attempted(pending.seq))  # durable first

    def _post(self, pending):
        """One attempt at uploading ``pending``; returns its Outcome."""
        answer = self._client.attempt(
            "POST", self._frames_path, pending.body,
            headers={"Content-Type": "application/msgpack", "Accept": "application/json"})
        outcome = self._classify(pending, answer)
        if outcome.kind == "retry":
            self._failover(answer)
        return outcome

    def _classify(self, pending, answer):
        if answer.status is None:
            return Outcome("retry", error=answer.error, answer=answer)
        status, body = answer.status, answer.json()
        detail = body.get("error") or body.get("reason") or ""
        error = f"HTTP {status} {body.get('reason', '')}: {detail}".strip()[:300]
        if not 200 <= status < 300:
            return by_status(answer, error)
        kind = body.get("status")
        frame_id = body.get("frame_id")
        expected = [self.model_name, self.device_id, pending.boot, pending.seq]
        if not isinstance(frame_id, list):
            frame_id = expected             # the id is optional in an answer
        if kind not in ("accepted", "duplicate") or \
                [str(x) for x in frame_id] != [str(x) for x in expected]:
            # a 2xx that is not the aggregator's answer (a proxy, a portal): not an ACK
            return Outcome("retry", status=status, answer=answer,
                           error=f"HTTP {status} without an acknowledgement of this frame")
        return Outcome("ack", status=status, duplicate=(kind == "duplicate"), answer=answer)

    # ------------------------------------------------------------ centroid versions
    @property
    def version(self):
        """Id of the centroid version in use, or None."""
        return None if self.assigner is None else self.assigner.version_id

    def _version_path(self, name):
        return os.path.join(self.state_dir, name)

    def _read_version_file(self, name):
        try:
            with open(self._version_path(name), "rb") as fh:
                body = fh.read()
            v = decode_version(body)
        except (OSError, VersionError):
            return None
        if v.model != self.model_name:
            return None
        return v

    def _load_stored_version(self):
        """Use the stored version (a corrupt current file falls back to the previous one)."""
        try:
            os.unlink(self._version_path(_VERSION_TMP))    # an interrupted store: ignored
        except OSError:
            pass
        for name in (VERSION_FILE, PREVIOUS_VERSION_FILE):
            v = self._read_version_file(name)
            if v is not None and self._usable(v) is None:
                self._switch(v)
                return

    def _usable(self, v):
        """None if this agent can assign with ``v``, else why not."""
        if v.model != self.model_name:
            return f"the version is for model {v.model!r}"
        if self._n_features is not None and v.n_features != self._n_features:
            return (f"the version has {v.n_features} features; this device's points have "
                    f"{self._n_features}")
        return None

    def _store_version(self, body):
        """Write ``body`` as the current version, keeping the old one as previous.

        Temp file, fsync, rename the current file to previous, rename the temp
        file to current, fsync the directory: a crash at any point leaves the
        old version or the new one readable (current, else previous), never a
        mix, and a half-written temp file is never read.
        """
        tmp = self._version_path(_VERSION_TMP)
        current = self._version_path(VERSION_FILE)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.path.exists(current):
            os.replace(current, self._version_path(PREVIOUS_VERSION_FILE))
        os.replace(tmp, current)
        _fsync_dir(self.state_dir)

    def _switch(self, v):
        closed = None
        if self.filter is None:
            from edgekm.filter import EdgeFilter      # loaded with the first version

            self.filter = EdgeFilter(
                v, anomaly_threshold=self.anomaly_threshold,
                window_seconds=self.telemetry_window_seconds, clock=self._clock,
                max_anomalies=self.max_anomalies, device=self.device_id, boot=self.boot,
                seq_source=self._outbox.take_telemetry_seq, summarize=self._summarize)
        else:
            closed = self.filter.set_version(v)
        self.assigner = self.filter.assigner
        self._version_doc = v
        if closed is not None:
            self._queue_summaries([closed])

    def pull(self):
        """Fetch this device's centroid version; returns the id in use (or None).

        A signed conditional GET (``If-None-Match`` with the digest in use).
        On 200 the body is checked against its digest and the ``ETag``;
        a lower version id than the one in use is refused unless the answer
        says ``x-edgekm-rollback: 1`` or ``x-edgekm-pinned: 1``; the version is
        stored in ``state_dir`` (see :meth:`_store_version`) before the agent
        switches to it.  304, 404, refusals and network errors keep the
        version in use.  Never raises for the network or the server's
        answers; :attr:`last_pull` says what happened.
        """
        self._open_outbox()
        current = getattr(self, "_version_doc", None)
        outcome = {"status": None, "changed": False, "error": None, "version": self.version}
        self.last_pull = outcome
        headers = {"Accept": "application/msgpack"}
        if current is not None:
            headers["If-None-Match"] = f'"{current.digest}"'
        # no retry but the one after a clock-skew 401: pull() is called again later
        answer = self._client.call(
            "GET", self._centroids_path, headers=headers, max_retries=0,
            classify=lambda a: Outcome("retry" if a.status is None else "answer",
                                       status=a.status, error=a.error, answer=a)).answer
        self._failover(answer)
        if answer.status is None:
            outcome["error"] = answer.error
            return self.version
        outcome["status"] = status = answer.status
        if status == 304:
            return self.version
        if status != 200:
            outcome["error"] = f"HTTP {status}: {answer.body[:200]!r}"
            return self.version
        return self._take_version(answer, current, outcome)

    def _take_version(self, answer, current, outcome):
        """Check, store and use the version of a 200 answer (see :meth:`pull`)."""
        body, rheaders = answer.body, answer.headers
        etag = (rheaders.get("ETag") or "").strip()
        if etag.startswith("W/"):
            etag = etag[2:]
        etag = etag.strip('"')
        try:
            if not etag:
                raise VersionError("the answer has no ETag")
            v = decode_version(body, expected_digest=etag)
        except VersionError as exc:
            outcome["error"] = f"refused: {exc}"
            return self.version
        flag = lambda name: (rheaders.get(name) or "").strip() == "1"   # noqa: E731
        allowed = flag("x-edgekm-rollback") or flag("x-edgekm-pinned")
        why = self._usable(v)
        if why is None and current is not None:
            if v.digest == current.digest:
                return self.version
            if v.version < current.version and not allowed:
                why = (f"downgrade from version {current.version} to {v.version} without a "
                       "rollback or pin")
            elif v.version == current.version:
                why = f"version {v.version} with another digest (versions are immutable)"
        if why is not None:
            outcome["error"] = f"refused: {why}"
            return self.version
        try:
            self._store_version(body)
        except OSError as exc:
            outcome["error"] = f"cannot store the version: {exc}"
            return self.version
        self._switch(v)
        outcome["changed"] = True
        outcome["version"] = self.version
        return self.version

    # ------------------------------------------------------------ telemetry
    def _observe(self, X):
        if self.filter.assigner.n_features != self._n_features:
            # a version pulled before the first point, for another layout: unusable
            self.last_pull = {"status": None, "changed": False, "version": None,
                              "error": f"version {self.version} has "
                              f"{self.filter.assigner.n_features} features; the points have "
                              f"{self._n_features}: not used"}
            self._unscored_before += self.filter.n_unscored
            self.filter = self.assigner = self._version_doc = None
            return
        self._queue_summaries(self.filter.observe(X))

    def _summarize(self, window):
        """The filter's ``summarize``: the wire summary, or None (dropped, counted in
        :meth:`stats`, logged once) when the window cannot be encoded.  Telemetry never
        blocks ingest, :meth:`sync` or :meth:`close`."""
        try:
            return summarize(window)
        except ValueError as exc:          # TelemetryError: a field the wire refuses
            self._drop_summary(window, exc)
            return None

    def _drop_summary(self, window, exc):
        self._telemetry_unencodable += 1
        if self._telemetry_unencodable == 1:
            _log().warning("device %s: telemetry summary %s of version %s cannot be encoded "
                         "and is dropped (%s); further ones are only counted in stats()"
                         "['telemetry_unencodable']", self.device_id, window.seq,
                         window.version, exc)

    def _queue_summaries(self, summaries):
        for summary in summaries:
            if summary is None:
                continue
            try:
                body = encode_telemetry(summary)
            except ValueError as exc:
                self._drop_summary(summary, exc)
                continue
            self._outbox.append_telemetry(summary.seq, summary.boot, body,
                                          created=summary.window[1])

    def _flush_filter(self):
        if self.filter is not None:
            summary = self.filter.flush()
            if summary is not None:
                self._queue_summaries([summary])

    def _upload_telemetry(self, report):
        """Upload the queued summaries in seq order under the client's rules (backoff, the
        clock-skew retry); returns how many were acknowledged."""
        uploaded = 0
        for seq, body in self._outbox.pending_telemetry():
            outcome = self._client.call(
                "POST", self._telemetry_path, body, classify=_classify_telemetry,
                headers={"Content-Type": "application/msgpack", "Accept": "application/json"},
                after_failure=lambda o, seq=seq: self._outbox.record_telemetry_error(seq, o.error))
            if outcome.kind == "ack":
                self._outbox.ack_telemetry(seq)
                uploaded += 1
                continue
            report["error"] = outcome.error
            if outcome.kind == "retry":
                self._failover(outcome.answer)
            if outcome.kind == "reject":
                self._outbox.drop_telemetry(seq, outcome.error)
                continue
            if outcome.kind == "reject_stop":
                self._outbox.record_telemetry_error(seq, outcome.error)
            break
        return uploaded

    # ------------------------------------------------------------ accounting
    def stats(self):
        """Where the weight is: window, pending, acknowledged, rejected, and the total.

        ``weight_ingested == window_weight + pending_weight + weight_acked +
        rejected_weight`` exactly, at every step and across restarts.  Telemetry since
        this agent started: ``scores_unscored``, points whose anomaly score was not
        finite (a version whose p99 is 0, published before the quantile floor; counted,
        never forwarded), and ``telemetry_unencodable``, summaries dropped because
        they could not be encoded.
        """
        out = self._open_outbox().stats()
        out["scores_unscored"] = self._unscored_before + (
            self.filter.n_unscored if self.filter is not None else 0)
        out["telemetry_unencodable"] = self._telemetry_unencodable
        out["window_weight"] = float(self._window_weight)
        out["weight_ingested"] = out["weight_ingested"] + float(self._window_weight)
        out["next_point"] = self._next_point
        return out
