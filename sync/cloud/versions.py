"""Centroid versions on the aggregator: publishing, stable labels, rollout, drift.

Everything here runs on the aggregator (it needs scipy); devices only decode
what :func:`~edgekm.sync.wire.version.encode_version` produced.  :class:`Versions`
publishes and reads versions; the rollout (:mod:`.rollout`), the telemetry
(:mod:`.telemetry`) and the publish policies (:mod:`.policies`) are services
built on it, composed by :class:`~edgekm.sync.cloud.aggregator.Aggregator`.
The pure functions (:func:`match_labels`, :func:`cohort_bucket`) are what the
tests pin down.  The solve itself (k-means, trimmed
k-means, cluster statistics) is the core's, in :mod:`edgekm.solve`.

**Publishing** fits centres on the aggregate with the aggregate's own solver
(:meth:`edgekm.Coreset.fit_centers`), assigns every weighted point of the
aggregate to its nearest centre and takes, per cluster, the weight and the
p50/p95/p99 of the squared distance (the anomaly thresholds) from the
aggregate's spread (:func:`edgekm.solve.cluster_statistics`: each coreset
point stands for its leaf's data, mean plus spread, and every quantile is at
least a positive floor, so no device score is infinite).  An aggregate without
spread (frames v1) gives the quantiles of the representatives alone, too tight.  The
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
import math
import threading
from collections import OrderedDict

import numpy as np

from edgekm.coreset import Coreset
from edgekm._validation import CONSTRAINTS, Options, validate_params
from edgekm.exceptions import RolloutError, UnknownVersionError

from edgekm.solve import cluster_statistics, fit_centers
from edgekm.sync.wire.version import CentroidVersion, decode_version, encode_version

from .database import require_model

__all__ = ["Versions", "RolloutError", "UnknownVersionError", "STATUSES",
           "cohort_bucket", "in_cohort", "match_labels", "DEFAULT_DRIFT_THRESHOLD"]

STATUSES = ("candidate", "canary", "active", "retired")
#: cohort buckets: a device is in a canary of ``percent`` when its bucket < round(percent * 100)
COHORT_BUCKETS = 10_000
#: devices whose latest drift score reaches this count as drifting (when no policy sets
#: one); the device filter documents a score of 1 or more as drift
DEFAULT_DRIFT_THRESHOLD = 1.0
ACTORS = ("api", "cli", "http", "policy", "gate")
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


# ---------------------------------------------------------------- rollout rows and events


def rollout_row(conn, mid):
    row = conn.execute("SELECT active, canary, canary_percent FROM rollouts "
                       "WHERE model_id = ?", (mid,)).fetchone()
    return (None, None, 0.0) if row is None else row


def set_rollout(conn, mid, active, canary, percent, now):
    conn.execute("INSERT INTO rollouts (model_id, active, canary, canary_percent, updated) "
                 "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model_id) DO UPDATE SET "
                 "active = excluded.active, canary = excluded.canary, "
                 "canary_percent = excluded.canary_percent, updated = excluded.updated",
                 (mid, active, canary, percent, now))


def status_of(conn, mid, version):
    row = conn.execute("SELECT status FROM versions WHERE model_id = ? AND version = ?",
                       (mid, version)).fetchone()
    if row is None:
        raise UnknownVersionError(f"no version {version!r}.")
    return row[0]


def record_event(conn, mid, version, now, actor, action, old=None, new=None, **detail):
    conn.execute("INSERT INTO version_events (model_id, version, at, actor, action, "
                 "old_status, new_status, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (mid, version, now, actor, action, old, new,
                  json.dumps(detail, sort_keys=True) if detail else None))


def set_status(conn, mid, version, new, now, actor, action, **detail):
    old = status_of(conn, mid, version)
    if old != new:
        conn.execute("UPDATE versions SET status = ? WHERE model_id = ? AND version = ?",
                     (new, mid, version))
    record_event(conn, mid, version, now, actor, action, old, new, **detail)


def check_actor(actor):
    validate_params({"actor": actor}, {"actor": Options(ACTORS)})
    return actor


def check_version_id(version):
    if not CONSTRAINTS["version"].is_satisfied_by(version):
        raise UnknownVersionError(f"no version {version!r}.")
    return int(version)


def push_active(conn, mid, version, now):
    top = conn.execute("SELECT max(position) FROM active_history WHERE model_id = ?",
                       (mid,)).fetchone()[0]
    conn.execute("INSERT INTO active_history VALUES (?, ?, ?, ?)",
                 (mid, 0 if top is None else top + 1, version, now))


# ---------------------------------------------------------------- the service


class Versions:
    """Publishing and reading centroid versions (see the module docstring).

    Holds the database, the trees (for :meth:`publish`'s aggregate) and a small
    cache of decoded versions (they are immutable).

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync import Aggregator
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> agg.add_model("m", 2)
    >>> agg.versions_service.versions("m")
    []
    >>> agg.close()
    """

    def __init__(self, db, trees, *, clock, publish_trim=0.0):
        self.db = db
        self.trees = trees
        self.clock = clock
        self.publish_trim = publish_trim
        self._cache = OrderedDict()
        self._cache_lock = threading.Lock()

    def load(self, conn, mid, version):
        """(CentroidVersion, body, digest) of a stored version, cached (immutable)."""
        cache, lock = self._cache, self._cache_lock
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

    def publish(self, model, n_clusters, windows=None, *, n_init=10, random_state=0,
                actor="api", reason=None, trim=None):
        """:meth:`Aggregator.publish <edgekm.sync.cloud.aggregator.Aggregator.publish>`."""
        validate_params({"n_clusters": n_clusters})
        check_actor(actor)
        trim = self.publish_trim if trim is None else trim
        validate_params({"trim": trim})
        coreset = self.trees.aggregate(model, windows)            # a read snapshot
        centers, _, cost = fit_centers(coreset, int(n_clusters), trim=trim, n_init=n_init,
                                       random_state=random_state)
        return self._store_version(model, centers, coreset, cost, windows, actor, reason)

    def publish_centers(self, model, centers, coreset=None, *, actor="api", reason=None):
        """:meth:`Aggregator.publish_centers <edgekm.sync.cloud.aggregator.Aggregator.publish_centers>`."""
        check_actor(actor)
        info = require_model(self.db.reader(), model)
        C = np.asarray(centers)
        if C.ndim != 2 or C.shape[0] < 1 or C.dtype.kind not in "iuf" \
                or not np.isfinite(C).all():
            raise ValueError("centers must be a finite 2-D numeric array with at least one "
                             f"row; got shape {C.shape} of {C.dtype}.")
        if C.shape[1] != info["n_features"]:
            raise ValueError(f"centers have {C.shape[1]} features; model {model!r} has "
                             f"{info['n_features']}.")
        if coreset is None:
            coreset = self.trees.aggregate(model)
        elif not isinstance(coreset, Coreset):
            raise TypeError(f"coreset must be an edgekm.Coreset or None; "
                            f"got {type(coreset).__name__}.")
        if coreset.n_features != C.shape[1]:
            raise ValueError(f"the coreset has {coreset.n_features} features; the centers "
                             f"have {C.shape[1]}.")
        dtype = np.dtype(info["dtype"]).newbyteorder("=")
        if coreset.dtype != dtype:           # versions hold the model's dtype
            coreset = Coreset(coreset.points.astype(dtype), coreset.weights, level=coreset.level,
                              spread=coreset.spread)
        C = np.ascontiguousarray(C, dtype=dtype)
        return self._store_version(model, C, coreset, coreset.cost(C), None, actor, reason)

    def _store_version(self, model, centers, coreset, cost, windows, actor, reason):
        """Label, summarise (weights, quantiles on ``coreset`` and its spread) and store one
        version."""
        centers = np.ascontiguousarray(centers, dtype=coreset.points.dtype)
        k = centers.shape[0]
        fit_weights, fit_quantiles = cluster_statistics(coreset, centers)
        training_weight = float(coreset.total_weight)
        now = float(self.clock())

        def work(conn):
            row = require_model(conn, model)
            mid = row["model_id"]
            active, canary, percent = rollout_row(conn, mid)
            latest = conn.execute("SELECT max(version) FROM versions WHERE model_id = ?",
                                  (mid,)).fetchone()[0]
            parent = active if active is not None else latest
            parent_centers = None
            if parent is not None:
                parent_centers = self.load(conn, mid, parent)[0].centers
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
            record_event(conn, mid, version, now, actor, "publish", None, status, **detail)
            if status == "active":
                push_active(conn, mid, version, now)
                set_rollout(conn, mid, version, canary, percent, now)
            return version
        return self.db.transaction(work)

    def versions(self, model):
        """:meth:`Aggregator.versions <edgekm.sync.cloud.aggregator.Aggregator.versions>`."""
        with self.db.snapshot() as conn:
            mid = require_model(conn, model)["model_id"]
            _, _, percent = rollout_row(conn, mid)
            rows = _version_rows(conn, mid)
        return [_version_info(r, percent) for r in rows]

    def version(self, model, version):
        """The stored :class:`~edgekm.sync.wire.version.CentroidVersion` (digest checked)."""
        version = check_version_id(version)
        conn = self.db.reader()
        return self.load(conn, require_model(conn, model)["model_id"], version)[0]

    def version_body(self, model, version):
        """``(body, digest)``: the exact bytes devices download for this version."""
        version = check_version_id(version)
        conn = self.db.reader()
        _, body, digest = self.load(conn, require_model(conn, model)["model_id"], version)
        return body, digest

    def version_events(self, model, limit=None):
        """:meth:`Aggregator.version_events <edgekm.sync.cloud.aggregator.Aggregator.version_events>`."""
        conn = self.db.reader()
        mid = require_model(conn, model)["model_id"]
        sql = ("SELECT event_id, version, at, actor, action, old_status, new_status, detail "
               "FROM version_events WHERE model_id = ? ORDER BY event_id")
        rows = conn.execute(sql, (mid,)).fetchall()
        if limit is not None:
            rows = rows[-int(limit):]
        return [{"event": r[0], "version": r[1], "at": r[2], "actor": r[3], "action": r[4],
                 "old_status": r[5], "new_status": r[6],
                 "detail": json.loads(r[7]) if r[7] else {}} for r in rows]
