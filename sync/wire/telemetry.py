"""Telemetry summaries on the wire (v2, and v1): what an EdgeFilter sends up with each sync.

One summary covers one window of a device's stream under one centroid
version: per cluster the weight, sum and sum of squares of the points
assigned to it, the raw points of anomalies, the bytes it replaced, and the
device's drift statistics.  A msgpack map with raw little-endian arrays,
validated as hostile input like coreset frames (``sync/frame.py``); every
failure raises :class:`TelemetryError`.  Device-side: numpy and msgpack only.

v2 adds one key to v1, ``beyond_p99``: per cluster, the points beyond the cluster's p99
(what the aggregator needs to pool the devices' drift tests, :mod:`edgekm.drift`).  The
decoder accepts both (a v1 summary decodes with ``beyond_p99=None``); the encoder writes
v2, or v1 for a summary whose ``beyond_p99`` is None (a v1 summary re-encodes to its bytes).
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from edgekm._defaults import MAX_ANOMALIES
from edgekm.exceptions import EdgekmError, TelemetryError
from edgekm.filter import WindowSummary

from ._codec import DTYPES, MAX_FEATURES, Codec, accepts, check_id, is_int, pack_array

TELEMETRY_SCHEMA = 2
TELEMETRY_SCHEMAS = (1, 2)
KIND_TELEMETRY = "telemetry"
MAX_TELEMETRY_BYTES = 8 * 1024 * 1024
MAX_CLUSTERS = 4096

_FIELDS_V1 = {
    "v": int, "kind": str, "model": str, "device": str, "boot": int, "seq": int,
    "window": list, "version": int, "k": int, "d": int, "dtype": str,
    "counts": bytes, "sums": bytes, "sumsq": bytes, "n_points": int,
    "raw_bytes": int, "forwarded_bytes": int, "n_anomalies": int, "anomalies_dropped": int,
    "anomalies": bytes, "anomaly_labels": bytes, "anomaly_scores": bytes,
    "psi": (float, int), "dist_quantiles": bytes, "drift_score": (float, int),
    "assign_latency_us": (float, int),
}
#: v2: v1's keys and ``beyond_p99``
_FIELDS = {**_FIELDS_V1, "beyond_p99": bytes}
_FIELDS_BY_VERSION = {1: _FIELDS_V1, 2: _FIELDS}


@dataclass(frozen=True, eq=False)
class TelemetrySummary(WindowSummary):
    """One window's summary on the wire: the fields of :class:`edgekm.filter.WindowSummary`
    (one window of an EdgeFilter), plus ``forwarded_bytes``, the length of its encoding.
    Arrays are read-only, float64 unless stated.

    counts (k,), sums (k, d), sumsq (k, d): per-cluster weight, sum and sum of
    squares of the points assigned to each cluster.  anomalies (a, d) in
    ``dtype``, anomaly_labels (a,) int32, anomaly_scores (a,).
    anomalies_dropped: anomalies over the device's per-window cap, counted
    but not forwarded.  dist_quantiles (3,): the window's p50/p95/p99 of squared assignment
    distance.  psi: population stability index of the cluster shares against
    the version's training shares.  drift_score: the device's calibrated score
    (see ``edgekm.filter``).  beyond_p99 (k,): per cluster, the points beyond its
    p99 (None from a v1 summary).  ``version`` is 0 when no version was in use.
    """

    forwarded_bytes: int = 0

    @property
    def compression_ratio(self):
        """Bytes forwarded / raw bytes replaced (0 when nothing was seen)."""
        return self.forwarded_bytes / self.raw_bytes if self.raw_bytes else 0.0


def summarize(window):
    """The wire summary of an :class:`edgekm.filter.WindowSummary` (an EdgeFilter's window).

    The same fields, plus ``forwarded_bytes``: the exact length of the encoded summary.
    The length is part of the encoding, so it encodes until the length is stable (two or
    three times).  Pass this function as ``EdgeFilter(..., summarize=summarize)``.
    """
    fields = {f.name: getattr(window, f.name) for f in dataclasses.fields(WindowSummary)}
    size = 0
    for _ in range(8):                       # the size is part of the encoding
        summary = TelemetrySummary(forwarded_bytes=size, **fields)
        new = len(encode_telemetry(summary))
        if new == size:
            return summary
        size = new
    raise AssertionError("forwarded_bytes did not settle")   # pragma: no cover


def encode_telemetry(s):
    """Encode a :class:`TelemetrySummary` (validated like the decoder); returns bytes: v2, or
    v1 when ``beyond_p99`` is None."""
    anomalies = np.ascontiguousarray(s.anomalies)
    code = anomalies.dtype.newbyteorder("<").str
    k, d = np.shape(s.sums)
    body = {
        "v": TELEMETRY_SCHEMA, "kind": KIND_TELEMETRY, "model": s.model, "device": s.device,
        "boot": int(s.boot), "seq": int(s.seq),
        "window": [float(s.window[0]), float(s.window[1])], "version": int(s.version),
        "k": int(k), "d": int(d), "dtype": code,
        "counts": pack_array(s.counts, "<f8"),
        "sums": pack_array(s.sums, "<f8"),
        "sumsq": pack_array(s.sumsq, "<f8"),
        "n_points": int(s.n_points), "raw_bytes": int(s.raw_bytes),
        "forwarded_bytes": int(s.forwarded_bytes), "n_anomalies": int(anomalies.shape[0]),
        "anomalies_dropped": int(s.anomalies_dropped),
        "anomalies": pack_array(anomalies, code),
        "anomaly_labels": pack_array(s.anomaly_labels, "<i4"),
        "anomaly_scores": pack_array(s.anomaly_scores, "<f8"),
        "psi": float(s.psi),
        "dist_quantiles": pack_array(s.dist_quantiles, "<f8"),
        "drift_score": float(s.drift_score), "assign_latency_us": float(s.assign_latency_us),
    }
    if s.beyond_p99 is None:        # a summary without the v2 statistics stays v1
        body["v"] = 1
    else:
        body["beyond_p99"] = pack_array(s.beyond_p99, "<f8")
    data = _CODEC.pack(body)
    decode_telemetry(data)
    return data


def _fields_of(body):
    """The field table of the schema version ``body`` names (v2's for anything else)."""
    v = body.get("v")
    return _FIELDS_BY_VERSION.get(v, _FIELDS) if is_int(v) else _FIELDS


class _TelemetryCodec(Codec):
    """The telemetry summary's codec: its limits and its wording (see :mod:`._codec`)."""

    error = TelemetryError
    fields = _FIELDS
    max_bytes = MAX_TELEMETRY_BYTES

    def type_message(self, data):
        return f"a summary must be bytes; got {type(data).__name__}."

    def size_message(self, n_bytes, max_bytes):
        return f"summary of {n_bytes} bytes exceeds {max_bytes}."

    def keys_message(self, body):
        return (f"a summary is a map with exactly the keys {sorted(_FIELDS)} (v2) or "
                f"{sorted(_FIELDS_V1)} (v1).")

    def check_keys(self, body):
        if not isinstance(body, dict):
            raise TelemetryError(self.keys_message(body))
        if set(body) != set(_fields_of(body)):
            raise TelemetryError(self.keys_message(body))

    def check_types(self, body):
        for key, typ in _fields_of(body).items():
            if not accepts(body[key], typ):
                raise TelemetryError(self.field_type_message(key, typ, body[key]))


_CODEC = _TelemetryCodec()


def _array(b, key, dtype, shape):
    arr = _CODEC.unpack_array(b[key], key, dtype, shape, finite=True)
    arr.setflags(write=False)
    return arr


def decode_telemetry(data, *, max_bytes=MAX_TELEMETRY_BYTES):
    """Decode and validate a v2 or v1 telemetry summary; raises :class:`TelemetryError`."""
    b = _CODEC.check_fields(_CODEC.unpack(data, max_bytes))
    if b["v"] not in TELEMETRY_SCHEMAS or b["kind"] != KIND_TELEMETRY:
        raise TelemetryError("unknown telemetry schema version or kind.")
    check_id(b["model"], "model", TelemetryError)
    check_id(b["device"], "device", TelemetryError)
    k, d, a = b["k"], b["d"], b["n_anomalies"]
    ints_ok = (1 <= k <= MAX_CLUSTERS and 1 <= d <= MAX_FEATURES and 0 <= a <= MAX_ANOMALIES
               and 0 <= b["boot"] < 2**64 and 0 <= b["seq"] < 2**63 and b["version"] >= 0
               and b["n_points"] >= 0 and b["raw_bytes"] >= 0 and b["forwarded_bytes"] >= 0
               and 0 <= b["anomalies_dropped"] <= b["n_points"])
    if not ints_ok:
        raise TelemetryError("an integer field is out of range.")
    window = b["window"]
    if not (len(window) == 2 and all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                     and math.isfinite(t) for t in window)
            and 0 <= window[0] <= window[1]):
        raise TelemetryError("'window' must be [start, end] Unix seconds with start <= end.")
    dtype = DTYPES.get(b["dtype"])
    if dtype is None:
        raise TelemetryError(f"dtype must be one of {sorted(DTYPES)}.")
    counts = _array(b, "counts", "<f8", (k,))
    if (counts < 0).any() or counts.sum() > b["n_points"] * (1 + 1e-9) + 1e-9:
        raise TelemetryError("counts must be >= 0 and sum to at most n_points.")
    for key in ("psi", "drift_score", "assign_latency_us"):
        if not (math.isfinite(b[key]) and b[key] >= 0):
            raise TelemetryError(f"'{key}' must be finite and >= 0.")
    beyond = None
    if b["v"] >= 2:
        beyond = _array(b, "beyond_p99", "<f8", (k,))
        if (beyond < 0).any() or (beyond > counts * (1 + 1e-9) + 1e-9).any():
            raise TelemetryError("beyond_p99 must be >= 0 and at most each cluster's count.")
    labels = _array(b, "anomaly_labels", "<i4", (a,))
    if ((labels < 0) | (labels >= k)).any():
        raise TelemetryError("anomaly labels must be cluster indices.")
    return TelemetrySummary(
        model=b["model"], device=b["device"], boot=b["boot"], seq=b["seq"],
        window=(float(window[0]), float(window[1])), version=b["version"], counts=counts,
        sums=_array(b, "sums", "<f8", (k, d)), sumsq=_array(b, "sumsq", "<f8", (k, d)),
        n_points=b["n_points"], raw_bytes=b["raw_bytes"], forwarded_bytes=b["forwarded_bytes"],
        anomalies=_array(b, "anomalies", dtype, (a, d)), anomaly_labels=labels,
        anomaly_scores=_array(b, "anomaly_scores", "<f8", (a,)), psi=float(b["psi"]),
        dist_quantiles=_array(b, "dist_quantiles", "<f8", (3,)),
        drift_score=float(b["drift_score"]), assign_latency_us=float(b["assign_latency_us"]),
        anomalies_dropped=b["anomalies_dropped"], beyond_p99=beyond)
