"""Write the golden telemetry summaries (v1 and v2) and ``expected.json``.

The bodies are built here with msgpack from fixed inputs, never with
``encode_telemetry``, and ``expected.json`` states the inputs, so the decoder is
checked against an independent statement of the content.  Run from the
repository root: ``python tests/golden/telemetry/make_golden.py``.
"""

import hashlib
import json
from pathlib import Path

import msgpack
import numpy as np

HERE = Path(__file__).resolve().parent


def body(v):
    k, d = 3, 2
    counts = np.array([40.0, 50.0, 10.0])
    sums = np.arange(k * d, dtype="<f8").reshape(k, d)
    sumsq = sums ** 2 + 1.0
    b = {"v": v, "kind": "telemetry", "model": "golden", "device": "dev-1", "boot": 7,
         "seq": 3, "window": [1000.0, 1060.0], "version": 2, "k": k, "d": d, "dtype": "<f4",
         "counts": counts.astype("<f8").tobytes(), "sums": sums.tobytes(),
         "sumsq": sumsq.tobytes(), "n_points": 100, "raw_bytes": 800,
         "forwarded_bytes": 0, "n_anomalies": 1, "anomalies_dropped": 0,
         "anomalies": np.array([[9.0, -9.0]], dtype="<f4").tobytes(),
         "anomaly_labels": np.array([1], dtype="<i4").tobytes(),
         "anomaly_scores": np.array([3.5], dtype="<f8").tobytes(), "psi": 0.01,
         "dist_quantiles": np.array([0.5, 2.0, 4.0], dtype="<f8").tobytes(),
         "drift_score": 0.25, "assign_latency_us": 1.5}
    if v >= 2:
        b["beyond_p99"] = np.array([1.0, 0.0, 2.0], dtype="<f8").tobytes()
    return msgpack.packb(b, use_bin_type=True)


def main():
    expected = {}
    for v in (1, 2):
        data = body(v)
        name = f"summary_v{v}.msgpack"
        (HERE / name).write_bytes(data)
        expected[name] = {"v": v, "body_bytes": len(data),
                          "body_sha256": hashlib.sha256(data).hexdigest(),
                          "counts": [40.0, 50.0, 10.0], "n_points": 100, "drift_score": 0.25,
                          "beyond_p99": [1.0, 0.0, 2.0] if v >= 2 else None}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
