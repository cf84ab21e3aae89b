"""Benchmark of offline assignment and telemetry filtering (issue 4 targets).

- Batch assignment: ``edgekm.Assigner.assign`` against scikit-learn's
  ``KMeans.predict`` with the same centres, n = 100,000 points, d in {10, 34},
  k in {10, 30}, float64; best of ``--repeat`` runs each, interleaved.  Target:
  at least 1.5x.
- One point: ``Assigner.assign_one`` from Python, d = 10, k = 10.  Target: < 2 us.
- Compression: Shuttle streamed through an ``EdgeFilter`` over a version fitted on
  Shuttle itself (a stationary stream), windows of 10,000 points.  Target:
  forwarded bytes <= 1 % of the raw bytes.

Prints one JSON line and writes benchmarks/results/assign.json.

    python benchmarks/assign.py [--repeat 7] [--out PATH]
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import edgekm
from edgekm import Assigner, EdgeFilter
from edgekm.datasets import load_shuttle
from edgekm.sync.wire.telemetry import summarize

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tools.versions import make_version  # noqa: E402


def bench_batch(repeat, n=100_000):
    from sklearn.cluster import KMeans

    rows = []
    rng = np.random.default_rng(0)
    for d in (10, 34):
        for k in (10, 30):
            true_c = rng.normal(scale=5.0, size=(k, d))
            X = true_c[rng.integers(0, k, n)] + rng.normal(size=(n, d))
            km = KMeans(k, n_init=1, max_iter=20, random_state=0).fit(X[:20_000])
            v = make_version(X[:20_000], km.cluster_centers_, model="bench", created=time.time())
            a = Assigner(v)
            t_sk, t_ek = [], []
            for _ in range(repeat):
                t = time.perf_counter()
                sk_labels = km.predict(X)
                t_sk.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = a.assign(X)
                t_ek.append(time.perf_counter() - t)
            a1 = Assigner(v, n_threads=1)
            t_one = []
            for _ in range(repeat):
                t = time.perf_counter()
                a1.assign(X)
                t_one.append(time.perf_counter() - t)
            rows.append({
                "n": n, "d": d, "k": k,
                "sklearn_predict_ms": round(min(t_sk) * 1e3, 3),
                "assign_ms": round(min(t_ek) * 1e3, 3),
                "assign_1thread_ms": round(min(t_one) * 1e3, 3),
                "speedup": round(min(t_sk) / min(t_ek), 2),
                "speedup_1thread": round(min(t_sk) / min(t_one), 2),
                "labels_agree": float(np.mean(sk_labels == r.labels)),
                "met": min(t_sk) / min(t_ek) >= 1.5,
            })
    return rows


def bench_one(calls=300_000):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1000, 10))
    v = make_version(X, X[:10].copy(), model="bench", created=time.time())
    a = Assigner(v)
    pts = [np.ascontiguousarray(x) for x in X[:100]]
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for i in range(calls // 100):
            for x in pts:
                a.assign_one(x)
        best = min(best, (time.perf_counter() - t) / calls)
    return {"d": 10, "k": 10, "us_per_call": round(best * 1e6, 4), "met": best < 2e-6}


def bench_compression(window=10_000, k=10):
    X = load_shuttle()
    X = X[np.random.default_rng(0).permutation(len(X))]
    est = edgekm.StreamingKMeans(k, random_state=0).fit(X)
    v = make_version(X, est.cluster_centers_, model="bench", created=time.time())
    clock = [0.0]
    f = EdgeFilter(v, clock=lambda: clock[0], window_seconds=1e9, summarize=summarize)
    windows = []
    for a in range(0, len(X) - window + 1, window):
        f.observe(X[a:a + window])
        s = f.flush()
        windows.append({"n_points": s.n_points, "raw_bytes": s.raw_bytes,
                        "forwarded_bytes": s.forwarded_bytes,
                        "ratio": round(s.compression_ratio, 5),
                        "anomalies": len(s.anomalies),
                        "anomalies_dropped": f.last_stats["anomalies_dropped"],
                        "psi": round(s.psi, 5), "drift_score": round(s.drift_score, 4)})
    raw = sum(w["raw_bytes"] for w in windows)
    fwd = sum(w["forwarded_bytes"] for w in windows)
    return {"data": "shuttle", "k": k, "window": window, "max_anomalies": f.max_anomalies,
            "anomaly_threshold": f.anomaly_threshold, "raw_bytes": raw,
            "forwarded_bytes": fwd, "ratio": round(fwd / raw, 5), "met": fwd / raw <= 0.01,
            "windows": windows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", default=os.path.join(HERE, "results", "assign.json"))
    args = p.parse_args(argv)
    import sklearn

    from edgekm import _backend

    kernel = getattr(_backend.assign, "KERNEL", "reference")
    result = {
        "benchmark": "assign", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in os.getloadavg()],
                    "python": sys.version.split()[0], "numpy": np.__version__,
                    "sklearn": sklearn.__version__, "backend": _backend.NAME,
                    "assign_kernel": kernel},
        "batch": bench_batch(args.repeat),
        "assign_one": bench_one(),
        "compression": bench_compression(),
    }
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
