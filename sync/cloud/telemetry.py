"""Telemetry on the aggregator: device summaries, forwarded anomalies and the drift report."""

import hashlib

import numpy as np

from edgekm.drift import drift_test
from edgekm.exceptions import ConflictError, DimensionError, ForbiddenError, FrameTooLargeError

from edgekm.sync.wire.telemetry import MAX_TELEMETRY_BYTES, decode_telemetry

from .._sqlite import to_sql_u64
from .database import in_ranges, model_row, require_model
from .versions import DEFAULT_DRIFT_THRESHOLD, _version_info, _version_rows, rollout_row

__all__ = ["Telemetry", "check_sender"]


def check_sender(what, item, model, device_id):
    """An upload (frame or summary) must name the signing device and the URL's model."""
    if item.device != device_id:
        raise ForbiddenError(f"the {what} is from device {item.device!r} but the request is "
                             f"signed by {device_id!r}")
    if item.model != model:
        raise ForbiddenError(f"the {what} is for model {item.model!r} but was sent to "
                             f"model {model!r}")


_POOLED = ("counts", "beyond", "sums", "sumsq")


def _pool_drift(conn, mid, s):
    """Add a v2 summary's drift statistics to its version's pooled row (``version_drift``)."""
    add = [np.asarray(a, dtype="<f8") for a in (s.counts, s.beyond_p99, s.sums, s.sumsq)]
    row = conn.execute("SELECT counts, beyond, sums, sumsq FROM version_drift WHERE "
                       "model_id = ? AND version = ?", (mid, s.version)).fetchone()
    if row is not None:
        add = [a + np.frombuffer(b, dtype="<f8").reshape(a.shape) for a, b in zip(add, row)]
    conn.execute("INSERT INTO version_drift VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT "
                 "(model_id, version) DO UPDATE SET counts = excluded.counts, "
                 "beyond = excluded.beyond, sums = excluded.sums, sumsq = excluded.sumsq, "
                 "n_points = version_drift.n_points + excluded.n_points, "
                 "summaries = version_drift.summaries + 1",
                 (mid, s.version, *(a.astype("<f8").tobytes() for a in add), s.n_points))


def pooled_drift(conn, mid, version, cv):
    """The drift test of every v2 summary pooled for ``version`` (its document ``cv``), or
    None before the first: :func:`edgekm.drift.drift_test` plus ``points`` and
    ``summaries``."""
    row = conn.execute("SELECT counts, beyond, sums, sumsq, n_points, summaries FROM "
                       "version_drift WHERE model_id = ? AND version = ?",
                       (mid, version)).fetchone()
    if row is None:
        return None
    k, d = cv.centers.shape
    counts, beyond = (np.frombuffer(b, dtype="<f8") for b in row[:2])
    sums, sumsq = (np.frombuffer(b, dtype="<f8").reshape(k, d) for b in row[2:4])
    test = drift_test(counts, beyond, sums, sumsq, cv.centers, cv.cluster_weights,
                      scale=cv.quantiles[:, -1])
    return {"drift_score": test["drift_score"], "drift_terms": test["drift_terms"],
            "cluster": test["cluster"], "points": row[4], "summaries": row[5],
            "beyond_p99": float(beyond.sum() / counts.sum()) if counts.sum() > 0 else None}


class Telemetry:
    """Accepts telemetry summaries and reports anomalies and drift.

    Examples
    --------
    >>> import os, tempfile
    >>> from edgekm.sync import Aggregator
    >>> agg = Aggregator(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> agg.add_model("m", 2)
    >>> agg.telemetry.anomalies("m")
    []
    >>> agg.close()
    """

    def __init__(self, db, versions, *, clock, gate=None):
        self.db = db
        self.versions = versions
        self.clock = clock
        self.gate = gate

    def decode(self, body):
        if isinstance(body, (bytes, bytearray)) and len(body) > MAX_TELEMETRY_BYTES:
            raise FrameTooLargeError(f"telemetry of {len(body)} bytes exceeds "
                                     f"{MAX_TELEMETRY_BYTES}.")
        return decode_telemetry(body)

    def accept_telemetry(self, model, device_id, body):
        """:meth:`Aggregator.accept_telemetry <edgekm.sync.cloud.aggregator.Aggregator.accept_telemetry>`."""
        summary = self.decode(body)
        digest = hashlib.sha256(body).digest()
        now = float(self.clock())

        def work(conn):
            row = conn.execute("SELECT revoked FROM devices WHERE device_id = ?",
                               (device_id,)).fetchone()
            if row is None or row[0] is not None:
                raise ForbiddenError(f"unknown or revoked device {device_id!r}")
            return self.accept_decoded(conn, model, device_id, summary, digest, now)
        return self.db.transaction(work)

    def accept_decoded(self, conn, model, device_id, s, digest, now):
        """Inside a transaction: check, deduplicate and record one decoded summary."""
        check_sender("summary", s, model, device_id)
        row = model_row(conn, model)
        if row is not None:     # a summary whose dedup row compaction collapsed: a duplicate
            key = (row["model_id"], device_id, to_sql_u64(s.boot), s.seq)
            if in_ranges(conn, "telemetry", key):
                return {"status": "duplicate", "summary_id": [model, device_id, s.boot, s.seq],
                        "version": s.version, "drift_score": s.drift_score, "collapsed": True}
        row = require_model(conn, model)
        mid = row["model_id"]
        k, d = s.sums.shape
        if d != row["n_features"]:
            raise DimensionError(f"the summary has {d} features; model {model!r} has "
                                 f"{row['n_features']}")
        key = (mid, device_id, to_sql_u64(s.boot), s.seq)
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
            "UPDATE SET summaries = telemetry_totals.summaries + 1, "
            "n_points = telemetry_totals.n_points + excluded.n_points, "
            "raw_bytes = telemetry_totals.raw_bytes + excluded.raw_bytes, "
            "forwarded_bytes = telemetry_totals.forwarded_bytes + excluded.forwarded_bytes, "
            "n_anomalies = telemetry_totals.n_anomalies + excluded.n_anomalies",
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
                             "n_points = version_usage.n_points + ?",
                             (mid, s.version, counts.astype("<f8").tobytes(), s.n_points,
                              s.n_points))
                if s.beyond_p99 is not None:
                    _pool_drift(conn, mid, s)
                    if self.gate is not None:
                        active, canary, _ = rollout_row(conn, mid)
                        acted = self.gate.observe(conn, mid, s, now, active, canary)
                        if acted is not None:
                            result["gate"] = acted
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
        """:meth:`Aggregator.anomalies <edgekm.sync.cloud.aggregator.Aggregator.anomalies>`."""
        conn = self.db.reader()
        mid = require_model(conn, model)["model_id"]
        out = []
        for r in conn.execute("SELECT device_id, version, received, n, d, dtype, points, labels, "
                              "scores FROM anomalies WHERE model_id = ? ORDER BY received DESC "
                              "LIMIT ?", (mid, int(limit))):
            out.append({"device": r[0], "version": r[1], "received": r[2],
                        "points": np.frombuffer(r[6], dtype=r[5]).reshape(r[3], r[4]).tolist(),
                        "labels": np.frombuffer(r[7], dtype="<i4").tolist(),
                        "scores": np.frombuffer(r[8], dtype="<f8").tolist()})
        return out

    def drift(self, model):
        """:meth:`Aggregator.drift <edgekm.sync.cloud.aggregator.Aggregator.drift>`."""
        with self.db.snapshot() as conn:
            mid = require_model(conn, model)["model_id"]
            active, canary, percent = rollout_row(conn, mid)
            rows = _version_rows(conn, mid)
            docs = {r[0]: self.versions.load(conn, mid, r[0])[0] for r in rows}
            usage = {v: np.frombuffer(c, dtype="<f8") for v, c in conn.execute(
                "SELECT version, counts FROM version_usage WHERE model_id = ?", (mid,))}
            pooled = {r[0]: pooled_drift(conn, mid, r[0], docs[r[0]]) for r in rows}
            gate = None if self.gate is None else self.gate.report(conn, mid, canary, active)
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
                        share_change=None, observed_shares=None, observed_share_change=None,
                        pooled_drift=pooled[r[0]])
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
            "canary_gate": gate, "versions": versions, "devices": report_devices,
            "telemetry": {"summaries": summaries, "points": points, "raw_bytes": raw,
                          "forwarded_bytes": forwarded, "anomalies": n_anom,
                          "compression_ratio": forwarded / raw if raw else None},
        }
