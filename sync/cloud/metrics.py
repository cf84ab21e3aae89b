"""Prometheus metrics of one aggregator app (``GET /metrics``), with prometheus-client.

Each app has its own :class:`prometheus_client.CollectorRegistry`, so that
several apps in one process (the tests) never share a counter.  Two kinds of
metric:

- **events** counted by the HTTP layer *after* the request's transaction has
  committed (frames accepted, rejected by reason, accept latency, telemetry,
  pulls, the assignment latency devices report): an increment costs well
  under a microsecond and never runs under the database lock;
- **state** read from the database at scrape time, in one read snapshot on
  a reader connection (merged weight, versions per status, devices seen,
  drift per model), cached for ``state_ttl`` seconds so that frequent
  scrapes cost one snapshot.

Nothing here ever exposes a key or a token.
"""

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

#: accept latency buckets, in seconds (a group commit with fsync is ~1-20 ms)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0)
#: device assignment latency buckets, in microseconds per point
ASSIGN_BUCKETS_US = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 100.0, 1000.0)


class _StateCollector:
    """Gauges computed from :meth:`Aggregator.metrics_snapshot` at scrape time."""

    def __init__(self, aggregator, ttl):
        self.aggregator = aggregator
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached = (float("-inf"), None)

    def _snapshot(self):
        with self._lock:
            at, snap = self._cached
            now = time.monotonic()
            if snap is None or now - at >= self.ttl:
                snap = self.aggregator.metrics_snapshot()
                self._cached = (now, snap)
            return snap

    def describe(self):
        return []           # the families depend on the data: collected at scrape time only

    def collect(self):
        try:
            snap = self._snapshot()
        except Exception:   # noqa: BLE001 - a closed or broken database: report only the counters
            return
        weight = GaugeMetricFamily("edgekm_merged_weight", "All-time merged weight of a model "
                                   "(the number of raw points its frames stand for).",
                                   labels=["model"])
        frames = GaugeMetricFamily("edgekm_model_frames", "Frames merged into a model.",
                                   labels=["model"])
        versions = GaugeMetricFamily("edgekm_versions", "Centroid versions of a model by status.",
                                     labels=["model", "status"])
        active = GaugeMetricFamily("edgekm_active_version", "The id of a model's active version "
                                   "(0: none).", labels=["model"])
        seen = GaugeMetricFamily("edgekm_devices_seen", "Devices that have uploaded frames to "
                                 "a model.", labels=["model"])
        drift = GaugeMetricFamily("edgekm_drift_score", "Drift score from each device's latest "
                                  "telemetry summary: mean and max over devices.",
                                  labels=["model", "stat"])
        over = GaugeMetricFamily("edgekm_devices_drifting", "Devices whose latest drift score "
                                 "reaches the model's threshold (default 1).", labels=["model"])
        ratio = GaugeMetricFamily("edgekm_telemetry_compression_ratio", "Bytes forwarded by "
                                  "devices over the raw bytes they summarised.", labels=["model"])
        devices = GaugeMetricFamily("edgekm_devices_registered", "Registered devices.",
                                    labels=["state"])
        gate = CounterMetricFamily("edgekm_canary_gate_actions", "Canaries the gate withdrew "
                                   "(abort) or promoted (promote) on their cohort's behaviour.",
                                   labels=["model", "action"])
        for m in snap["models"]:
            name = m["model"]
            weight.add_metric([name], m["total_weight"])
            frames.add_metric([name], m["frames"])
            for status, n in m["versions"].items():
                versions.add_metric([name, status], n)
            active.add_metric([name], m["active"] or 0)
            seen.add_metric([name], m["devices"])
            if m["drift_mean"] is not None:
                drift.add_metric([name, "mean"], m["drift_mean"])
                drift.add_metric([name, "max"], m["drift_max"])
            over.add_metric([name], m["over_threshold"])
            for action, n in m["gate_actions"].items():
                gate.add_metric([name, action], n)
            if m["raw_bytes"]:
                ratio.add_metric([name], m["forwarded_bytes"] / m["raw_bytes"])
        for state, n in snap["devices"].items():
            devices.add_metric([state], n)
        yield from (weight, frames, versions, active, seen, drift, over, ratio, devices, gate)


class _TableCollector:
    """``edgekm_db_rows{table}``: row counts of the tables that grow with use, cached for
    ``ttl`` seconds (capacity alerts: they stay bounded when compaction runs)."""

    def __init__(self, aggregator, ttl):
        self.aggregator = aggregator
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached = (float("-inf"), None)

    def describe(self):
        return []

    def collect(self):
        with self._lock:
            at, rows = self._cached
            now = time.monotonic()
            if rows is None or now - at >= self.ttl:
                try:
                    rows = self.aggregator.table_rows()
                except Exception:   # noqa: BLE001 - a closed or broken database
                    return
                self._cached = (now, rows)
        family = GaugeMetricFamily("edgekm_db_rows", "Rows of the aggregator tables that grow "
                                   "with use.", labels=["table"])
        for table, n in rows.items():
            family.add_metric([table], n)
        yield family


class Metrics:
    """The metrics of one app.

    Parameters
    ----------
    aggregator : Aggregator
        Read at scrape time for the state gauges.
    state_ttl : float, default=5.0
        Seconds during which a scrape reuses the last database snapshot.
    """

    def __init__(self, aggregator, *, state_ttl=5.0):
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.frames_accepted = Counter("edgekm_frames_accepted", "Frames merged (status "
                                       "accepted).", ["model"], registry=r)
        self.frames_duplicate = Counter("edgekm_frames_duplicate", "Frames acknowledged as "
                                        "duplicates (nothing merged).", ["model"], registry=r)
        self.frames_rejected = Counter("edgekm_frames_rejected", "Frame uploads answered with "
                                       "an error, by reason code.", ["reason"], registry=r)
        self.accept_latency = Histogram("edgekm_accept_latency_seconds", "Time from a frame "
                                        "upload's arrival to its committed answer.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.telemetry = Counter("edgekm_telemetry_summaries", "Telemetry summaries by status "
                                 "(accepted, duplicate, or the error reason).",
                                 ["status"], registry=r)
        self.pulls = Counter("edgekm_centroid_pulls", "Centroid pulls by answer "
                             "(200, 304, no_version, or the error reason).", ["result"],
                             registry=r)
        self.assign_latency = Histogram("edgekm_device_assign_latency_microseconds",
                                        "Assignment latency per point reported by devices in "
                                        "their telemetry summaries.", ["model"],
                                        buckets=ASSIGN_BUCKETS_US, registry=r)
        self.published = Counter("edgekm_versions_published", "Versions published, by actor.",
                                 ["model", "actor"], registry=r)
        self.clipped = Counter("edgekm_weight_clipped", "Weight removed from accepted frames "
                               "by the clip policy of the per-device weight cap.", ["model"],
                               registry=r)
        self.compactions = Counter("edgekm_compactions", "Compaction runs (timer or admin call).",
                                   registry=r)
        self.compacted = Counter("edgekm_compacted_items", "Items compacted, by kind: windows "
                                 "merged into the compacted tree, frame and telemetry dedup "
                                 "rows collapsed into seq runs, anomalies deleted.", ["kind"],
                                 registry=r)
        r.register(_StateCollector(aggregator, state_ttl))
        r.register(_TableCollector(aggregator, state_ttl))

    def compaction(self, stats):
        """Count one compaction run from the stats :meth:`Aggregator.compact` returns."""
        self.compactions.inc()
        for kind in ("windows_compacted", "frames_collapsed", "telemetry_collapsed",
                     "anomalies_deleted"):
            self.compacted.labels(kind).inc(stats.get(kind, 0))

    def frame_result(self, model, result, seconds):
        if result.get("status") == "accepted":
            self.frames_accepted.labels(model).inc()
            if result.get("clipped_weight"):
                self.clipped.labels(model).inc(result["clipped_weight"])
        else:
            self.frames_duplicate.labels(model).inc()
        self.accept_latency.observe(seconds)

    def frame_rejected(self, reason, seconds):
        self.frames_rejected.labels(reason).inc()
        self.accept_latency.observe(seconds)

    def telemetry_result(self, model, status, assign_latency_us=None):
        self.telemetry.labels(status).inc()
        if assign_latency_us is not None and assign_latency_us > 0:
            self.assign_latency.labels(model).observe(assign_latency_us)

    def render(self):
        """``(body bytes, content type)`` in the Prometheus text format."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
