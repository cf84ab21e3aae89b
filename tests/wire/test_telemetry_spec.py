"""PROTOCOL.md §12.1 states the telemetry summary's keys in the reference encoder's order,
with their ranges; the encoder and the decoder agree with the table."""

import re
from pathlib import Path

import msgpack
import numpy as np
import pytest

from edgekm.sync.wire.telemetry import (TelemetryError, TelemetrySummary, decode_telemetry,
                                        encode_telemetry)

PROTOCOL = Path(__file__).resolve().parents[2] / "sync" / "PROTOCOL.md"


def table_keys():
    text = PROTOCOL.read_text()
    section = text[text.index("### 12.1 Upload"):text.index("### 12.2")]
    return [m.group(2) for m in re.finditer(r"^\| (\d+) \| `([a-z_0-9]+)` \|", section, re.M)]


def summary(**over):
    k, d = 3, 2
    fields = dict(model="m", device="dev", boot=1, seq=0, window=(0.0, 60.0), version=1,
                  counts=np.array([10.0, 10.0, 10.0]), sums=np.zeros((k, d)),
                  sumsq=np.zeros((k, d)), n_points=30, raw_bytes=240, forwarded_bytes=24,
                  anomalies=np.zeros((1, d)), anomaly_labels=np.zeros(1, dtype=np.int32),
                  anomaly_scores=np.zeros(1), psi=0.0, dist_quantiles=np.zeros(3),
                  drift_score=0.5, assign_latency_us=1.0, anomalies_dropped=0)
    fields.update(over)
    return TelemetrySummary(**fields)


def test_the_encoder_writes_the_keys_in_the_order_of_the_table():
    data = encode_telemetry(summary())                   # v1: no beyond_p99
    assert data[:3] == b"\xde\x00\x1a"                    # map 16, 26 entries
    keys = list(msgpack.unpackb(data, raw=False))
    assert keys == table_keys()[:26] and len(keys) == 26
    data = encode_telemetry(summary(beyond_p99=np.array([1.0, 0.0, 2.0])))     # v2
    assert data[:3] == b"\xde\x00\x1b"                    # 27 entries
    body = msgpack.unpackb(data, raw=False)
    assert list(body) == table_keys() and body["v"] == 2


def reencode(**changes):
    body = msgpack.unpackb(encode_telemetry(summary()), raw=False)
    body.update(changes)
    return msgpack.packb(body, use_bin_type=True)


@pytest.mark.parametrize("changes", [
    {"v": 2}, {"kind": "coreset"}, {"k": 0}, {"k": 4097}, {"d": 0}, {"d": 4097},
    {"boot": -1}, {"seq": 2**63}, {"version": -1}, {"n_points": -1}, {"window": [5.0, 1.0]},
    {"window": [-1.0, 1.0]}, {"dtype": ">f8"}, {"psi": -0.1}, {"drift_score": float("nan")},
    {"assign_latency_us": float("inf")}, {"anomalies_dropped": 31},
    {"counts": np.array([10.0, 10.0, 11.0]).tobytes()},
    {"counts": np.array([-1.0, 10.0, 10.0]).tobytes()},
    {"anomaly_labels": np.array([3], dtype="<i4").tobytes()}, {"n_anomalies": 65537},
    {"seq": True},
])
def test_every_range_of_the_table_is_enforced(changes):
    with pytest.raises(TelemetryError):
        decode_telemetry(reencode(**changes))


@pytest.mark.parametrize("changes", [
    {"k": 1, "counts": np.array([30.0]).tobytes(), "sums": np.zeros(2).tobytes(),
     "sumsq": np.zeros(2).tobytes(), "anomaly_labels": np.zeros(1, "<i4").tobytes()},
    {"boot": 2**64 - 1}, {"seq": 2**63 - 1}, {"anomalies_dropped": 30}, {"psi": 0},
    {"window": [0, 0]},
])
def test_the_limits_themselves_pass(changes):
    decode_telemetry(reencode(**changes))
