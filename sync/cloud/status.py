"""Read-only state of the whole aggregator, for ``/metrics`` and capacity checks."""

from .versions import DEFAULT_DRIFT_THRESHOLD, STATUSES

__all__ = ["metrics_snapshot", "table_rows"]


def table_rows(conn):
    """Row counts of the tables that grow with use (for metrics and capacity checks)."""
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("frames", "seq_ranges", "buckets", "windows", "device_windows",
                      "telemetry", "anomalies", "nonces", "version_events")}


def metrics_snapshot(db):
    """State for ``/metrics``, read in one snapshot: per model, the merged weight,
    frames, versions per status, the active version, devices with frames, the
    devices' drift and the telemetry totals."""
    with db.snapshot() as conn:
        models = {}
        for mid, name, total, n_frames in conn.execute(
                "SELECT model_id, name, total_weight, n_frames FROM models"):
            models[mid] = {"model": name, "total_weight": total, "frames": n_frames,
                           "versions": dict.fromkeys(STATUSES, 0), "active": None,
                           "devices": 0, "drift_mean": None, "drift_max": None,
                           "over_threshold": 0, "raw_bytes": 0, "forwarded_bytes": 0,
                           "summaries": 0, "anomalies": 0,
                           "gate_actions": {"abort": 0, "promote": 0}}
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
        for mid, action, n in conn.execute(
                "SELECT model_id, action, count(*) FROM version_events WHERE actor = 'gate' "
                "AND new_status IN ('candidate', 'active') GROUP BY model_id, action"):
            models[mid]["gate_actions"][action] = n
        devices = dict(conn.execute("SELECT revoked IS NOT NULL, count(*) FROM devices "
                                    "GROUP BY revoked IS NOT NULL"))
    return {"models": list(models.values()),
            "devices": {"active": devices.get(0, 0), "revoked": devices.get(1, 0)}}
