"""Centroid versions on the aggregator: publishing, stable labels, rollout, drift.

Everything here runs on the aggregator (it needs scipy); devices only decode
what :func:`~edgekm.sync.wire.version.encode_version` produced.  The methods are
mixed into :class:`~edgekm.sync.cloud.aggregator.Aggregator` by
:class:`VersionsMixin`; the pure functions (:func:`match_labels`,
:func:`cohort_bucket`) are what the tests pin down.  The solve itself (k-means, trimmed
k-means, cluster statistics) is the core's, in :mod:`edgekm.solve`.

**Publishing** fits centres on the aggregate with the aggregate's own solver
(:meth:`edgekm.Coreset.fit_centers`), assigns every weighted point of the
aggregate to its nearest centre and takes, per cluster, the weight and the
weighted p50/p95/p99 of the squared distances (the anomaly thresholds).  The
centres are then matched to the parent's (the active version, else the
latest) by the Hungarian algorithm on squared distances, so that a label
keeps its meaning across versions.  The version is stored once, as the exact
bytes that devices download, and never changes again except for its status.

**Rollout** keeps, per model, one active version, at most one canary with a
percentage, device pins and the stack of versions made active (``rollback``
pops it).  Every change is one SQLite transaction on the aggregator's single
writer connection, and so is every pull (authenticate, resolve, record what
was served): a pull never sees half a rollback.  Every change is written to
``version_events``.
"""

import hashlib
import json
import logging
import math
import threading
from collections import OrderedDict

import numpy as np

from edgekm.exceptions import EdgekmError, NotFittedError, RolloutError, UnknownVersionError

from edgekm.solve import cluster_statistics, fit_centers
from edgekm.sync.wire.frame import check_id
from edgekm.sync.wire.telemetry import MAX_TELEMETRY_BYTES, decode_telemetry
from edgekm.sync.wire.version import CentroidVersion, decode_version, encode_version

__all__ = ["VersionsMixin", "RolloutError", "UnknownVersionError", "STATUSES",
           "cohort_bucket", "in_cohort", "match_labels", "DEFAULT_DRIFT_THRESHOLD"]

logger = logging.getLogger("edgekm.sync.cloud.versions")

STATUSES = ("candidate", "canary", "active", "retired")
#: cohort buckets: a device is in a canary of ``percent`` when its bucket < round(percent * 100)
COHORT_BUCKETS = 10_000
#: devices whose latest drift score reaches this count as drifting (when no policy sets
#: one); the device filter documents a score of 1 or more as drift
DEFAULT_DRIFT_THRESHOLD = 1.0
ACTORS = ("api", "cli", "http", "policy")
_VERSION_CACHE_SIZE = 64


# ---------------------------------------------------------------- pure functions


def cohort_bucket(model, device_id):
    """The device's canary bucket in [0, 10000): sha256("model/device"), first 8 bytes, mod 10000.

    A device is in a canary of ``percent`` when its bucket is below
    ``round(percent * 100)``, so it stays in when the percentage grows.
    """
    digest = hashlib.sha256(f"{model}/{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % COHORT_BUCKETS


def in_cohort(model, device_id, percent):
    """True when ``device_id`` is in the canary cohort of ``percent`` (0..100) of ``model``."""
    return cohort_bucket(model, device_id) < round(percent * 100)


def _lexicographic(centers):
    """Indices of the centres in lexicographic order of their coordinates."""
    C = np.asarray(centers, dtype=np.float64)
    return np.lexsort(C.T[::-1]) if C.size else np.arange(len(C))


def match_labels(centers, parent=None):
    """Stable labels: the label each new centre takes, matched to the parent's centres.

    The new centres are matched to the parent's with the Hungarian algorithm
    (:func:`scipy.optimize.linear_sum_assignment`) on squared distances.  A
    matched centre keeps its parent's label when that label exists in the
    new version (label < k); the other centres (unmatched ones when k grew,
    and matched ones whose parent label is >= k when k shrank) take the free
    labels in ascending order, taken in lexicographic order of their
    coordinates, so that the result never depends on the order of the fit.
    Without a parent every centre is labelled in that lexicographic order.

    Parameters
    ----------
    centers : ndarray of shape (k, d)
    parent : ndarray of shape (k_parent, d) or None

    Returns
    -------
    labels : ndarray of shape (k,), int64
        ``labels[i]`` is the published label of ``centers[i]``; a permutation of 0..k-1.
    new_clusters : list of int
        Labels whose cluster has no counterpart under the same label in the parent.
    vanished_clusters : list of int
        Parent labels whose cluster has no counterpart under the same label here.
    shift : float or None
        Largest Euclidean distance between matched centres (None without a parent).
    """
    C = np.asarray(centers, dtype=np.float64)
    k = C.shape[0]
    labels = np.full(k, -1, dtype=np.int64)
    if parent is None:
        labels[_lexicographic(C)] = np.arange(k)
        return labels, [], [], None
    from scipy.optimize import linear_sum_assignment

    P = np.asarray(parent, dtype=np.float64)
    cost = ((C[:, None, :] - P[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    shift = float(np.sqrt(cost[rows, cols].max())) if len(rows) else None
    for i, p in zip(rows, cols):
        if p < k:
            labels[i] = p
    kept = set(labels[labels >= 0].tolist())
    free = [c for c in range(k) if c not in kept]
    rest = [i for i in _lexicographic(C) if labels[i] < 0]
    for i, c in zip(rest, free):
        labels[i] = c
    new_clusters = sorted(free)
    vanished = [p for p in range(P.shape[0]) if p not in kept]
    return labels, new_clusters, vanished, shift


def _check_percent(percent):
    if (isinstance(percent, bool) or not isinstance(percent, (int, float, np.number))
            or not math.isfinite(percent) or not 0 < percent <= 100):
        raise ValueError(f"percent must be a number in (0, 100]; got {percent!r}.")
    return float(percent)


def _optional_positive(name, value):
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be None or a finite number > 0; got {value!r}.")
    return float(value)


def _version_info(row, percent=None):
    (version, status, created, parent, k, d, training_weight, cost, shift, windows,
     model_weight, digest) = row
    info = {"version": version, "status": status, "created": created, "parent": parent,
            "k": k, "d": d, "training_weight": training_weight, "cost": cost, "shift": shift,
            "windows": windows, "model_weight": model_weight, "digest": digest}
    if status == "canary":
        info["canary_percent"] = percent
    return info


_INFO_COLUMNS = ("version, status, created, parent, k, d, training_weight, cost, shift, "
                 "windows, model_weight, digest")


def _version_rows(conn, mid):
    """Every version row of a model (the _INFO_COLUMNS), oldest first."""
    return conn.execute(f"SELECT {_INFO_COLUMNS} FROM versions WHERE model_id = ? "
                        "ORDER BY version", (mid,)).fetchall()


# ---------------------------------------------------------------- the mixin


class VersionsMixin:
    """Versioned centroids for :class:`~edgekm.sync.cloud.aggregator.Aggregator`.

    Uses the aggregator's ``_transaction``, ``_reader``, ``_model_row``,
    ``clock`` and error classes; holds no state of its own except a small
    cache of decoded versions (they are immutable).
    """

    # ------------------------------------------------------------ helpers
    def _mid(self, conn, model):
        from .aggregator import UnknownModelError

        row = self._model_row(conn, model)
        if row is None:
            raise UnknownModelError(f"no model {model!r}.")
        return row

    def _load_version(self, conn, mid, version):
        """(CentroidVersion, body, digest) of a stored version, cached (immutable)."""
        cache = self.__dict__.setdefault("_versions_cache", OrderedDict())
        lock = self.__dict__.setdefault("_versions_cache_lock", threading.Lock())
        key = (mid, int(version))
        with lock:
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                return hit
        row = conn.execute("SELECT body, digest FROM versions WHERE model_id = ? AND "
                           "version = ?", (mid, int(version))).fetchone()
        if row is None:
            raise UnknownVersionError(f"no version {version!r}.")
        body, digest = bytes(row[0]), row[1]
        hit = (decode_version(body, expected_digest=digest), body, digest)
        with lock:
            cache[key] = hit
            while len(cache) > _VERSION_CACHE_SIZE:
                cache.popitem(last=False)
        return hit

    def _rollout(self, conn, mid):
        row = conn.execute("SELECT active, canary, canary_percent FROM rollouts "
                           "WHERE model_id = ?", (mid,)).fetchone()
        return (None, None, 0.0) if row is None else row

    def _set_rollout(self, conn, mid, active, canary, percent, now):
        conn.execute("INSERT INTO rollouts (model_id, active, canary, canary_percent, updated) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model_id) DO UPDATE SET "
                     "active = excluded.active, canary = excluded.canary, "
                     "canary_percent = excluded.canary_percent, updated = excluded.updated",
                     (mid, active, canary, percent, now))

    def _status(self, conn, mid, version):
        row = conn.execute("SELECT status FROM versions WHERE model_id = ? AND version = ?",
                           (mid, version)).fetchone()
        if row is None:
            raise UnknownVersionError(f"no version {version!r}.")
        return row[0]

    def _event(self, conn, mid, version, now, actor, action, old=None, new=None, **detail):
        conn.execute("INSERT INTO version_events (model_id, version, at, actor, action, "
                     "old_status, new_status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (mid, version, now, actor, action, old, new,
                      json.dumps(detail, sort_keys=True) if detail else None))

    def _set_status(self, conn, mid, version, new, now, actor, action, **detail):
        old = self._status(conn, mid, version)
        if old != new:
            conn.execute("UPDATE versions SET status = ? WHERE model_id = ? AND version = ?",
                         (new, mid, version))
        self._event(conn, mid, version, now, actor, action, old, new, **detail)

    @staticmethod
    def _check_actor(actor):
        if actor not in ACTORS:
            raise ValueError(f"actor must be one of {ACTORS}; got {actor!r}.")
        return actor

    @staticmethod
    def _check_version_id(version):
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
            raise UnknownVersionError(f"no version {version!r}.")
        return int(version)

    # ------------------------------------------------------------ publishing
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
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) \
                or n_clusters < 1:
            raise ValueError(f"n_clusters must be an int >= 1; got {n_clusters!r}.")
        self._check_actor(actor)
        trim = getattr(self, "publish_trim", 0.0) if trim is None else trim
        if isinstance(trim, bool) or not isinstance(trim, (int, float)) or not 0 <= trim < 0.5:
            raise ValueError(f"trim must be a number in [0, 0.5); got {trim!r}.")
        coreset = self.aggregate(model, windows)            # a read snapshot
        centers, _, cost = fit_centers(coreset, int(n_clusters), trim=trim, n_init=n_init,
                                       random_state=random_state)
        return self._store_version(model, centers, coreset, cost, windows, actor, reason)

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
        from edgekm import Coreset

        self._check_actor(actor)
        info = self.model_info(model, with_windows=False)
        C = np.asarray(centers)
        if C.ndim != 2 or C.shape[0] < 1 or C.dtype.kind not in "iuf" \
                or not np.isfinite(C).all():
            raise ValueError("centers must be a finite 2-D numeric array with at least one "
                             f"row; got shape {C.shape} of {C.dtype}.")
        if C.shape[1] != info["n_features"]:
            raise ValueError(f"centers have {C.shape[1]} features; model {model!r} has "
                             f"{info['n_features']}.")
        if coreset is None:
            coreset = self.aggregate(model)
        elif not isinstance(coreset, Coreset):
            raise TypeError(f"coreset must be an edgekm.Coreset or None; "
                            f"got {type(coreset).__name__}.")
        if coreset.n_features != C.shape[1]:
            raise ValueError(f"the coreset has {coreset.n_features} features; the centers "
                             f"have {C.shape[1]}.")
        dtype = np.dtype(info["dtype"]).newbyteorder("=")
        if coreset.dtype != dtype:           # versions hold the model's dtype
            coreset = Coreset(coreset.points.astype(dtype), coreset.weights, level=coreset.level)
        C = np.ascontiguousarray(C, dtype=dtype)
        return self._store_version(model, C, coreset, coreset.cost(C), None, actor, reason)

    def _store_version(self, model, centers, coreset, cost, windows, actor, reason):
        """Label, summarise (weights, quantiles on ``coreset``) and store one version."""
        centers = np.ascontiguousarray(centers, dtype=coreset.points.dtype)
        k = centers.shape[0]
        fit_weights, fit_quantiles = cluster_statistics(coreset.points, coreset.weights, centers)
        training_weight = float(coreset.total_weight)
        now = float(self.clock())

        def work(conn):
            row = self._mid(conn, model)
            mid = row["model_id"]
            active, canary, percent = self._rollout(conn, mid)
            latest = conn.execute("SELECT max(version) FROM versions WHERE model_id = ?",
                                  (mid,)).fetchone()[0]
            parent = active if active is not None else latest
            parent_centers = None
            if parent is not None:
                parent_centers = self._load_version(conn, mid, parent)[0].centers
            labels, new, vanished, shift = match_labels(centers, parent_centers)
            order = np.argsort(labels)          # order[label] = index in the fit
            version = (latest or 0) + 1
            cv = CentroidVersion(
                model=model, version=version, parent=parent, created=now,
                centers=centers[order], cluster_weights=fit_weights[order],
                quantiles=fit_quantiles[order],
                training_weight=training_weight, cost=float(cost), shift=shift,
                windows=windows, new_clusters=tuple(new), vanished_clusters=tuple(vanished))
            body, digest = encode_version(cv)
            status = "active" if active is None else "candidate"
            conn.execute(f"INSERT INTO versions ({_INFO_COLUMNS}, body, model_id) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (version, status, now, parent, k, centers.shape[1], training_weight,
                          float(cost), shift, windows, row["total_weight"], digest, body, mid))
            detail = {"n_clusters": k, "windows": windows, "parent": parent}
            if reason is not None:
                detail["reason"] = reason
            self._event(conn, mid, version, now, actor, "publish", None, status, **detail)
            if status == "active":
                self._push_active(conn, mid, version, now)
                self._set_rollout(conn, mid, version, canary, percent, now)
            return version
        return self._transaction(work)

    def _push_active(self, conn, mid, version, now):
        top = conn.execute("SELECT max(position) FROM active_history WHERE model_id = ?",
                           (mid,)).fetchone()[0]
        conn.execute("INSERT INTO active_history VALUES (?, ?, ?, ?)",
                     (mid, 0 if top is None else top + 1, version, now))

    # ------------------------------------------------------------ queries
    def versions(self, model):
        """Every version of ``model``, oldest first, as dicts: version, status, created,
        parent, k, d, training_weight, cost, shift, windows, model_weight, digest
        (and ``canary_percent`` for the canary)."""
        with self._snapshot() as conn:
            mid = self._mid(conn, model)["model_id"]
            _, _, percent = self._rollout(conn, mid)
            rows = _version_rows(conn, mid)
        return [_version_info(r, percent) for r in rows]

    def version(self, model, version):
        """The stored :class:`~edgekm.sync.wire.version.CentroidVersion` (digest checked)."""
        version = self._check_version_id(version)
        conn = self._reader()
        return self._load_version(conn, self._mid(conn, model)["model_id"], version)[0]

    def version_body(self, model, version):
        """``(body, digest)``: the exact bytes devices download for this version."""
        version = self._check_version_id(version)
        conn = self._reader()
        _, body, digest = self._load_version(conn, self._mid(conn, model)["model_id"], version)
        return body, digest

    def rollout_state(self, model):
        """``{"active": v|None, "canary": v|None, "canary_percent": p, "history": [...],
        "pins": {device: v}}``."""
        with self._snapshot() as conn:
            mid = self._mid(conn, model)["model_id"]
            active, canary, percent = self._rollout(conn, mid)
            history = [r[0] for r in conn.execute(
                "SELECT version FROM active_history WHERE model_id = ? ORDER BY position",
                (mid,))]
            pins = dict(conn.execute("SELECT device_id, version FROM pins WHERE model_id = ? "
                                     "ORDER BY device_id", (mid,)).fetchall())
        return {"active": active, "canary": canary,
                "canary_percent": percent if canary is not None else 0.0,
                "history": history, "pins": pins}

    def version_events(self, model, limit=None):
        """The event log of ``model``, oldest first: dicts with event, version, at,
        actor, action, old_status, new_status and detail."""
        conn = self._reader()
        mid = self._mid(conn, model)["model_id"]
        sql = ("SELECT event_id, version, at, actor, action, old_status, new_status, detail "
               "FROM version_events WHERE model_id = ? ORDER BY event_id")
        rows = conn.execute(sql, (mid,)).fetchall()
        if limit is not None:
            rows = rows[-int(limit):]
        return [{"event": r[0], "version": r[1], "at": r[2], "actor": r[3], "action": r[4],
                 "old_status": r[5], "new_status": r[6],
                 "detail": json.loads(r[7]) if r[7] else {}} for r in rows]

    # ------------------------------------------------------------ rollout
    def canary(self, model, version, percent, *, actor="api"):
        """Send ``version`` to ``percent`` % of the devices (the cohort hash).

        A candidate, a retired version, or the current canary (to change its
        percentage) may be canaried; there is one canary at a time.  Raises
        :class:`RolloutError`, :class:`UnknownVersionError` or ``ValueError``.
        """
        version = self._check_version_id(version)
        percent = _check_percent(percent)
        self._check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = self._mid(conn, model)["model_id"]
            status = self._status(conn, mid, version)
            active, canary, old_percent = self._rollout(conn, mid)
            if canary is not None and canary != version:
                raise RolloutError(f"version {canary} is already the canary; promote it or "
                                   "roll back first (one canary at a time).")
            if status == "active":
                raise RolloutError(f"version {version} is the active version.")
            self._set_status(conn, mid, version, "canary", now, actor, "canary",
                             percent=percent,
                             previous_percent=old_percent if canary is not None else None)
            self._set_rollout(conn, mid, active, version, percent, now)
            return {"version": version, "status": "canary", "percent": percent}
        return self._transaction(work)

    def promote(self, model, version, *, actor="api"):
        """Make ``version`` active: the previous active is retired, the canary cleared.

        A canary other than ``version`` goes back to ``candidate``.  Returns
        ``{"active": version, "retired": previous or None}``.
        """
        version = self._check_version_id(version)
        self._check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = self._mid(conn, model)["model_id"]
            status = self._status(conn, mid, version)
            if status == "active":
                raise RolloutError(f"version {version} is already active.")
            active, canary, _ = self._rollout(conn, mid)
            if active is not None:
                self._set_status(conn, mid, active, "retired", now, actor, "promote",
                                 replaced_by=version)
            if canary is not None and canary != version:
                self._set_status(conn, mid, canary, "candidate", now, actor, "promote",
                                 canary_cleared=True)
            self._set_status(conn, mid, version, "active", now, actor, "promote",
                             previous=active)
            self._push_active(conn, mid, version, now)
            self._set_rollout(conn, mid, version, None, 0.0, now)
            return {"active": version, "retired": active}
        return self._transaction(work)

    def abort_canary(self, model, *, actor="api"):
        """Withdraw the canary: it goes back to ``candidate`` and the active version stays.

        Devices in the cohort that were served the canary get the active
        version at their next pull, with the ``x-edgekm-rollback: 1`` header
        (it is older), so they accept it.  Returns ``{"aborted": canary,
        "active": active or None}``; raises :class:`RolloutError` when there is
        no canary.
        """
        self._check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = self._mid(conn, model)["model_id"]
            active, canary, percent = self._rollout(conn, mid)
            if canary is None:
                raise RolloutError(f"model {model!r} has no canary to abort.")
            self._set_status(conn, mid, canary, "candidate", now, actor, "abort",
                             percent=percent)
            self._set_rollout(conn, mid, active, None, 0.0, now)
            return {"aborted": canary, "active": active}
        return self._transaction(work)

    def rollback(self, model, *, actor="api"):
        """Atomically retire the active version and make the previous active one active.

        Any canary goes back to ``candidate``.  Devices that were served a
        newer version get the ``x-edgekm-rollback: 1`` header at their next
        pull.  Returns ``{"active": previous, "retired": current}``; raises
        :class:`RolloutError` when there is no earlier active version.
        """
        self._check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = self._mid(conn, model)["model_id"]
            stack = conn.execute("SELECT position, version FROM active_history "
                                 "WHERE model_id = ? ORDER BY position DESC LIMIT 2",
                                 (mid,)).fetchall()
            if len(stack) < 2:
                raise RolloutError(f"model {model!r} has no earlier active version to roll "
                                   "back to.")
            (top, current), (_, previous) = stack
            _, canary, _ = self._rollout(conn, mid)
            self._set_status(conn, mid, current, "retired", now, actor, "rollback",
                             rolled_back_to=previous)
            if canary is not None and canary not in (current, previous):
                self._set_status(conn, mid, canary, "candidate", now, actor, "rollback",
                                 canary_cleared=True)
            self._set_status(conn, mid, previous, "active", now, actor, "rollback",
                             rolled_back_from=current)
            conn.execute("DELETE FROM active_history WHERE model_id = ? AND position = ?",
                         (mid, top))
            self._set_rollout(conn, mid, previous, None, 0.0, now)
            return {"active": previous, "retired": current}
        return self._transaction(work)

    def pin(self, model, device_id, version, *, actor="api"):
        """Pin a device to a version (any status), or unpin it with ``version=None``.

        A pinned device is served its pin whatever the rollout, with the
        header ``x-edgekm-pinned: 1``.  Returns ``{"device": ..., "version": v|None,
        "previous": v|None}``.
        """
        from .aggregator import UnknownDeviceError

        check_id(device_id, "device_id")
        if version is not None:
            version = self._check_version_id(version)
        self._check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = self._mid(conn, model)["model_id"]
            if conn.execute("SELECT 1 FROM devices WHERE device_id = ?",
                            (device_id,)).fetchone() is None:
                raise UnknownDeviceError(f"no device {device_id!r}.")
            row = conn.execute("SELECT version FROM pins WHERE model_id = ? AND device_id = ?",
                               (mid, device_id)).fetchone()
            previous = None if row is None else row[0]
            if version is None:
                if previous is not None:
                    conn.execute("DELETE FROM pins WHERE model_id = ? AND device_id = ?",
                                 (mid, device_id))
                    self._event(conn, mid, previous, now, actor, "unpin", device=device_id)
            else:
                status = self._status(conn, mid, version)
                conn.execute("INSERT INTO pins VALUES (?, ?, ?, ?) ON CONFLICT "
                             "(model_id, device_id) DO UPDATE SET version = excluded.version, "
                             "since = excluded.since", (mid, device_id, version, now))
                self._event(conn, mid, version, now, actor, "pin", status, status,
                            device=device_id, previous=previous)
            return {"device": device_id, "version": version, "previous": previous}
        return self._transaction(work)

    # ------------------------------------------------------------ device pulls
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
        now = float(self.clock())
        return self._transaction(lambda conn: self._resolve(conn, model, device_id, now))

    def _resolve(self, conn, model, device_id, now):
        mid = self._mid(conn, model)["model_id"]
        flags = {"pinned": False, "canary": False, "rollback": False, "digest": None,
                 "body": None}
        pin = conn.execute("SELECT version FROM pins WHERE model_id = ? AND device_id = ?",
                           (mid, device_id)).fetchone()
        active, canary, percent = self._rollout(conn, mid)
        if pin is not None:
            version, flags["pinned"] = pin[0], True
        elif canary is not None and in_cohort(model, device_id, percent):
            version, flags["canary"] = canary, True
        else:
            version = active
        if version is None:
            return None, flags
        served = conn.execute("SELECT version FROM served WHERE model_id = ? AND device_id = ?",
                              (mid, device_id)).fetchone()
        flags["rollback"] = served is not None and version < served[0]
        if served is None or served[0] != version:
            conn.execute("INSERT INTO served VALUES (?, ?, ?, ?) ON CONFLICT "
                         "(model_id, device_id) DO UPDATE SET version = excluded.version, "
                         "at = excluded.at", (mid, device_id, version, now))
        cv, body, digest = self._load_version(conn, mid, version)
        flags["digest"], flags["body"] = digest, body
        return cv, flags

    # ------------------------------------------------------------ telemetry
    def _decode_telemetry(self, body):
        from .aggregator import FrameTooLargeError

        if isinstance(body, (bytes, bytearray)) and len(body) > MAX_TELEMETRY_BYTES:
            raise FrameTooLargeError(f"telemetry of {len(body)} bytes exceeds "
                                     f"{MAX_TELEMETRY_BYTES}.")
        return decode_telemetry(body)

    def accept_telemetry(self, model, device_id, body):
        """Validate, deduplicate and record one telemetry summary (one transaction).

        Dedup is on ``(model, device, boot, seq)`` with the body's sha256, as
        for frames.  Returns ``{"status": "accepted" | "duplicate",
        "summary_id": [...], "version": v, "drift_score": s}``.  Raises
        :class:`~edgekm.sync.wire.telemetry.TelemetryError` (400),
        ``ForbiddenError``, ``UnknownModelError``, ``DimensionError``,
        ``ConflictError``.
        """
        from .aggregator import ForbiddenError

        summary = self._decode_telemetry(body)
        digest = hashlib.sha256(body).digest()
        now = float(self.clock())

        def work(conn):
            row = conn.execute("SELECT revoked FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is None or row[0] is not None:
                raise ForbiddenError(f"unknown or revoked device {device_id!r}")
            return self._accept_telemetry(conn, model, device_id, summary, digest, now)
        return self._transaction(work)

    def _accept_telemetry(self, conn, model, device_id, s, digest, now):
        from .aggregator import ConflictError, DimensionError, _signed64, check_sender

        check_sender("summary", s, model, device_id)
        row = self._mid(conn, model)
        mid = row["model_id"]
        k, d = s.sums.shape
        if d != row["n_features"]:
            raise DimensionError(f"the summary has {d} features; model {model!r} has "
                                 f"{row['n_features']}")
        key = (mid, device_id, _signed64(s.boot), s.seq)
        summary_id = [model, device_id, s.boot, s.seq]
        seen = conn.execute("SELECT digest FROM telemetry WHERE model_id = ? AND device_id = ? "
                            "AND boot = ? AND seq = ?", key).fetchone()
        result = {"status": "accepted", "summary_id": summary_id, "version": s.version,
                  "drift_score": s.drift_score}
        if seen is not None:
            if bytes(seen[0]) != digest:
                raise ConflictError(f"summary {summary_id} was accepted before with a "
                                    "different body")
            result["status"] = "duplicate"
            return result
        n_anomalies = int(s.anomalies.shape[0])
        conn.execute("INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                     "?)", key + (digest, now, s.version, s.window[0], s.window[1], s.n_points,
                                  s.raw_bytes, s.forwarded_bytes, n_anomalies, s.psi,
                                  s.drift_score, s.assign_latency_us))
        q = [float(x) for x in s.dist_quantiles]
        conn.execute(
            "INSERT INTO device_drift VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (model_id, device_id) DO UPDATE SET version = excluded.version, "
            "received = excluded.received, window_end = excluded.window_end, "
            "n_points = excluded.n_points, psi = excluded.psi, dist_p50 = excluded.dist_p50, "
            "dist_p95 = excluded.dist_p95, dist_p99 = excluded.dist_p99, "
            "drift_score = excluded.drift_score, compression = excluded.compression, "
            "assign_latency_us = excluded.assign_latency_us "
            "WHERE excluded.window_end >= device_drift.window_end",
            (mid, device_id, s.version, now, s.window[1], s.n_points, s.psi, q[0], q[1], q[2],
             s.drift_score, s.compression_ratio, s.assign_latency_us))
        conn.execute(
            "INSERT INTO telemetry_totals VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT (model_id) DO "
            "UPDATE SET summaries = summaries + 1, n_points = n_points + excluded.n_points, "
            "raw_bytes = raw_bytes + excluded.raw_bytes, "
            "forwarded_bytes = forwarded_bytes + excluded.forwarded_bytes, "
            "n_anomalies = n_anomalies + excluded.n_anomalies",
            (mid, s.n_points, s.raw_bytes, s.forwarded_bytes, n_anomalies))
        if s.version >= 1:
            vk = conn.execute("SELECT k FROM versions WHERE model_id = ? AND version = ?",
                              (mid, s.version)).fetchone()
            if vk is not None and vk[0] == k:
                usage = conn.execute("SELECT counts FROM version_usage WHERE model_id = ? AND "
                                     "version = ?", (mid, s.version)).fetchone()
                counts = np.asarray(s.counts, dtype="<f8")
                if usage is not None:
                    counts = counts + np.frombuffer(usage[0], dtype="<f8")
                conn.execute("INSERT INTO version_usage VALUES (?, ?, ?, ?) ON CONFLICT "
                             "(model_id, version) DO UPDATE SET counts = excluded.counts, "
                             "n_points = n_points + ?",
                             (mid, s.version, counts.astype("<f8").tobytes(), s.n_points,
                              s.n_points))
        if n_anomalies:
            a = np.ascontiguousarray(s.anomalies)
            code = a.dtype.newbyteorder("<").str
            conn.execute("INSERT INTO anomalies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         key + (s.version, now, n_anomalies, d, code,
                                a.astype(code).tobytes(),
                                np.asarray(s.anomaly_labels, dtype="<i4").tobytes(),
                                np.asarray(s.anomaly_scores, dtype="<f8").tobytes()))
        return result

    def anomalies(self, model, limit=100):
        """The most recent forwarded anomalies (newest first), as dicts with device,
        version, received, points (list of lists), labels and scores."""
        conn = self._reader()
        mid = self._mid(conn, model)["model_id"]
        out = []
        for r in conn.execute("SELECT device_id, version, received, n, d, dtype, points, labels, "
                              "scores FROM anomalies WHERE model_id = ? ORDER BY received DESC "
                              "LIMIT ?", (mid, int(limit))):
            out.append({"device": r[0], "version": r[1], "received": r[2],
                        "points": np.frombuffer(r[6], dtype=r[5]).reshape(r[3], r[4]).tolist(),
                        "labels": np.frombuffer(r[7], dtype="<i4").tolist(),
                        "scores": np.frombuffer(r[8], dtype="<f8").tolist()})
        return out

    # ------------------------------------------------------------ drift
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
              (largest gap to the training shares);
            - ``devices``: from each device's latest summary: ``reporting``,
              ``mean_drift_score``, ``max_drift_score``, ``mean_psi``,
              ``max_psi``, ``over_threshold`` (devices whose score reaches
              ``threshold``) and ``top`` (the ten highest scores);
            - ``telemetry``: summaries, points, raw and forwarded bytes,
              ``compression_ratio`` (forwarded / raw) and anomalies;
            - ``active``, ``canary``, ``canary_percent``.
        """
        with self._snapshot() as conn:
            mid = self._mid(conn, model)["model_id"]
            active, canary, percent = self._rollout(conn, mid)
            rows = _version_rows(conn, mid)
            docs = {r[0]: self._load_version(conn, mid, r[0])[0] for r in rows}
            usage = {v: np.frombuffer(c, dtype="<f8") for v, c in conn.execute(
                "SELECT version, counts FROM version_usage WHERE model_id = ?", (mid,))}
            policy = conn.execute("SELECT drift_threshold FROM publish_policies WHERE "
                                  "model_id = ?", (mid,)).fetchone()
            threshold = (policy[0] if policy is not None and policy[0] is not None
                         else DEFAULT_DRIFT_THRESHOLD)
            devices = conn.execute("SELECT device_id, version, drift_score, psi, received "
                                   "FROM device_drift WHERE model_id = ? "
                                   "ORDER BY drift_score DESC", (mid,)).fetchall()
            totals = conn.execute("SELECT summaries, n_points, raw_bytes, forwarded_bytes, "
                                  "n_anomalies FROM telemetry_totals WHERE model_id = ?",
                                  (mid,)).fetchone()

        def shares(w):
            total = float(np.sum(w))
            return (np.asarray(w, dtype=np.float64) / total) if total > 0 else np.zeros(len(w))

        versions = []
        for r in rows:
            info = _version_info(r, percent)
            cv = docs[r[0]]
            s = shares(cv.cluster_weights)
            info.update(new_clusters=list(cv.new_clusters),
                        vanished_clusters=list(cv.vanished_clusters),
                        shares=s.tolist(),
                        empty_clusters=[int(c) for c in np.flatnonzero(cv.cluster_weights <= 0)],
                        share_change=None, observed_shares=None, observed_share_change=None)
            if cv.parent in docs:
                p = shares(docs[cv.parent].cluster_weights)
                same = [c for c in range(min(len(s), len(p))) if c not in cv.new_clusters]
                if same:
                    info["share_change"] = float(np.max(np.abs(s[same] - p[same])))
            if r[0] in usage and usage[r[0]].sum() > 0:
                o = shares(usage[r[0]])
                info["observed_shares"] = o.tolist()
                info["observed_share_change"] = float(np.max(np.abs(o - s)))
            versions.append(info)
        scores = np.array([d[2] for d in devices], dtype=np.float64)
        psis = np.array([d[3] for d in devices], dtype=np.float64)
        report_devices = {
            "reporting": len(devices), "threshold": threshold,
            "mean_drift_score": float(scores.mean()) if len(scores) else None,
            "max_drift_score": float(scores.max()) if len(scores) else None,
            "mean_psi": float(psis.mean()) if len(psis) else None,
            "max_psi": float(psis.max()) if len(psis) else None,
            "over_threshold": int((scores >= threshold).sum()),
            "top": [{"device": d[0], "version": d[1], "drift_score": d[2], "psi": d[3],
                     "received": d[4]} for d in devices[:10]],
        }
        summaries, points, raw, forwarded, n_anom = totals if totals is not None else (0,) * 5
        return {
            "model": model, "active": active, "canary": canary,
            "canary_percent": percent if canary is not None else 0.0,
            "versions": versions, "devices": report_devices,
            "telemetry": {"summaries": summaries, "points": points, "raw_bytes": raw,
                          "forwarded_bytes": forwarded, "anomalies": n_anom,
                          "compression_ratio": forwarded / raw if raw else None},
        }

    # ------------------------------------------------------------ auto-publish
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
        every_seconds = _optional_positive("every_seconds", every_seconds)
        every_weight = _optional_positive("every_weight", every_weight)
        drift_threshold = _optional_positive("drift_threshold", drift_threshold)
        if windows is not None and (isinstance(windows, bool) or not isinstance(windows, int)
                                    or windows < 1):
            raise ValueError(f"windows must be None or an int >= 1; got {windows!r}.")
        self._check_actor(actor)
        now = float(self.clock())

        def work(conn):
            mid = self._mid(conn, model)["model_id"]
            if every_seconds is None and every_weight is None and drift_threshold is None:
                conn.execute("DELETE FROM publish_policies WHERE model_id = ?", (mid,))
                self._event(conn, mid, None, now, actor, "policy", removed=True)
                return None
            k = n_clusters
            if k is None:
                row = conn.execute("SELECT k FROM versions WHERE model_id = ? ORDER BY version "
                                   "DESC LIMIT 1", (mid,)).fetchone()
                if row is None:
                    raise ValueError("n_clusters is required while the model has no version.")
                k = row[0]
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"n_clusters must be an int >= 1; got {k!r}.")
            values = (every_seconds, every_weight, drift_threshold, int(k), windows,
                      int(n_init), random_state, now)
            conn.execute("INSERT OR REPLACE INTO publish_policies VALUES (?, ?, ?, ?, ?, ?, ?, "
                         "?, ?)", (mid,) + values)
            policy = dict(zip(("every_seconds", "every_weight", "drift_threshold",
                               "n_clusters", "windows", "n_init", "random_state", "since"),
                              values))
            self._event(conn, mid, None, now, actor, "policy", **policy)
            return policy
        return self._transaction(work)

    def publish_policy(self, model):
        """The model's auto-publish policy as a dict, or None."""
        conn = self._reader()
        mid = self._mid(conn, model)["model_id"]
        row = conn.execute("SELECT every_seconds, every_weight, drift_threshold, n_clusters, "
                           "windows, n_init, random_state, since FROM publish_policies "
                           "WHERE model_id = ?", (mid,)).fetchone()
        if row is None:
            return None
        return dict(zip(("every_seconds", "every_weight", "drift_threshold", "n_clusters",
                         "windows", "n_init", "random_state", "since"), row))

    def due_publications(self, now=None):
        """The models whose policy fires now: a list of ``(model, reason, policy)``.

        A cheap read (one query per policy), safe to call after every batch.
        """
        now = float(self.clock()) if now is None else float(now)
        with self._snapshot() as conn:
            due = []
            for (name, mid, total, every_s, every_w, thr, k, windows, n_init, seed,
                 since) in conn.execute(
                    "SELECT m.name, m.model_id, m.total_weight, p.every_seconds, "
                    "p.every_weight, p.drift_threshold, p.n_clusters, p.windows, p.n_init, "
                    "p.random_state, p.since FROM publish_policies p JOIN models m "
                    "ON m.model_id = p.model_id ORDER BY m.name").fetchall():
                last = conn.execute("SELECT created, model_weight FROM versions WHERE "
                                    "model_id = ? ORDER BY version DESC LIMIT 1",
                                    (mid,)).fetchone()
                last_time, last_weight = (since, 0.0) if last is None else last
                new_weight = total - last_weight
                if new_weight <= 0:
                    continue
                reason = None
                if every_s is not None and now - last_time >= every_s:
                    reason = f"every_seconds: {now - last_time:.0f} s since the last version"
                elif every_w is not None and new_weight >= every_w:
                    reason = f"every_weight: {new_weight:g} new weight"
                elif thr is not None:
                    mean = conn.execute("SELECT avg(drift_score) FROM device_drift WHERE "
                                        "model_id = ? AND received > ?",
                                        (mid, last_time)).fetchone()[0]
                    if mean is not None and mean >= thr:
                        reason = f"drift: mean device drift score {mean:.3g} >= {thr:g}"
                if reason is not None:
                    due.append((name, reason, {"n_clusters": k, "windows": windows,
                                               "n_init": n_init, "random_state": seed}))
        return due

    def run_publish_policies(self, now=None):
        """Publish every model whose policy fires; returns ``[(model, version, reason)]``.

        A model whose data cannot be fitted (too few points) is skipped and logged.
        """
        published = []
        for model, reason, params in self.due_publications(now):
            try:
                v = self.publish(model, params["n_clusters"], params["windows"],
                                 n_init=params["n_init"], random_state=params["random_state"],
                                 actor="policy", reason=reason)
            except (NotFittedError, ValueError) as exc:
                if isinstance(exc, EdgekmError) and not isinstance(exc, NotFittedError):
                    raise
                logger.warning("auto-publish of %s skipped: %s", model, exc)
                continue
            published.append((model, v, reason))
        return published

    # ------------------------------------------------------------ metrics
    def metrics_snapshot(self):
        """State for ``/metrics``, read in one snapshot: per model, the merged weight,
        frames, versions per status, the active version, devices with frames, the
        devices' drift and the telemetry totals."""
        with self._snapshot() as conn:
            models = {}
            for mid, name, total, n_frames in conn.execute(
                    "SELECT model_id, name, total_weight, n_frames FROM models"):
                models[mid] = {"model": name, "total_weight": total, "frames": n_frames,
                               "versions": dict.fromkeys(STATUSES, 0), "active": None,
                               "devices": 0, "drift_mean": None, "drift_max": None,
                               "over_threshold": 0, "raw_bytes": 0, "forwarded_bytes": 0,
                               "summaries": 0, "anomalies": 0}
            for mid, status, n in conn.execute("SELECT model_id, status, count(*) FROM versions "
                                               "GROUP BY model_id, status"):
                models[mid]["versions"][status] = n
            for mid, active in conn.execute("SELECT model_id, active FROM rollouts"):
                models[mid]["active"] = active
            for mid, n in conn.execute("SELECT model_id, count(DISTINCT device_id) FROM frames "
                                       "GROUP BY model_id"):
                models[mid]["devices"] = n
            thresholds = dict(conn.execute("SELECT model_id, drift_threshold FROM "
                                           "publish_policies WHERE drift_threshold IS NOT NULL"))
            for mid, mean, top in conn.execute("SELECT model_id, avg(drift_score), "
                                               "max(drift_score) FROM device_drift "
                                               "GROUP BY model_id"):
                thr = thresholds.get(mid, DEFAULT_DRIFT_THRESHOLD)
                over = conn.execute("SELECT count(*) FROM device_drift WHERE model_id = ? AND "
                                    "drift_score >= ?", (mid, thr)).fetchone()[0]
                models[mid].update(drift_mean=mean, drift_max=top, over_threshold=over)
            for mid, summaries, raw, forwarded, anomalies in conn.execute(
                    "SELECT model_id, summaries, raw_bytes, forwarded_bytes, n_anomalies "
                    "FROM telemetry_totals"):
                models[mid].update(summaries=summaries, raw_bytes=raw,
                                   forwarded_bytes=forwarded, anomalies=anomalies)
            devices = dict(conn.execute("SELECT revoked IS NOT NULL, count(*) FROM devices "
                                        "GROUP BY revoked IS NOT NULL"))
        return {"models": list(models.values()),
                "devices": {"active": devices.get(0, 0), "revoked": devices.get(1, 0)}}

